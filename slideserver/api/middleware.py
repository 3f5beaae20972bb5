"""Pure-ASGI middleware: request IDs, access log without query strings, metrics."""

from __future__ import annotations

import itertools
import logging
import os
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from slideserver.metrics import Metrics

access_log = logging.getLogger("slideserver.access")


def route_template(scope: Scope) -> str:
    """Return the matched route's path template, never the concrete path (IDs stay out)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


class RequestContextMiddleware:
    """Give every request an ID, time it, count it, and log it without PHI.

    Query strings are never logged: they carry search terms such as patient identifiers.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = begin_request(scope)
        id_header = (b"x-request-id", request_id.encode())
        start = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append(id_header)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            end_request(self.metrics, scope, status, start, request_id)


def begin_request(scope: Scope) -> str:
    """Give the request its ID (the caller's ``X-Request-ID`` when well formed) in its state."""
    raw = None
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            raw = value
            break
    return set_request_id(scope, raw)


def set_request_id(scope: Scope, incoming: bytes | None) -> str:
    """Like :func:`begin_request`, given the ``X-Request-ID`` header's value (or ``None``)."""
    request_id = _valid_request_id(incoming) if incoming else None
    request_id = request_id or _new_request_id()
    scope.setdefault("state", {})["request_id"] = request_id
    return request_id


def end_request(metrics: Metrics, scope: Scope, status: int, start: float, request_id: str) -> None:
    """Count and log a finished request by its route template: never its path or query."""
    elapsed = time.perf_counter() - start
    template = route_template(scope)
    metrics.observe_request(scope["method"], template, status, elapsed)
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(
            "%s %s %s %.1fms id=%s",
            scope["method"],
            template,
            status,
            elapsed * 1000,
            request_id,
        )


_ID_PREFIX = os.urandom(4).hex()
_ID_COUNTER = itertools.count()


def _new_request_id() -> str:
    """Return a process-unique request ID: a random prefix and a counter.

    ``uuid4`` reads the kernel's random source on every request, which profiling showed costs
    as much as sending a stored tile; uniqueness is all a request ID needs.
    """
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFF:08x}"


def _valid_request_id(raw: bytes) -> str | None:
    text = raw.decode("latin-1")
    if 0 < len(text) <= 64 and text.replace("-", "").isalnum():
        return text
    return None


class RejectNulBytesMiddleware:
    """Refuse NUL bytes in the path or query string with a JSON 400.

    No legitimate slide ID, accession or search term contains one, and databases disagree about
    them (PostgreSQL rejects NUL in text, SQLite stores it), so they are stopped at the door.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope.get("path", "")
            or b"%00" in scope.get("query_string", b"")
            or b"\x00" in scope.get("query_string", b"")
        ):
            body = b'{"error":"bad_request","detail":"the request contains a NUL byte"}'
            await send(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"cache-control", b"no-store"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
