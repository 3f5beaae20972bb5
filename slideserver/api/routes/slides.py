"""Slide listing, metadata, thumbnails and associated images."""

from __future__ import annotations

from typing import Any

from anyio.to_thread import run_sync
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from slideserver.api.openapi import (
    NOT_MODIFIED,
    Param,
    image_reply,
    json_reply,
    operation,
    ref,
)
from slideserver.api.params import parse_int
from slideserver.api.responses import image_response
from slideserver.api.state import service_of, state_of
from slideserver.catalog.base import SlideQuery, SlideRecord
from slideserver.errors import AssociatedImageNotFound
from slideserver.models import SlideInfo
from slideserver.security import Principal, principal_of
from slideserver.security.deidentify import associated_allowed, for_principal, identifying_search
from slideserver.security.principals import in_collections

SCAN_DATE_KEYS = ("dicom.AcquisitionDateTime", "dicom.ContentDate", "tiff.DateTime", "aperio.Date")


def slide_summary(record: SlideRecord, principal: Principal | None = None) -> dict[str, Any]:
    """Return the JSON every listing uses for one slide, as ``principal`` may see it.

    ``principal`` ``None`` is a trusted internal caller; roles without PHI get the allow-listed,
    de-identified view (:mod:`slideserver.security.deidentify`).
    """
    sid = record.id
    summary: dict[str, Any] = {
        "id": sid,
        "name": record.name,
        "path": record.relpath,
        "format": record.format,
        "vendor": record.vendor,
        "width": record.width,
        "height": record.height,
        "mpp_x": record.mpp_x,
        "mpp_y": record.mpp_y,
        "objective_power": record.objective_power,
        "status": record.status,
        "links": {
            "dzi": f"/dz/{sid}.dzi",
            "thumbnail": f"/api/slides/{sid}/thumbnail",
            "iiif": f"/iiif/3/{sid}/info.json",
            "viewer": f"/view/{sid}",
        },
        "case": record.extra.get("case") if record.extra else None,
    }
    if record.error:
        summary["error"] = record.error
    return for_principal(summary, principal)


def slide_detail(
    record: SlideRecord, info: SlideInfo, principal: Principal | None = None
) -> dict[str, Any]:
    """Return the full metadata of one slide, as ``principal`` may see it."""
    detail = slide_summary(record)
    detail.update(
        {
            **info.summary(),
            "levels": [
                {
                    "width": lv.width,
                    "height": lv.height,
                    "downsample": lv.downsample,
                    "tile_width": lv.tile_width,
                    "tile_height": lv.tile_height,
                }
                for lv in info.levels
            ],
            "associated": list(info.associated),
            "properties": dict(info.properties),
            "scan_date": next(
                (info.properties[k] for k in SCAN_DATE_KEYS if info.properties.get(k)), None
            ),
        }
    )
    return for_principal(detail, principal)


def _text(name: str, description: str, longest: int) -> Param:
    return Param(name, f"{description} (at most {longest} characters are used)")


SEARCH_PARAMS = (
    _text("q", "Free text over names, paths, cases and barcodes", 200),
    _text("format", "Slide format (svs, ndpi, dicom, ...)", 40),
    _text("vendor", "Scanner vendor", 40),
    _text("status", "ok or unreadable", 20),
    Param("limit", "Page size", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}),
    _text("cursor", "The previous page's `next`", 200),
    _text("patient", "Patient MRN (PHI: matches nothing for researchers)", 100),
    _text("accession", "Case accession number (PHI: matches nothing for researchers)", 100),
    _text("specimen", "Specimen ID", 40),
    _text("stain", "Stain (H&E, ...)", 40),
    _text("scanned_from", "Scanned on or after this ISO date", 40),
    _text("scanned_to", "Scanned on or before this ISO date", 40),
    _text("sort", "Sort order", 20),
)
SLIDE_PAGE = {
    "type": "object",
    "required": ["items", "next"],
    "properties": {
        "items": {"type": "array", "items": ref("SlideSummary")},
        "next": {"type": ["string", "null"], "description": "The cursor of the next page"},
    },
}
SLIDE_ERRORS = (404, 410, 422, 503, 504)
"""Not in the catalog; replaced on disk; unreadable; storage or database down; storage hung."""


@operation(
    "Search and list slides",
    tag="slides",
    params=SEARCH_PARAMS,
    replies={200: json_reply("One page of slides, as the caller may see them", SLIDE_PAGE)},
    errors=(400,),
)
async def list_slides(request: Request) -> Response:
    """Slides in the caller's collections; researchers' identifying searches match nothing."""
    state = state_of(request)
    principal = principal_of(request)
    params = request.query_params
    if identifying_search(principal, params):
        # De-identified callers cannot search by patient, case, name or date: nothing matches.
        return JSONResponse({"items": [], "next": None})
    query = SlideQuery(
        q=params.get("q", "")[:200],
        format=params.get("format", "")[:40],
        vendor=params.get("vendor", "")[:40],
        status=params.get("status", "")[:20],
        limit=parse_int("limit", params.get("limit"), 50, 1, 1000),
        cursor=params.get("cursor", "")[:200],
        patient=params.get("patient", "")[:100],
        accession=params.get("accession", "")[:100],
        specimen=params.get("specimen", "")[:40],
        stain=params.get("stain", "")[:40],
        scanned_from=params.get("scanned_from", "")[:40],
        scanned_to=params.get("scanned_to", "")[:40],
        sort=params.get("sort", "")[:20],
    )
    page = await run_sync(state.catalog.search, query)
    items = [
        slide_summary(r, principal)
        for r in page.items
        if in_collections(principal.collections, r.root.name, r.relpath)
    ]
    return JSONResponse({"items": items, "next": page.next})


@operation(
    "Read one slide's metadata: size, levels, optics, associated images",
    tag="slides",
    replies={200: json_reply("The slide, as the caller may see it", ref("SlideDetail"))},
    errors=SLIDE_ERRORS,
)
async def get_slide(request: Request) -> Response:
    record, info = await service_of(request).info(request.path_params["slide_id"])
    return JSONResponse(slide_detail(record, info, principal_of(request)))


@operation(
    "A thumbnail of the whole slide",
    tag="slides",
    params=(
        Param(
            "max",
            "Longest side in pixels",
            {"type": "integer", "minimum": 1, "maximum": 1 << 30, "default": 512},
        ),
    ),
    replies={200: image_reply("The thumbnail", "image/jpeg"), 304: NOT_MODIFIED},
    errors=(400, *SLIDE_ERRORS),
)
async def thumbnail(request: Request) -> Response:
    service = service_of(request)
    size = parse_int("max", request.query_params.get("max"), 512, 1, 1 << 30)
    result = await service.thumbnail(request.path_params["slide_id"], size)
    return image_response(request, result)


@operation(
    "An associated image (label, macro, thumbnail) of the slide",
    tag="slides",
    params=(Param("name", "The image's name; researchers get only `thumbnail`"),),
    replies={200: image_reply("The image", "image/jpeg"), 304: NOT_MODIFIED},
    errors=SLIDE_ERRORS,
)
async def associated(request: Request) -> Response:
    service = service_of(request)
    params = request.path_params
    if not associated_allowed(principal_of(request), params["name"]):
        # The same answer as for an image the slide does not have: not even its existence.
        raise AssociatedImageNotFound(
            f"slide {params['slide_id']!r} has no associated image {params['name'][:40]!r}"
        )
    result = await service.associated(params["slide_id"], params["name"])
    return image_response(request, result)


def routes() -> list[Route]:
    """Return the slide routes."""
    return [
        Route("/api/slides", list_slides, methods=["GET"]),
        Route("/api/slides/{slide_id}", get_slide, methods=["GET"]),
        Route("/api/slides/{slide_id}/thumbnail", thumbnail, methods=["GET", "HEAD"]),
        Route("/api/slides/{slide_id}/associated/{name}", associated, methods=["GET", "HEAD"]),
    ]
