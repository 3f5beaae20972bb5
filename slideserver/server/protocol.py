"""uvicorn's httptools protocol, with each response's head and body sent in one system call.

uvicorn writes the status line and headers to the socket as soon as the app sends
``http.response.start``, then the body when it sends ``http.response.body``: two ``send``
system calls for every tile. Profiling a server answering cached tiles showed those two calls
were a third of its CPU time. :class:`CoalescingWriter` holds a write back until the next one
(the body, a moment later in the same task) or the end of the event loop's current iteration,
whichever comes first, and hands both to the transport together (one ``writev``). Nothing is
delayed past the current loop iteration, so interim answers such as ``100 Continue`` still
leave before the server waits for the request body.

``slideserver serve`` passes :class:`CoalescingHttpToolsProtocol` to uvicorn as its ``http``
protocol class (a documented uvicorn option); under any other ASGI server the app is unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingWriter:
    """A transport stand-in that merges writes made within one event loop iteration."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: bytes | None = None

    def write(self, data: bytes) -> None:
        pending = self._pending
        if pending is None:
            self._pending = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._pending = None
            self._transport.writelines((pending, data))

    def writelines(self, chunks: Any) -> None:
        self.flush()
        self._transport.writelines(chunks)

    def flush(self) -> None:
        """Send what is held back, if anything."""
        pending = self._pending
        if pending is not None:
            self._pending = None
            if not self._transport.is_closing():
                self._transport.write(pending)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def get_write_buffer_size(self) -> int:
        held = len(self._pending) if self._pending is not None else 0
        return held + self._transport.get_write_buffer_size()

    def __getattr__(self, name: str) -> Any:
        # Everything else (is_closing, get_extra_info, pause_reading, abort, ...) is the
        # transport's own; abort() drops a held write, as it drops the transport's buffer.
        return getattr(self._transport, name)


MAX_HEAD_BYTES = 64 * 1024
"""Request line and headers together: more is refused (400) before the app sees it. httptools
sets no limit of its own, so one request could hold any amount of memory in headers."""


class RequestHeadTooLarge(Exception):
    """Raised in a parser callback: httptools turns it into a parser error, answered 400."""


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools HTTP/1.1 protocol writing through a :class:`CoalescingWriter`.

    It also bounds each request's head (:data:`MAX_HEAD_BYTES`), counted per chunk received
    while a head is open rather than per header (headers are the hot path), and refuses HTTP/0.9
    requests (no version, no headers: nothing any client of ours sends).
    """

    _head_open = False
    _head_bytes = 0
    _head_bound = 0

    def on_message_begin(self) -> None:
        self._head_open = True
        self._head_bytes = 0
        super().on_message_begin()

    def data_received(self, data: bytes) -> None:
        # What a head completed in this chunk can at most measure: under the limit (always, for
        # a viewer's requests), on_headers_complete need not add up the headers.
        self._head_bound = self._head_bytes + len(data)
        super().data_received(data)
        if self._head_open:  # the chunk ended inside a head: count it
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                self._head_open = False
                self.send_400_response("Request head too large.")

    def on_headers_complete(self) -> None:
        self._head_open = False
        if self._head_bound > MAX_HEAD_BYTES and self._head_size() > MAX_HEAD_BYTES:
            raise RequestHeadTooLarge
        if self.parser.get_http_version() not in ("1.0", "1.1"):
            raise RequestHeadTooLarge  # an HTTP/0.9 request line: refused like a bad head
        super().on_headers_complete()

    def _head_size(self) -> int:
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        writer: Any = CoalescingWriter(transport, self.loop)  # type: ignore[arg-type]
        super().connection_made(writer)
