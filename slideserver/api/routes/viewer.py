"""The viewer's pages (slide browser, case view, slide viewer) and its built static assets."""

from __future__ import annotations

import os
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from slideserver.api.openapi import Reply, json_reply, operation

NOT_BUILT = {"error": "viewer_not_built", "detail": "run make viewer"}

PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # Everything is served from this origin: no CDN, no inline script. Tiles and images are
    # fetched with credentials and shown from blob: URLs.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' blob: data:; connect-src 'self'; object-src 'none'; "
        "base-uri 'self'; frame-ancestors 'self'"
    ),
}

IMMUTABLE = "public, max-age=31536000, immutable"

NOT_BUILT_REPLY = json_reply("The viewer is not built", {"$ref": "#/components/schemas/Error"})
PAGE = operation(
    "A viewer page (slide browser, slide viewer, case view)",
    tag="viewer",
    replies={
        200: Reply("The viewer's HTML", {"text/html": {"type": "string"}}),
        503: NOT_BUILT_REPLY,
    },
    description="The page's API calls need a session cookie or a bearer token.",
)
ASSETS = operation(
    "The viewer's built assets (scripts, styles)",
    tag="viewer",
    replies={
        200: Reply("The file", {"*/*": {"type": "string", "format": "binary"}}),
        503: NOT_BUILT_REPLY,
    },
    errors=(404,),
)


class _Assets(StaticFiles):
    """Static files; Vite's content-hashed assets are cached for good, the rest revalidated."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        hashed = "/assets/" in str(scope.get("path", ""))
        response.headers["Cache-Control"] = IMMUTABLE if hashed else "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


class _AssetsOr503:
    """Serve the built assets, or answer 503 JSON while the viewer is not built."""

    def __init__(self, static_dir: Path) -> None:
        self.static_dir = static_dir
        self.files = _Assets(directory=static_dir, check_dir=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.static_dir.is_dir():
            await JSONResponse(NOT_BUILT, status_code=503)(scope, receive, send)
            return
        await self.files(scope, receive, send)


def viewer_routes(static_dir: Path) -> list[BaseRoute]:
    """Return the routes serving index.html for the viewer's pages and its assets."""
    index = static_dir / "index.html"

    @PAGE
    async def page(request: Request) -> Response:
        if not index.is_file():
            return JSONResponse(NOT_BUILT, status_code=503)
        return FileResponse(index, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    return [
        Route("/", page, methods=["GET", "HEAD"], name="viewer_browser"),
        Route("/view/{ids:path}", page, methods=["GET", "HEAD"], name="viewer_slide"),
        Route("/case/{accession:path}", page, methods=["GET", "HEAD"], name="viewer_case"),
        Mount("/static/viewer", app=ASSETS(_AssetsOr503(static_dir)), name="viewer_static"),
    ]
