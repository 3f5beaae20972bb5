"""Deep Zoom: ``/dz/{id}.dzi`` and ``/dz/{id}_files/{level}/{col}_{row}.{format}``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from slideserver.api.params import parse_index
from slideserver.api.responses import IMMUTABLE, image_response
from slideserver.api.state import service_of
from slideserver.api.urls import DEEPZOOM_TILE


async def dzi(request: Request) -> Response:
    service = service_of(request)
    xml = await service.dzi(request.path_params["slide_id"])
    return Response(xml, media_type="application/xml", headers={"Cache-Control": "no-cache"})


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
