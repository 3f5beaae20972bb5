"""Cases, EMR launch links and the reconcile queue.

``GET /api/cases/{accession}`` answers::

    {"accession", "accession_issuer", "linked", "patient": {...} | null,
     "specimens": [{"id", "description", "blocks": [{"id", "slides": [summary...]}]}],
     "slides": [summary...], "expected_barcodes": [...], "links": {"viewer": "/case/ACC"}}

Slides are :func:`slide_summary` objects, as in ``/api/slides``. ``patient`` is PHI
(``id`` (MRN), ``issuer``, ``name``, ``birth_date``, ``sex``): role filters drop it whole.

The cases come from the :class:`~slideserver.services.links.LinkService`; without case links (the
in-memory catalog) ``/api/cases`` and ``/api/reconcile`` answer 503 ``links_unavailable``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from slideserver.api.openapi import Param, Reply, json_reply, operation, ref
from slideserver.api.params import parse_int
from slideserver.api.routes.slides import slide_summary
from slideserver.api.state import links_of
from slideserver.catalog.base import SlideQuery
from slideserver.catalog.cases import CaseView, PatientIn
from slideserver.errors import BadRequest, NotFound

MAX_ID = 64
"""Longest accession number or MRN accepted in a URL."""


class CaseNotFound(NotFound):
    """No case with that accession number, from the LIS or in any slide."""

    code = "case_not_found"


def slide_query_from_params(params: Any) -> SlideQuery:
    """Build a slide search from ``/api/slides`` query parameters (every DESIGN filter)."""
    text = {
        "q": 200,
        "format": 40,
        "vendor": 40,
        "status": 20,
        "cursor": 400,
        "patient": MAX_ID,
        "accession": MAX_ID,
        "specimen": MAX_ID,
        "stain": MAX_ID,
        "scanned_from": 40,
        "scanned_to": 40,
        "sort": 20,
    }
    values = {name: params.get(name, "")[:size] for name, size in text.items()}
    return SlideQuery(limit=parse_int("limit", params.get("limit"), 50, 1, 1000), **values)


def patient_json(patient: PatientIn | None) -> dict[str, Any] | None:
    """Return the PHI block of a case (the one place patient data appears)."""
    if patient is None:
        return None
    return {
        "id": patient.identifier,
        "issuer": patient.issuer,
        "name": patient.name,
        "birth_date": patient.birth_date,
        "sex": patient.sex,
    }


def case_json(case: CaseView, summaries: dict[str, dict[str, Any]], linked: bool) -> dict[str, Any]:
    """Return the JSON of one case; ``summaries`` maps slide IDs to their slide summaries.

    ``linked`` says the LIS sent the case; otherwise only the slides' own evidence names it.
    """

    def listed(ids: Any) -> list[dict[str, Any]]:
        return [summaries[v.id] for v in ids if v.id in summaries]

    return {
        "accession": case.accession,
        "accession_issuer": case.accession_issuer,
        "linked": linked,
        "patient": patient_json(case.patient),
        "specimens": [
            {
                "id": s.id,
                "description": s.description,
                "blocks": [{"id": b.id, "slides": listed(b.slides)} for b in s.blocks],
            }
            for s in case.specimens
        ],
        "slides": listed(case.slides),
        "expected_barcodes": list(case.expected_barcodes),
        "links": {"viewer": f"/case/{quote(case.accession, safe='')}"},
    }


SLIDES = {"type": "array", "items": ref("SlideSummary")}
CASE_SCHEMA = {
    "type": "object",
    "required": ["accession", "linked", "patient", "specimens", "slides"],
    "properties": {
        "accession": {"type": "string"},
        "accession_issuer": {"type": ["string", "null"]},
        "linked": {"type": "boolean", "description": "The LIS sent this case"},
        "patient": {
            "type": ["object", "null"],
            "description": "PHI: id (MRN), issuer, name, birth_date, sex",
        },
        "specimens": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "description": {"type": ["string", "null"]},
                    "blocks": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"id": {"type": "string"}, "slides": SLIDES},
                        },
                    },
                },
            },
        },
        "slides": SLIDES,
        "expected_barcodes": {"type": "array", "items": {"type": "string"}},
        "links": {"type": "object", "properties": {"viewer": {"type": "string"}}},
    },
}
CONFLICTS = {
    "type": "object",
    "required": ["items", "next"],
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "at": {"type": "string", "format": "date-time"},
                    "kind": {"type": "string"},
                    "subject": {"type": "string"},
                    "detail": {"type": "string"},
                    "status": {"type": "string"},
                },
            },
        },
        "next": {"type": ["string", "null"]},
    },
}
ID_PARAM = {"type": "string", "minLength": 1, "maxLength": MAX_ID}


@operation(
    "A case: patient, specimens, blocks and slides",
    tag="cases",
    params=(Param("accession", "The case's accession number", ID_PARAM, "path"),),
    replies={200: json_reply("The case", CASE_SCHEMA)},
    errors=(400, 404, 503),
)
async def get_case(request: Request) -> Response:
    """A case the LIS sent or the slides name; 503 ``links_unavailable`` without case links."""
    accession = _checked("accession", request.path_params["accession"])
    found = await links_of(request).require().case_with_slides(accession)
    if found is None:
        raise CaseNotFound(f"no case with accession {accession!r}")
    summaries = {r.id: slide_summary(r) for r in found.records}
    return JSONResponse(case_json(found.case, summaries, found.linked))


@operation(
    "EMR launch: open the viewer on a case or a patient",
    tag="cases",
    params=(
        Param("accession", "Open this case", ID_PARAM),
        Param("patient", "Open this patient's slides (MRN)", ID_PARAM),
    ),
    replies={302: Reply("To the viewer", headers={"Location": "The viewer page"})},
    errors=(400,),
)
async def launch(request: Request) -> Response:
    """EMR launch (IHE Invoke Image Display style): redirect to the viewer's case or patient."""
    params = request.query_params
    accession = params.get("accession", "").strip()
    patient = params.get("patient", "").strip()
    if accession:
        target = f"/case/{quote(_checked('accession', accession).upper(), safe='')}"
    elif patient:
        target = "/?" + urlencode({"patient": _checked("patient", patient)})
    else:
        raise BadRequest("give accession= or patient=")
    return RedirectResponse(target, status_code=302, headers={"Cache-Control": "no-store"})


@operation(
    "The review queue: conflicts between the LIS and the slides",
    tag="cases",
    params=(
        Param("status", "Which conflicts", {"enum": ["open", "resolved", "all"]}),
        Param("limit", "Page size", {"type": "integer", "minimum": 1, "maximum": 1000}),
        Param("cursor", "The previous page's `next`", {"type": "integer", "minimum": 0}),
    ),
    replies={200: json_reply("One page of conflicts", CONFLICTS)},
    errors=(400, 503),
)
async def reconcile(request: Request) -> Response:
    """List conflicts flagged for review, oldest first, with a cursor."""
    links = links_of(request).require()
    params = request.query_params
    status = params.get("status", "open")
    if status not in {"open", "resolved", "all"}:
        raise BadRequest("status must be open, resolved or all")
    limit = parse_int("limit", params.get("limit"), 100, 1, 1000)
    after = parse_int("cursor", params.get("cursor"), 0, 0, 1 << 30)
    items = await links.conflicts("" if status == "all" else status, limit + 1, after)
    more = len(items) > limit
    items = items[:limit]
    return JSONResponse(
        {
            "items": [
                {
                    "id": c.id,
                    "at": c.at.isoformat(),
                    "kind": c.kind,
                    "subject": c.subject,
                    "detail": c.detail,
                    "status": c.status,
                }
                for c in items
            ],
            "next": str(items[-1].id) if more and items else None,
        }
    )


def _checked(name: str, value: str) -> str:
    value = value.strip()
    if not value or len(value) > MAX_ID or not value.isprintable():
        raise BadRequest(f"{name} must be 1 to {MAX_ID} printable characters")
    return value


def routes() -> list[Route]:
    """Return the case, launch and reconcile routes."""
    return [
        Route("/api/cases/{accession}", get_case, methods=["GET"]),
        Route("/launch", launch, methods=["GET"]),
        Route("/api/reconcile", reconcile, methods=["GET"]),
    ]


__all__ = ["case_json", "routes", "slide_query_from_params"]
