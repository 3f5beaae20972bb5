"""Pure-ASGI middleware and the request steps the tile lane shares with it.

Request IDs, timing, metrics and the access log (:func:`begin_request`, :func:`end_request`),
the answer to an escaped exception (:func:`send_exception_answer`) and the NUL-byte door
(:func:`has_nul_byte`): each written once, called by the middleware stack and the tile lane.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from slideserver.errors import SlideServerError
from slideserver.metrics import Metrics

access_log = logging.getLogger("slideserver.access")


def route_template(scope: Scope) -> str:
    """Return the matched route's path template, never the concrete path (IDs stay out)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


REQUEST_ID = b"x-request-id"
"""The header naming a request in logs, on both sides: read when well formed, always answered."""


class RequestContextMiddleware:
    """Give every request an ID, time it, count it, and log it without PHI.

    Query strings are never logged: they carry search terms such as patient identifiers. An
    exception that escapes the app is answered here, with the request ID, by the same function
    the tile lane uses (:func:`send_exception_answer`).
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = begin_request(scope, header_value(scope, REQUEST_ID))
        id_header = (REQUEST_ID, request_id.encode())
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
        except Exception as exc:
            status = await send_exception_answer(scope, receive, send, exc, id_header)
        finally:
            end_request(self.metrics, scope, status)


def header_value(scope: Scope, name: bytes) -> bytes | None:
    """Return the first value of the (lower-case) header ``name``, or ``None``."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def begin_request(scope: Scope, incoming_id: bytes | None) -> str:
    """Start a request's clock and give it its ID (the caller's, when well formed).

    Both go in the scope's state, where :func:`end_request` and the audit read them; the ID is
    returned for the ``X-Request-ID`` answer header.
    """
    request_id = _valid_request_id(incoming_id) if incoming_id else None
    request_id = request_id or _new_request_id()
    state = scope.setdefault("state", {})
    state["request_id"] = request_id
    state["request_start"] = time.perf_counter()
    return request_id


def end_request(metrics: Metrics, scope: Scope, status: int) -> None:
    """Count and log a finished request by its route template: never its path or query."""
    state = scope["state"]
    elapsed = time.perf_counter() - state["request_start"]
    template = route_template(scope)
    metrics.observe_request(scope["method"], template, status, elapsed)
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(
            "%s %s %s %.1fms id=%s",
            scope["method"],
            template,
            status,
            elapsed * 1000,
            state["request_id"],
        )


async def send_exception_answer(
    scope: Scope, receive: Receive, send: Send, exc: Exception, id_header: tuple[bytes, bytes]
) -> int:
    """Answer an exception that escaped a request's handler; return the answer's status.

    Our errors get their JSON answer, anything else the generic 500 (logged without PHI), both
    with the request ID. The answer may have started before the fault: the server then refuses
    this one and drops the connection.
    """
    # Imported here: slideserver.api.errors imports this module (for route_template).
    from slideserver.api.errors import slideserver_error_response, unexpected_error_response

    if isinstance(exc, SlideServerError):
        response = slideserver_error_response(scope, exc)
    else:
        response = unexpected_error_response(scope, exc)
    response.raw_headers.append(id_header)
    with contextlib.suppress(RuntimeError):
        await response(scope, receive, send)
    return response.status_code


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


def has_nul_byte(scope: Scope) -> bool:
    """Tell whether the path or query string holds a NUL byte (raw or ``%00``)."""
    query: bytes = scope.get("query_string", b"")
    return "\x00" in scope.get("path", "") or (
        bool(query) and (b"%00" in query or b"\x00" in query)
    )


class RejectNulBytesMiddleware:
    """Refuse NUL bytes in the path or query string with a JSON 400.

    No legitimate slide ID, accession or search term contains one, and databases disagree about
    them (PostgreSQL rejects NUL in text, SQLite stores it), so they are stopped at the door.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and has_nul_byte(scope):
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
