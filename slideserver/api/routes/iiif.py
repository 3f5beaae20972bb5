"""IIIF Image API 3.0: ``/iiif/3/{id}/info.json`` and image requests.

HTTP only: the URL becomes a call to :class:`slideserver.services.iiif.IIIFService`, its result
a response with the IIIF HTTP features (CORS, JSON-LD media type, canonical Link, base URI
redirect).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from slideserver.api.responses import IMMUTABLE, image_response
from slideserver.api.state import iiif_of, state_of

INFO_MEDIA_TYPE = 'application/ld+json;profile="http://iiif.io/api/image/3/context.json"'
CORS = {"Access-Control-Allow-Origin": "*"}
HTTP_FEATURES = ("baseUriRedirect", "cors", "jsonldMediaType")
"""The info.json ``extraFeatures`` this module provides (the image features are the service's)."""


def base_uri(request: Request, slide_id: str) -> str:
    settings = state_of(request).settings
    root = settings.public_url.rstrip("/") or str(request.base_url).rstrip("/")
    return f"{root}/iiif/3/{slide_id}"


async def info(request: Request) -> Response:
    slide_id = request.path_params["slide_id"]
    body = await iiif_of(request).info(slide_id, base_uri(request, slide_id), HTTP_FEATURES)
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
    image = await iiif_of(request).image(
        slide_id,
        params["region"],
        params["size"],
        params["rotation"],
        params["quality"],
        params["fmt"],
    )
    response = image_response(request, image.result, IMMUTABLE)
    response.headers.update(CORS)
    response.headers["Link"] = f'<{base_uri(request, slide_id)}/{image.canonical}>;rel="canonical"'
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
