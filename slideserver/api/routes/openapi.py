"""``GET /openapi.json`` (the API's OpenAPI 3.1 description) and ``GET /api/docs`` (its page).

The document is built from the app's own routes on first request and kept: routes do not
change while the app runs. The page is Swagger UI, bundled by the viewer's build
(``viewer/api-docs.html``) so it works offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from slideserver.api.openapi import Reply, build_document, json_reply, operation
from slideserver.api.state import state_of

DOCUMENT_KEY = "openapi_document"
DOCS_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; object-src 'none'; "
        "base-uri 'self'; frame-ancestors 'self'"
    ),
}
OPENAPI_SCHEMA = {
    "type": "object",
    "required": ["openapi", "info", "paths"],
    "properties": {"openapi": {"type": "string"}},
}
NOT_BUILT = {"error": "viewer_not_built", "detail": "run make viewer"}


def document_of(request: Request) -> dict[str, Any]:
    """The app's document, built once."""
    app_state = request.app.state
    document: dict[str, Any] | None = getattr(app_state, DOCUMENT_KEY, None)
    if document is None:
        public_url = state_of(request).settings.public_url.rstrip("/")
        document = build_document(request.app.router.routes, public_url)
        setattr(app_state, DOCUMENT_KEY, document)
    return document


@operation(
    "The OpenAPI 3.1 description of this API",
    tag="api",
    replies={200: json_reply("The document", OPENAPI_SCHEMA)},
)
async def openapi_json(request: Request) -> Response:
    """Every operation the server answers, generated from its routes and policy table."""
    return JSONResponse(document_of(request), headers={"Cache-Control": "no-cache"})


def docs_route(static_dir: Path) -> Route:
    """``/api/docs``: the built reference page, or 503 while the viewer is not built."""
    page = static_dir / "api-docs.html"

    @operation(
        "The API reference page (Swagger UI)",
        tag="api",
        replies={
            200: Reply("An HTML page", {"text/html": {"type": "string"}}),
            503: json_reply("The viewer is not built", {"$ref": "#/components/schemas/Error"}),
        },
    )
    async def api_docs(request: Request) -> Response:
        """The API reference, rendered from ``/openapi.json`` in the browser."""
        if not page.is_file():
            return JSONResponse(NOT_BUILT, status_code=503)
        return FileResponse(page, media_type="text/html; charset=utf-8", headers=DOCS_HEADERS)

    return Route("/api/docs", api_docs, methods=["GET"])


def routes(static_dir: Path) -> list[Route]:
    """Return the API description routes."""
    return [Route("/openapi.json", openapi_json, methods=["GET"]), docs_route(static_dir)]
