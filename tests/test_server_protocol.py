"""The coalescing protocol, driven in-process over uvicorn's real httptools protocol.

These tests count the system-call-level writes the protocol hands to its transport: one per
answer. They guard the pin on uvicorn's version (pyproject.toml): the protocol subclasses
uvicorn internals, and a uvicorn that writes differently makes them fail here first.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.config import Config
from uvicorn.server import ServerState

from slideserver.server.protocol import (
    MAX_HEAD_BYTES,
    CoalescingHttpToolsProtocol,
    CoalescingWriter,
)


class RecordingTransport(asyncio.Transport):
    """A transport that records each write call, as the kernel would see its system calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.calls.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.calls.append(b"".join(bytes(chunk) for chunk in list_of_data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def tile_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app answering like a tile route: head, then body, as two messages."""
    body = b"x" * 5000
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"image/jpeg"), (b"content-length", b"5000")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def serve_requests(raw: bytes, chunk: int = 0) -> RecordingTransport:
    """Feed ``raw`` (in ``chunk``-byte pieces, when given) to a real uvicorn protocol instance
    and return what it wrote."""
    config = Config(
        app=tile_app, http=CoalescingHttpToolsProtocol, lifespan="off", log_level="error"
    )
    config.load()
    protocol = CoalescingHttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    for start in range(0, len(raw), chunk or len(raw)):
        protocol.data_received(raw[start : start + (chunk or len(raw))])
    for _ in range(50):  # let the request tasks run to completion
        await asyncio.sleep(0)
    protocol.connection_lost(None)
    return transport


REQUEST = b"GET /dz/x_files/1/0_0.jpeg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def test_uvicorn_is_the_pinned_release_line() -> None:
    assert uvicorn.__version__.startswith("0.54.")


def test_one_answer_is_one_write() -> None:
    transport = asyncio.run(serve_requests(REQUEST))
    assert len(transport.calls) == 1
    assert transport.calls[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.calls[0].endswith(b"x" * 5000)


def test_pipelined_answers_are_one_write_each_in_order() -> None:
    transport = asyncio.run(serve_requests(REQUEST * 3))
    assert len(transport.calls) == 3
    assert all(call.startswith(b"HTTP/1.1 200 OK\r\n") for call in transport.calls)


def test_a_lone_write_is_flushed_within_the_loop_iteration() -> None:
    async def run() -> list[bytes]:
        transport = RecordingTransport()
        writer = CoalescingWriter(transport, asyncio.get_running_loop())
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        assert transport.calls == []  # held back for a body that may follow at once
        await asyncio.sleep(0)
        return transport.calls

    assert asyncio.run(run()) == [b"HTTP/1.1 100 Continue\r\n\r\n"]


def test_a_request_head_over_the_limit_is_refused_with_400() -> None:
    huge = b"X-Padding: " + b"a" * (MAX_HEAD_BYTES + 1) + b"\r\n"
    raw = b"GET /dz/x_files/1/0_0.jpeg HTTP/1.1\r\nHost: 127.0.0.1\r\n" + huge + b"\r\n"
    transport = asyncio.run(serve_requests(raw))
    assert len(transport.calls) == 1
    assert transport.calls[0].startswith(b"HTTP/1.1 400 ")
    assert transport.closed


def test_a_request_head_over_the_limit_in_pieces_is_refused_with_400() -> None:
    huge = b"X-Padding: " + b"a" * (MAX_HEAD_BYTES + 1) + b"\r\n"
    raw = b"GET /dz/x_files/1/0_0.jpeg HTTP/1.1\r\nHost: 127.0.0.1\r\n" + huge + b"\r\n"
    transport = asyncio.run(serve_requests(raw, chunk=4096))
    assert len(transport.calls) == 1
    assert transport.calls[0].startswith(b"HTTP/1.1 400 ")
    assert transport.closed


def test_a_head_just_under_the_limit_is_served() -> None:
    padding = b"X-Padding: " + b"a" * (MAX_HEAD_BYTES - 200) + b"\r\n"
    raw = b"GET /dz/x_files/1/0_0.jpeg HTTP/1.1\r\nHost: 127.0.0.1\r\n" + padding + b"\r\n"
    transport = asyncio.run(serve_requests(raw))
    assert transport.calls[0].startswith(b"HTTP/1.1 200 OK\r\n")


def test_an_http_0_9_request_is_refused() -> None:
    transport = asyncio.run(serve_requests(b"GET /healthz\r\n\r\n"))
    assert all(not call.startswith(b"HTTP/1.1 200") for call in transport.calls)
    assert transport.closed
