"""IIIF Image API 3.0: ``/iiif/3/{id}/info.json`` and image requests."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from slideserver.api.responses import IMMUTABLE, image_response
from slideserver.api.state import service_of, state_of
from slideserver.imaging.iiif_transform import iiif_scale_factors, render_iiif
from slideserver.settings import Settings
from slideserver.tiling.iiif import IIIFLimits, info_json, parse_image_request, plan_image

INFO_MEDIA_TYPE = 'application/ld+json;profile="http://iiif.io/api/image/3/context.json"'
CORS = {"Access-Control-Allow-Origin": "*"}


def limits_of(settings: Settings) -> IIIFLimits:
    return IIIFLimits(
        max_width=settings.iiif_max_width,
        max_height=settings.iiif_max_height,
        max_area=settings.iiif_max_area,
    )


def base_uri(request: Request, slide_id: str) -> str:
    settings = state_of(request).settings
    root = settings.public_url.rstrip("/") or str(request.base_url).rstrip("/")
    return f"{root}/iiif/3/{slide_id}"


async def info(request: Request) -> Response:
    slide_id = request.path_params["slide_id"]
    service = service_of(request)
    _, _, grid, slide_info = await service.grid(slide_id)
    body = info_json(
        image_id=base_uri(request, slide_id),
        width=slide_info.width,
        height=slide_info.height,
        tile_width=grid.tile_size,
        tile_height=grid.tile_size,
        scale_factors=iiif_scale_factors(slide_info, grid.tile_size),
        limits=limits_of(service.settings),
        extra={"extraFeatures": ["baseUriRedirect", "cors", "jsonldMediaType"]},
    )
    headers = {**CORS, "Cache-Control": "no-cache"}
    accept = request.headers.get("accept", "")
    media_type = INFO_MEDIA_TYPE if "ld+json" in accept else "application/json"
    return JSONResponse(body, media_type=media_type, headers=headers)


async def base(request: Request) -> Response:
    slide_id = request.path_params["slide_id"]
    return RedirectResponse(f"{base_uri(request, slide_id)}/info.json", status_code=303)


async def image(request: Request) -> Response:
    params = request.path_params
    slide_id = params["slide_id"]
    service = service_of(request)
    iiif_request = parse_image_request(
        params["region"], params["size"], params["rotation"], params["quality"], params["fmt"]
    )
    record, fingerprint, _, slide_info = await service.grid(slide_id)
    plan = plan_image(
        iiif_request, slide_info.width, slide_info.height, limits_of(service.settings)
    )
    quality = service.settings.jpeg_quality
    key = f"iiif:{record.id}:{record.content_hash}:{fingerprint}:{plan.canonical}:{quality}"
    media_type = plan.media_type

    async def make() -> tuple[bytes, str]:
        data, _ = await service.run_with_reader(
            slide_id, lambda reader: render_iiif(reader, plan, quality)
        )
        return data, "render"

    result = await service.cached(key, media_type, make)
    response = image_response(request, result, IMMUTABLE)
    response.headers.update(CORS)
    response.headers["Link"] = f'<{base_uri(request, slide_id)}/{plan.canonical}>;rel="canonical"'
    return response


def routes() -> list[Route]:
    """Return the IIIF routes."""
    return [
        Route("/iiif/3/{slide_id}", base, methods=["GET"]),
        Route("/iiif/3/{slide_id}/info.json", info, methods=["GET", "HEAD"]),
        Route(
            "/iiif/3/{slide_id}/{region}/{size}/{rotation}/{quality}.{fmt}",
            image,
            methods=["GET", "HEAD"],
        ),
    ]
