"""IIIF Image API 3.0: ``/iiif/3/{id}/info.json`` and image requests.

HTTP only: the URL becomes a call to :class:`slideserver.services.iiif.IIIFService`, its result
a response with the IIIF HTTP features (JSON-LD media type, canonical Link, base URI redirect;
CORS is :mod:`slideserver.api.cors`'s, for every route the policy table opens to other origins).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from slideserver.api.cors import cors_policy
from slideserver.api.openapi import NOT_MODIFIED, Param, Reply, image_reply, operation
from slideserver.api.responses import IMMUTABLE, image_response
from slideserver.api.state import iiif_of, state_of

INFO_MEDIA_TYPE = 'application/ld+json;profile="http://iiif.io/api/image/3/context.json"'
JSON = "application/json"
LD_JSON = "application/ld+json"
HTTP_FEATURES = ("baseUriRedirect", "jsonldMediaType")
"""The info.json ``extraFeatures`` this module provides (the image features are the service's);
``cors`` is added when some other origin may use the image APIs."""


def info_media_type(accept: str) -> str:
    """Return info.json's media type for an ``Accept`` header (IIIF Image 3.0, section 5).

    JSON-LD with the IIIF profile by default; plain ``application/json`` only when the client
    names it and does not prefer (or equally accept) ``application/ld+json``.
    """
    quality: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.lower()
        if media in (JSON, LD_JSON):
            quality[media] = max(q, quality.get(media, 0.0))
    json_q = quality.get(JSON, 0.0)
    if json_q > 0 and json_q > quality.get(LD_JSON, 0.0):
        return JSON
    return INFO_MEDIA_TYPE


def base_uri(request: Request, slide_id: str) -> str:
    settings = state_of(request).settings
    root = settings.public_url.rstrip("/") or str(request.base_url).rstrip("/")
    return f"{root}/iiif/3/{slide_id}"


SLIDE_ERRORS = (404, 410, 422, 503, 504)
NUMBER = r"[0-9]+(\.[0-9]+)?"
REGION = {
    "type": "string",
    "pattern": rf"^(full|square|[0-9]+(,[0-9]+){{3}}|pct:{NUMBER}(,{NUMBER}){{3}})$",
}
SIZE = {"type": "string", "pattern": rf"^\^?(max|[0-9]+,|,[0-9]+|pct:{NUMBER}|!?[0-9]+,[0-9]+)$"}
ROTATION = {"type": "string", "pattern": rf"^!?{NUMBER}$"}
INFO_SCHEMA = {
    "type": "object",
    "required": ["id", "type", "protocol", "profile", "width", "height"],
    "properties": {
        "@context": {"type": "string"},
        "id": {"type": "string"},
        "type": {"const": "ImageService3"},
        "protocol": {"const": "http://iiif.io/api/image"},
        "profile": {"type": "string"},
        "width": {"type": "integer"},
        "height": {"type": "integer"},
    },
    "description": "https://iiif.io/api/image/3.0/#5-image-information",
}


@operation(
    "The IIIF Image API 3.0 image information (info.json)",
    tag="iiif",
    replies={
        200: Reply(
            "info.json; plain JSON when the client asks for application/json",
            {INFO_MEDIA_TYPE: INFO_SCHEMA, JSON: INFO_SCHEMA},
        )
    },
    errors=SLIDE_ERRORS,
)
async def info(request: Request) -> Response:
    slide_id = request.path_params["slide_id"]
    settings = state_of(request).settings
    features = (*HTTP_FEATURES, "cors") if cors_policy(settings).enabled else HTTP_FEATURES
    body = await iiif_of(request).info(slide_id, base_uri(request, slide_id), sorted(features))
    headers = {"Cache-Control": "no-cache", "Vary": "Accept"}
    media_type = info_media_type(request.headers.get("accept", ""))
    return JSONResponse(body, media_type=media_type, headers=headers)


@operation(
    "The IIIF base URI: a redirect to info.json",
    tag="iiif",
    replies={303: Reply("See info.json", headers={"Location": "The info.json URL"})},
)
async def base(request: Request) -> Response:
    slide_id = request.path_params["slide_id"]
    return RedirectResponse(f"{base_uri(request, slide_id)}/info.json", status_code=303)


@operation(
    "A IIIF Image API 3.0 image request",
    tag="iiif",
    params=(
        Param("region", "full, square, x,y,w,h or pct:x,y,w,h", REGION, "path"),
        Param("size", "max, w,, ,h, pct:n, w,h or !w,h; ^ allows upscaling", SIZE, "path"),
        Param("rotation", "Degrees clockwise, ! to mirror first", ROTATION, "path"),
        Param("quality", "Image quality", {"enum": ["default", "color", "gray", "bitonal"]}),
        Param("fmt", "Image format", {"enum": ["jpg", "png", "webp"]}, "path"),
    ),
    replies={
        200: image_reply("The image", "image/jpeg", "image/png", "image/webp"),
        304: NOT_MODIFIED,
    },
    errors=(400, 413, *SLIDE_ERRORS),
    description="https://iiif.io/api/image/3.0/#4-image-requests; the answer carries the "
    "canonical URI in a `Link` header.",
)
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
