"""An asyncio MLLP listener: HL7 v2 messages framed ``0x0B ... 0x1C 0x0D``, one ACK per message.

Messages on one connection are handled in order, each answered before the next is read (original
acknowledgement mode). A message larger than ``max_message_bytes`` is answered ``AR`` and the
connection closed, since the framing cannot be trusted after it. Idle connections are closed after
``idle_timeout`` seconds. :meth:`MllpServer.stop` stops accepting, lets messages being handled
finish (up to a timeout) and closes every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from slideserver.lis.hl7v2.ack import ERROR, REJECT, build_ack
from slideserver.lis.hl7v2.parse import read_header

log = logging.getLogger("slideserver.lis.mllp")

START = b"\x0b"
END = b"\x1c\x0d"
MAX_MESSAGE_BYTES = 1 << 20

Handler = Callable[[str], Awaitable[str]]
"""Takes one ER7 message, returns its ACK (the app's is ``LinkService.hl7v2_ack``)."""


def frame(message: str) -> bytes:
    """Wrap one message (segments separated by ``\\r``) in MLLP framing, UTF-8 encoded."""
    return START + message.encode("utf-8") + END


def decode(payload: bytes) -> str:
    """Decode a message: UTF-8 (HL7 2.8's default and ASCII-compatible), else Latin-1."""
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return payload.decode("latin-1")


class MllpServer:
    """An MLLP listener answering every framed message with ``handler``'s ACK."""

    def __init__(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        idle_timeout: float = 300.0,
    ) -> None:
        self.handler = handler
        self.host = host
        self.requested_port = port
        self.max_message_bytes = max_message_bytes
        self.idle_timeout = idle_timeout
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], bool] = {}
        """Connection task -> whether it is handling a message right now."""
        self._closing = False

    @property
    def port(self) -> int:
        """The bound port (the OS's choice when 0 was asked for)."""
        if self._server is None or not self._server.sockets:
            return self.requested_port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and start accepting connections."""
        self._server = await asyncio.start_server(
            self._connection,
            self.host,
            self.requested_port,
            limit=self.max_message_bytes + len(END) + 1,
        )
        log.info("MLLP listening on port %d", self.port)

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting; let messages in progress finish (up to ``timeout``); close the rest."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for task, busy in list(self._connections.items()):
            if not busy:
                task.cancel()
        pending = set(self._connections)
        if pending:
            _done, late = await asyncio.wait(pending, timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)
        log.info("MLLP listener stopped")

    async def __aenter__(self) -> MllpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._closing:
            writer.close()
            return
        self._connections[task] = False
        try:
            await self._serve(task, reader, writer)
        except asyncio.CancelledError:
            pass
        except (ConnectionError, OSError) as exc:
            log.info("MLLP connection dropped: %s", type(exc).__name__)
        finally:
            self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), timeout=1.0)

    async def _serve(
        self, task: asyncio.Task[None], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while not self._closing:
            try:
                data = await asyncio.wait_for(reader.readuntil(END), self.idle_timeout)
            except asyncio.IncompleteReadError:
                return  # the peer closed (a partial frame without its end is dropped)
            except TimeoutError:
                return
            except asyncio.LimitOverrunError:
                reason = f"message larger than {self.max_message_bytes} bytes"
                writer.write(frame(build_ack(None, REJECT, reason, error_code=207)))
                await writer.drain()
                log.warning("MLLP message rejected: larger than %d bytes", self.max_message_bytes)
                return
            payload = data[: -len(END)]
            start = payload.find(START)
            if start >= 0:
                payload = payload[start + 1 :]
            if len(payload) > self.max_message_bytes:
                writer.write(frame(build_ack(None, REJECT, "message too large", error_code=207)))
                await writer.drain()
                return
            self._connections[task] = True
            try:
                ack = await self.handler(decode(payload))
            except Exception as exc:  # a handler bug must not leave the sender without an ACK
                log.error("MLLP handler failed: %s", type(exc).__name__)
                ack = build_ack(
                    read_header(decode(payload)), ERROR, "internal error", error_code=207
                )
            finally:
                self._connections[task] = False
            writer.write(frame(ack))
            await writer.drain()


__all__ = ["END", "MAX_MESSAGE_BYTES", "START", "Handler", "MllpServer", "decode", "frame"]
