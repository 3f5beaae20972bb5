"""Image answers with HTTP caching: strong ETag, Cache-Control, 304 on If-None-Match.

:func:`send_image` is the one implementation; routed endpoints return an :class:`ImageResponse`
that sends through it, and the tile lane calls it directly.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from slideserver.api.middleware import header_value
from slideserver.api.state import state_of
from slideserver.metrics import Metrics
from slideserver.services.tiles import ImageResult

IMMUTABLE = "public, max-age=31536000, immutable"
"""Tiles are addressed by content fingerprint, so a URL's bytes change only with the file."""
SHORT = "public, max-age=300"


def cache_control_for(scope: Scope, cache_control: str) -> str:
    """Turn ``public`` into ``private`` once the answer depends on who asked (auth is on)."""
    if scope.get("state", {}).get("private_cache", False):
        return cache_control.replace("public", "private")
    return cache_control


def matches_etag(if_none_match: str, etag: str) -> bool:
    """Tell whether an ``If-None-Match`` value names ``etag`` (weak comparison, RFC 9110)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    return etag in (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))


async def send_image(
    scope: Scope,
    send: Send,
    metrics: Metrics,
    result: ImageResult,
    cache_control: str,
    if_none_match: bytes,
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> int:
    """Send ``result`` as ASGI messages, or a 304 when the client holds it; return the status.

    ``if_none_match`` is the request's header value (empty when absent); ``extra`` headers go
    after the image's own (the tile lane's request ID, a route's CORS headers).
    """
    metrics.observe_tile(result.source)
    etag = result.etag
    headers = [
        (b"etag", etag.encode()),
        (b"cache-control", cache_control_for(scope, cache_control).encode()),
        (b"x-tile-source", result.source.encode()),
    ]
    if if_none_match and matches_etag(if_none_match.decode("latin-1"), etag):
        headers.extend(extra)
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return 304
    body = result.data
    headers.append((b"content-type", result.media_type.encode()))
    headers.append((b"content-length", str(len(body)).encode()))
    headers.extend(extra)
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return 200


class ImageResponse(Response):
    """A routed endpoint's image answer, sent by :func:`send_image` as the tile lane's are.

    Headers a route adds (``response.headers[...]``) are sent after the image's own.
    """

    def __init__(self, result: ImageResult, cache_control: str, metrics: Metrics) -> None:
        super().__init__(status_code=200, media_type=result.media_type)
        self.raw_headers = []  # send_image writes the image's headers; these are the route's
        self.result = result
        self.cache_control = cache_control
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if_none_match = header_value(scope, b"if-none-match") or b""
        self.status_code = await send_image(
            scope,
            send,
            self.metrics,
            self.result,
            self.cache_control,
            if_none_match,
            self.raw_headers,
        )


def image_response(
    request: Request, result: ImageResult, cache_control: str = SHORT
) -> ImageResponse:
    """Answer ``result`` from a routed endpoint, or 304 when the client already holds it."""
    return ImageResponse(result, cache_control, state_of(request).metrics)
