"""Deep Zoom: ``/dz/{id}.dzi`` and ``/dz/{id}_files/{level}/{col}_{row}.{format}``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from slideserver.api.openapi import NOT_MODIFIED, Param, Reply, image_reply, operation
from slideserver.api.params import parse_index
from slideserver.api.responses import IMMUTABLE, image_response
from slideserver.api.state import service_of
from slideserver.api.urls import DEEPZOOM_TILE

INDEX = {"type": "integer", "minimum": 0}
SLIDE_ERRORS = (404, 410, 422, 503, 504)


@operation(
    "The Deep Zoom descriptor (DZI) of a slide",
    tag="deep zoom",
    replies={200: Reply("The DZI XML", {"application/xml": {"type": "string"}})},
    errors=SLIDE_ERRORS,
)
async def dzi(request: Request) -> Response:
    """Size, tile size, overlap and format of the slide's Deep Zoom pyramid."""
    service = service_of(request)
    xml = await service.dzi(request.path_params["slide_id"])
    return Response(xml, media_type="application/xml", headers={"Cache-Control": "no-cache"})


@operation(
    "One Deep Zoom tile",
    tag="deep zoom",
    params=(
        Param("level", "Deep Zoom level (0: one pixel)", INDEX, "path"),
        Param("col", "Column", INDEX, "path"),
        Param("row", "Row", INDEX, "path"),
        Param("fmt", "Image format", {"enum": ["jpeg", "jpg", "png", "webp"]}, "path"),
    ),
    replies={
        200: image_reply("The tile", "image/jpeg", "image/png", "image/webp"),
        304: NOT_MODIFIED,
    },
    errors=(400, *SLIDE_ERRORS),
    description="Answered before routing by the tile lane (same policy, same answers); "
    "stored JPEG tiles are sent as they are (`X-Tile-Source: passthrough`).",
)
async def tile(request: Request) -> Response:
    """Answer a tile URL the tile lane left to the router (or every one, without the lane)."""
    service = service_of(request)
    params = request.path_params
    result = await service.deepzoom_tile(
        params["slide_id"],
        parse_index("level", params["level"]),
        parse_index("column", params["col"]),
        parse_index("row", params["row"]),
        params["fmt"],
    )
    return image_response(request, result, IMMUTABLE)


def routes() -> list[Route]:
    """Return the Deep Zoom routes."""
    return [
        Route("/dz/{slide_id}.dzi", dzi, methods=["GET", "HEAD"]),
        Route(DEEPZOOM_TILE, tile, methods=["GET", "HEAD"]),
    ]
