"""Image responses with HTTP caching: strong ETag, Cache-Control, 304 on If-None-Match."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope, Send

from slideserver.api.state import state_of
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


def image_response(request: Request, result: ImageResult, cache_control: str = SHORT) -> Response:
    """Answer ``result``, or 304 when the client already holds it."""
    state_of(request).metrics.observe_tile(result.source)
    headers = {
        "ETag": result.etag,
        "Cache-Control": cache_control_for(request.scope, cache_control),
        "X-Tile-Source": result.source,
    }
    if matches_etag(request.headers.get("if-none-match", ""), result.etag):
        return Response(status_code=304, headers=headers)
    return Response(result.data, media_type=result.media_type, headers=headers)


async def send_image(
    scope: Scope,
    send: Send,
    result: ImageResult,
    cache_control: str = SHORT,
    extra: tuple[tuple[bytes, bytes], ...] = (),
    if_none_match: bytes = b"",
) -> int:
    """Send what :func:`image_response` would, straight as ASGI messages; return the status.

    For the tile lane, which read ``If-None-Match`` already; ``extra`` headers are added (the
    request ID).
    """
    etag = result.etag
    headers = [
        (b"etag", etag.encode()),
        (b"cache-control", cache_control_for(scope, cache_control).encode()),
        (b"x-tile-source", result.source.encode()),
        *extra,
    ]
    if if_none_match and matches_etag(if_none_match.decode("latin-1"), etag):
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return 304
    body = result.data
    headers.append((b"content-type", result.media_type.encode()))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return 200
