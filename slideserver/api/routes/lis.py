"""The LIS/EMR interfaces over HTTP: JSON and HL7 v2 orders in, FHIR R4 in and out.

- ``POST /api/lis/cases``: a JSON order (:mod:`slideserver.lis.json_orders`); 201 when the case is
  new, 200 otherwise, with what changed; 400 for a body that is not JSON, 422 for an invalid order.
- ``POST /api/lis/hl7v2``: one ER7 message; the ACK comes back as ``application/hl7-v2`` with 200
  (AA), 400 (AR), 422 (AE) or 503 (AE: the store failed, retry later).
- ``POST /fhir``: a transaction Bundle -> a transaction-response Bundle.
- ``GET /fhir/Patient/{id}``, ``GET /fhir/Specimen?container-id=``,
  ``GET /fhir/ImagingStudy?identifier=`` or ``?patient=``, ``GET /fhir/Endpoint/{id}``.
  FHIR errors are OperationOutcomes with the matching status.

Bodies are read with a size cap; JSON is decoded only when nested at most 64 levels (400
otherwise, see :mod:`slideserver.api.bodies`), and every message is parsed in a worker thread
(:mod:`slideserver.lis.parse_threads`), never on the event loop that serves tiles. Every inbound
message is kept raw by the store with how it was answered. All answers carry
``Cache-Control: no-store``: they hold PHI. The work is the :class:`LinkService`'s; these routes
only translate HTTP. When the catalog keeps no links (the in-memory one), every route but
``/fhir/metadata`` answers 503 ``links_unavailable``.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from slideserver.api.bodies import BodyTooLarge, JsonTooDeep, parse_json, read_body
from slideserver.api.errors import error_response
from slideserver.api.openapi import Body, Param, Reply, json_reply, operation, ref
from slideserver.api.state import links_of, state_of
from slideserver.catalog.cases import ApplyResult, CaseOrder, CaseView
from slideserver.errors import BackendUnavailable
from slideserver.lis import fhir
from slideserver.lis.hl7v2.ack import ACCEPT, REJECT
from slideserver.lis.hl7v2.parse import decode_message
from slideserver.lis.json_orders import parse_case_order
from slideserver.lis.parse_threads import run_parse
from slideserver.lis.validate import OrderError, decode_text
from slideserver.security.audit import note_subjects
from slideserver.services.links import LinkService
from slideserver.services.mllp_intake import subjects_of

log = logging.getLogger("slideserver.lis")

MAX_BODY = 4 * 1024 * 1024
"""Largest inbound LIS message, in bytes."""
MAX_PARAM = 200
HL7_MEDIA_TYPE = "application/hl7-v2"
NO_STORE = {"Cache-Control": "no-store"}


def apply_result_json(order: CaseOrder, result: ApplyResult) -> dict[str, Any]:
    """The JSON answer to an order."""
    return {
        "accession": order.accession,
        "created": result.created,
        "changed": result.changed,
        "linked_slides": list(result.linked_slides),
        "conflicts": list(result.conflicts),
        "links": {"case": f"/api/cases/{order.accession}"},
    }


# --- descriptions ---

IDENTIFIER = {"type": "string", "minLength": 1, "maxLength": 64}
ORDER_SCHEMA = {
    "type": "object",
    "required": ["accession", "patient"],
    "additionalProperties": False,
    "properties": {
        "accession": IDENTIFIER,
        "accession_issuer": IDENTIFIER,
        "message_id": IDENTIFIER,
        "patient": {
            "type": "object",
            "required": ["identifier"],
            "additionalProperties": False,
            "properties": {
                "identifier": IDENTIFIER,
                "issuer": IDENTIFIER,
                "name": {"type": "string", "description": "HL7 style: FAMILY^GIVEN"},
                "birth_date": {"type": "string", "description": "YYYY-MM-DD"},
                "sex": {"type": "string", "description": "F, M, O or U"},
            },
        },
        "specimens": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id"],
                "additionalProperties": False,
                "properties": {
                    "id": IDENTIFIER,
                    "description": {"type": "string"},
                    "blocks": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["id"],
                            "additionalProperties": False,
                            "properties": {
                                "id": IDENTIFIER,
                                "slides": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["barcode"],
                                        "additionalProperties": False,
                                        "properties": {
                                            "barcode": IDENTIFIER,
                                            "stain": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}
APPLIED = {
    "type": "object",
    "required": ["accession", "created", "changed"],
    "properties": {
        "accession": {"type": "string"},
        "created": {"type": "boolean"},
        "changed": {"type": "boolean", "description": "False for a repeated message"},
        "linked_slides": {"type": "array", "items": {"type": "string"}},
        "conflicts": {"type": "array", "items": {"type": "string"}},
        "links": {"type": "object", "properties": {"case": {"type": "string"}}},
    },
}
HL7_TEXT = {"type": "string", "description": "An ER7 message (segments separated by CR)"}
ACK = Reply("The ACK (MSA-1 AA, AR or AE)", {HL7_MEDIA_TYPE: HL7_TEXT})
ACK_OR_ERROR = Reply(
    "The ACK (AR, AE), or the shared error body when the request is refused before parsing",
    {HL7_MEDIA_TYPE: HL7_TEXT, "application/json": ref("Error")},
)
FHIR_JSON = "application/fhir+json"
OUTCOME = Reply("An OperationOutcome", {FHIR_JSON: ref("OperationOutcome")})


def fhir_reply(description: str, resource: str) -> Reply:
    schema = {"allOf": [ref("FhirResource")], "properties": {"resourceType": {"const": resource}}}
    return json_reply(description, schema, FHIR_JSON)


# --- JSON ---


class BodyRefused(Exception):
    """A JSON body refused before it was parsed into an order (each route answers in its form)."""

    def __init__(self, status: int, code: str, fhir_issue: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.fhir_issue, self.detail = status, code, fhir_issue, detail


async def read_json(
    request: Request, links: LinkService, source: str, what: str
) -> tuple[str, Any]:
    """Read a JSON body within the size cap and depth limit, parsed off the event loop; return
    the text (kept with the LIS messages) and the data. A refused body is recorded as refused."""
    try:
        body = await read_body(request, MAX_BODY)
    except BodyTooLarge:
        detail = f"the {what} is larger than {MAX_BODY} bytes"
        raise BodyRefused(413, "too_large", "too-costly", detail) from None
    raw = decode_text(body)
    try:
        return raw, await run_parse(parse_json, raw.encode())
    except JsonTooDeep as exc:
        refused = BodyRefused(400, "bad_request", "too-costly", exc.detail)
    except (ValueError, UnicodeDecodeError) as exc:
        detail = f"the body is not JSON: {getattr(exc, 'msg', 'undecodable')}"
        refused = BodyRefused(400, "bad_request", "structure", detail)
    await links.reject(source, raw, refused.detail)
    raise refused


@operation(
    "Create or update a case from a JSON order (idempotent)",
    tag="lis",
    body=Body({"application/json": ORDER_SCHEMA}, "The order"),
    replies={
        200: json_reply("Applied to an existing case", APPLIED),
        201: json_reply("A new case", APPLIED),
    },
    errors=(400, 413, 415, 422, 503),
)
async def post_case(request: Request) -> Response:
    """Create or update a case from a JSON order (idempotent)."""
    links = links_of(request).require()
    if not _is_json(_media_type(request)):
        return error_response(
            415, "unsupported_media_type", "Content-Type must be application/json"
        )
    try:
        raw, data = await read_json(request, links, "json", "order")
    except BodyRefused as refused:
        return error_response(refused.status, refused.code, refused.detail)
    try:
        order = await run_parse(parse_case_order, data)
    except OrderError as exc:
        await links.reject("json", raw, str(exc))
        return error_response(422, "invalid_order", str(exc))
    note_subjects(request.scope, order.accession, order.patient.identifier)
    result = await links.apply_order(order, raw)
    return JSONResponse(
        apply_result_json(order, result),
        status_code=201 if result.created else 200,
        headers=NO_STORE,
    )


# --- HL7 v2 ---


@operation(
    "Apply one HL7 v2 message (ORM, OML, ADT); answer its ACK",
    tag="lis",
    body=Body({HL7_MEDIA_TYPE: HL7_TEXT, "text/plain": HL7_TEXT}, "One ER7 message"),
    replies={200: ACK, 400: ACK_OR_ERROR, 422: ACK, 503: ACK_OR_ERROR},
    errors=(413,),
)
async def post_hl7v2(request: Request) -> Response:
    """Apply one ER7 message; answer its ACK (the store keeps the message raw)."""
    links = links_of(request).require()
    try:
        body = await read_body(request, MAX_BODY)
    except BodyTooLarge:
        return error_response(413, "too_large", f"the message is larger than {MAX_BODY} bytes")
    raw = decode_message(body)
    reply = await links.handle_hl7v2(raw)
    if reply.code == ACCEPT:  # the audit row names the order's case and patient, as MLLP's do
        subjects = await run_parse(subjects_of, raw, links.policy)
        note_subjects(request.scope, subjects.accession, subjects.patient)
    if reply.code == ACCEPT:
        status = 200
    elif reply.internal:
        status = 503
    else:
        status = 400 if reply.code == REJECT else 422
    return Response(
        reply.ack.encode("utf-8"),
        status_code=status,
        media_type=f"{HL7_MEDIA_TYPE}; charset=utf-8",
        headers=NO_STORE,
    )


# --- FHIR ---


def fhir_response(resource: Any, status: int = 200) -> Response:
    """A FHIR JSON answer."""
    return Response(
        fhir.to_json(resource), status_code=status, media_type=fhir.MEDIA_TYPE, headers=NO_STORE
    )


def fhir_error(
    status: int, issue: str, diagnostics: str, expression: str | None = None
) -> Response:
    """An OperationOutcome answer."""
    return fhir_response(fhir.outcome(issue, diagnostics, expression=expression), status)


def base_url(request: Request) -> str:
    """Where links handed to other systems point: ``public_url``, else this request's base."""
    public = state_of(request).settings.public_url
    return (public or str(request.base_url)).rstrip("/")


FHIR_BODY_TYPES = frozenset({"application/fhir+json", "application/json"})
"""Media types ``POST /fhir`` accepts (with any parameters: charset, fhirVersion)."""


def _is_json(media_type: str) -> bool:
    """``application/json`` or a ``+json`` type; an absent Content-Type is taken as JSON."""
    return media_type in ("", "application/json") or media_type.endswith("+json")


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


@operation(
    "Apply a FHIR transaction Bundle (Patient, ServiceRequest, Specimens)",
    tag="fhir",
    body=Body({FHIR_JSON: ref("FhirResource"), "application/json": ref("FhirResource")}),
    replies={200: fhir_reply("The transaction-response Bundle", "Bundle")},
    error_reply=OUTCOME,
)
async def post_fhir(request: Request) -> Response:
    """Apply a transaction Bundle of Patient, ServiceRequest and Specimens (FHIR JSON only)."""
    links = links_of(request).require()
    if _media_type(request) not in FHIR_BODY_TYPES:
        return fhir_error(
            415,
            "not-supported",
            "Content-Type must be application/fhir+json (or application/json)",
        )
    try:
        raw, data = await read_json(request, links, "fhir", "Bundle")
    except BodyRefused as refused:
        return fhir_error(refused.status, refused.fhir_issue, refused.detail)
    try:
        transaction = await run_parse(fhir.parse_transaction, data)
    except fhir.FhirError as exc:
        await links.reject("fhir", raw, exc.diagnostics)
        return fhir_error(exc.status, exc.issue, exc.diagnostics, exc.expression)
    order = transaction.order
    note_subjects(request.scope, order.accession, order.patient.identifier)
    result = await links.apply_order(order, raw)
    return fhir_response(fhir.transaction_response(transaction, result))


@operation(
    "Read a Patient",
    tag="fhir",
    params=(Param("id", "The MRN, or its `x-` encoded form"),),
    replies={200: fhir_reply("The Patient", "Patient")},
    error_reply=OUTCOME,
)
async def get_patient(request: Request) -> Response:
    """Read one Patient by ID (the MRN, or its ``x-`` encoded form)."""
    links = links_of(request).require()
    mrn = fhir.value_of_fhir_id(request.path_params["id"])
    if mrn is None:
        return fhir_error(404, "not-found", "no Patient with that id")
    patient = await links.patient(mrn)
    if patient is None:
        return fhir_error(404, "not-found", "no Patient with that id")
    return fhir_response(fhir.patient_resource(patient))


def _param(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > MAX_PARAM:
        raise fhir.FhirError(400, "invalid", f"{name} must be 1 to {MAX_PARAM} characters", name)
    return value


def _token_value(token: str) -> str:
    """``system|value`` or ``value`` -> value."""
    return token.rsplit("|", 1)[-1]


@operation(
    "Search Specimens by container (block or slide barcode)",
    tag="fhir",
    params=(Param("container-id", "`system|value` or `value`", required=True),),
    replies={200: fhir_reply("A searchset Bundle", "Bundle")},
    error_reply=OUTCOME,
)
async def search_specimen(request: Request) -> Response:
    """``GET /fhir/Specimen?container-id=``: the block or slide with that container ID."""
    links = links_of(request).require()
    try:
        container_id = _param(request, "container-id")
    except fhir.FhirError as exc:
        return fhir_error(exc.status, exc.issue, exc.diagnostics, exc.expression)
    if container_id is None:
        return fhir_error(400, "required", "container-id is required", "container-id")
    container_id = _token_value(container_id)
    case = await links.case_of_container(container_id)
    matches = fhir.specimens_with_container(case, container_id) if case is not None else []
    return fhir_response(fhir.searchset(matches, base_url(request), str(request.url)))


@operation(
    "Search ImagingStudies (one per case) by accession or patient",
    tag="fhir",
    params=(
        Param("identifier", "The accession: `system|value` or `value`"),
        Param("patient", "The patient: `Patient/ID`, the ID or the MRN"),
    ),
    replies={200: fhir_reply("A searchset Bundle", "Bundle")},
    error_reply=OUTCOME,
)
async def search_imaging_study(request: Request) -> Response:
    """``GET /fhir/ImagingStudy?identifier=ACC`` or ``?patient=MRN``: one study per case."""
    links = links_of(request).require()
    try:
        identifier = _param(request, "identifier")
        patient = _param(request, "patient")
    except fhir.FhirError as exc:
        return fhir_error(exc.status, exc.issue, exc.diagnostics, exc.expression)
    if identifier is None and patient is None:
        return fhir_error(400, "required", "identifier or patient is required")
    cases: list[CaseView] = []
    if patient is not None:
        mrn = fhir.value_of_fhir_id(patient.removeprefix("Patient/")) or patient
        cases = await links.cases_of_patient(mrn)
        if identifier is not None:
            accession = _token_value(identifier)
            cases = [c for c in cases if c.accession == accession]
    elif identifier is not None:
        case = await links.case(_token_value(identifier))
        cases = [case] if case is not None else []
    return fhir_response(fhir.imaging_study_searchset(cases, base_url(request), str(request.url)))


@operation(
    "Read an Endpoint (a slide's viewer or IIIF service, a case's launch link)",
    tag="fhir",
    params=(Param("id", "`viewer.SLIDE`, `iiif.SLIDE` or `case.ACCESSION`"),),
    replies={200: fhir_reply("The Endpoint", "Endpoint")},
    error_reply=OUTCOME,
)
async def get_endpoint(request: Request) -> Response:
    """Read one Endpoint: a slide's viewer or IIIF service, or a case's launch link."""
    links = links_of(request).require()
    parsed = fhir.parse_endpoint_id(request.path_params["id"])
    if parsed is None:
        return fhir_error(404, "not-found", "no Endpoint with that id")
    kind, key = parsed
    base = base_url(request)
    if kind == "case":
        case = await links.case(key)
        if case is None:
            return fhir_error(404, "not-found", "no Endpoint with that id")
        return fhir_response(fhir.case_endpoint(case.accession, base))
    record = await links.slide(key)
    if record is None:
        return fhir_error(404, "not-found", "no Endpoint with that id")
    viewer, iiif = fhir.slide_endpoints(record.id, base, record.status)
    return fhir_response(viewer if kind == "viewer" else iiif)


@operation(
    "The FHIR CapabilityStatement",
    tag="fhir",
    replies={200: fhir_reply("What this FHIR server does", "CapabilityStatement")},
    error_reply=OUTCOME,
)
async def metadata(request: Request) -> Response:
    """``GET /fhir/metadata``: what this FHIR server does (public, as FHIR clients expect)."""
    from slideserver import __version__

    return fhir_response(fhir.capability_statement(base_url(request), __version__))


def _fhir_guard(endpoint: Any) -> Any:
    """Answer unexpected failures of a FHIR route as an OperationOutcome, not a stack trace."""

    async def guarded(request: Request) -> Response:
        try:
            response: Response = await endpoint(request)
        except BackendUnavailable:
            raise
        except Exception as exc:
            # the path may carry an MRN: name the handler, never the URL
            log.error("FHIR %s failed: %s", endpoint.__name__, type(exc).__name__)
            return fhir_error(500, "exception", "the server could not complete this request")
        return response

    return functools.update_wrapper(guarded, endpoint)  # name, docstring, OpenAPI operation


def routes() -> list[Route]:
    """The LIS/EMR routes."""
    return [
        Route("/api/lis/cases", post_case, methods=["POST"]),
        Route("/api/lis/hl7v2", post_hl7v2, methods=["POST"]),
        Route("/fhir", _fhir_guard(post_fhir), methods=["POST"]),
        Route("/fhir/metadata", _fhir_guard(metadata), methods=["GET"]),
        Route("/fhir/Patient/{id}", _fhir_guard(get_patient), methods=["GET"]),
        Route("/fhir/Specimen", _fhir_guard(search_specimen), methods=["GET"]),
        Route("/fhir/ImagingStudy", _fhir_guard(search_imaging_study), methods=["GET"]),
        Route("/fhir/Endpoint/{id}", _fhir_guard(get_endpoint), methods=["GET"]),
    ]


__all__ = ["routes"]
