"""A real LIS receiving ORU messages: python-hl7's asyncio MLLP server, in a thread we own.

It keeps every message it received and answers each with an ACK whose code the test chooses
(``AA``, ``AE``, ``AR``, or ``None``: no answer at all, as a hung LIS). :meth:`stop` is an outage
(the port refuses connections), :meth:`start` brings it back on the same port.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import hl7
import pytest
from hl7.mllp import HL7StreamReader, HL7StreamWriter, start_hl7_server

from tests.live_server import free_port


class LisServer:
    """python-hl7's MLLP server on 127.0.0.1 in its own event loop thread."""

    def __init__(self) -> None:
        self.port = free_port()
        self.ack_code: str | None = "AA"
        self.received: list[hl7.Message] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[HL7StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"mllp://127.0.0.1:{self.port}"

    async def _client(self, reader: HL7StreamReader, writer: HL7StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while not reader.at_eof():
                message = await reader.readmessage()
                self.received.append(message)
                if self.ack_code is None:
                    continue
                writer.writemessage(message.create_ack(self.ack_code))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def start(self) -> None:
        """Listen (again) on the port; returns once the server accepts connections."""
        started = threading.Event()
        loop = asyncio.new_event_loop()

        async def serve() -> None:
            self._server = await start_hl7_server(
                self._client, "127.0.0.1", self.port, encoding="utf-8"
            )
            started.set()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(serve())
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert started.wait(10), "the MLLP server did not start"

    def stop(self) -> None:
        """Close the listener and every open connection; stop the thread."""
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        async def close() -> None:
            server.close()
            for writer in list(self._writers):
                writer.close()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = self._server = self._thread = None

    def orus(self) -> list[hl7.Message]:
        """The ORU^R01 messages received, in order."""
        return [m for m in self.received if str(m.segment("MSH")[9]).startswith("ORU^R01")]


@pytest.fixture
def lis_server() -> Iterator[LisServer]:
    """A running LIS on a free loopback port, always stopped afterwards."""
    server = LisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
