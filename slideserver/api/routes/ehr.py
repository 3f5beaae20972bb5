"""``POST /api/ehr/lookup?accession=...``: ask the EHR for one order now (a walk-in case).

The order found is applied like a polled one (patient, case, specimens, late binding to slides
already scanned); the answer says what it changed, in counts, and links the case. 404
``ehr_not_configured`` without ``SLIDESERVER_EHR_FHIR_URL`` (nothing to look in), 503
``ehr_unavailable`` when the EHR cannot be asked, 422 for a malformed accession. The audit row
names the case and patient.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from slideserver.api.errors import error_response
from slideserver.api.openapi import Param, json_reply, operation
from slideserver.api.state import links_of
from slideserver.catalog.base import Catalog
from slideserver.catalog.scanner import Scanner
from slideserver.lis.ehr.client import fhir_client
from slideserver.lis.validate import OrderError, check_identifier
from slideserver.metrics import Metrics
from slideserver.security.audit import note_subjects
from slideserver.services.ehr_pull import EhrNotConfigured, EhrPull
from slideserver.services.links import LinkService
from slideserver.settings import Settings

NO_STORE = {"Cache-Control": "no-store"}
COUNT = {"type": "integer", "minimum": 0}
LOOKUP_RESULT = {
    "type": "object",
    "required": ["accession", "found", "orders", "rejected", "linked_slides", "conflicts", "links"],
    "properties": {
        "accession": {"type": "string"},
        "found": {"type": "boolean", "description": "Whether the EHR holds an order for it"},
        "orders": COUNT,
        "rejected": COUNT,
        "linked_slides": COUNT,
        "conflicts": COUNT,
        "links": {"type": "object", "properties": {"case": {"type": "string"}}},
    },
}


def ehr_pull_of(request: Request) -> EhrPull:
    """The process's EHR pull; EhrNotConfigured (404) when none is configured."""
    pull: EhrPull | None = getattr(request.app.state, "ehr_pull", None)
    if pull is None:
        raise EhrNotConfigured("no EHR is configured (SLIDESERVER_EHR_FHIR_URL)")
    return pull


@operation(
    "Ask the EHR for one accession's order now and apply it",
    tag="lis",
    params=(
        Param(
            "accession",
            "The order's accession number",
            {"type": "string", "minLength": 1, "maxLength": 64},
            required=True,
        ),
    ),
    replies={200: json_reply("What the order changed, in counts", LOOKUP_RESULT)},
    errors=(404, 422, 503),
)
async def lookup(request: Request) -> Response:
    """Search ``ServiceRequest?identifier=`` in the EHR and apply what it finds as a polled
    order is applied (patient, case, specimens, late binding); the cursors are not moved. 404
    ``ehr_not_configured`` when no EHR is configured."""
    pull = ehr_pull_of(request)
    try:
        accession = check_identifier(request.query_params.get("accession"), "accession")
    except OrderError as exc:
        return error_response(422, "invalid_accession", str(exc))
    result = await pull.lookup(accession)
    case = await links_of(request).case(accession) if result.found else None
    patient = case.patient.identifier if case is not None and case.patient else None
    note_subjects(request.scope, accession, patient)
    report = result.report
    return JSONResponse(
        {
            "accession": accession,
            "found": result.found,
            "orders": report.orders,
            "rejected": report.rejected,
            "linked_slides": report.linked_slides,
            "conflicts": report.conflicts,
            "links": {"case": f"/api/cases/{accession}"} if case is not None else {},
        },
        headers=NO_STORE,
    )


def routes() -> list[Route]:
    return [Route("/api/ehr/lookup", lookup, methods=["POST"])]


def ehr_pull(
    settings: Settings, links: LinkService, catalog: Catalog, metrics: Metrics
) -> EhrPull | None:
    """The EHR pull the settings ask for (the lifespan runs it), or ``None`` without an EHR;
    the catalog's scanner is told to hand it the accessions no case has.

    Incomplete EHR auth settings fail here, at start-up, not at the first poll.
    """
    if not settings.ehr_fhir_url:
        return None
    pull = EhrPull.from_settings(settings, fhir_client(settings), links, catalog, metrics)
    scanner = getattr(catalog, "scanner", None)
    if isinstance(scanner, Scanner):  # a slide of an unknown accession: ask the EHR at once
        scanner.on_unknown_accession = pull.ask
    return pull
