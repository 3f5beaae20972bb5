"""Image responses with HTTP caching: strong ETag, Cache-Control, 304 on If-None-Match."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from slideserver.services import ImageResult

IMMUTABLE = "public, max-age=31536000, immutable"
"""Tiles are addressed by content fingerprint, so a URL's bytes change only with the file."""
SHORT = "public, max-age=300"


def image_response(request: Request, result: ImageResult, cache_control: str = SHORT) -> Response:
    """Answer ``result``, or 304 when the client already holds it."""
    if getattr(request.state, "private_cache", False):
        cache_control = cache_control.replace("public", "private")
    headers = {
        "ETag": result.etag,
        "Cache-Control": cache_control,
        "X-Tile-Source": result.source,
    }
    if_none_match = request.headers.get("if-none-match", "")
    if if_none_match and (
        if_none_match.strip() == "*"
        or result.etag in (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))
    ):
        return Response(status_code=304, headers=headers)
    return Response(result.data, media_type=result.media_type, headers=headers)
