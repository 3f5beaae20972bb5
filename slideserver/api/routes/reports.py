"""Sign-out reports: drafts, signing, amendments, the PDF and delivery retries (issue 14).

A report answers (``GET /api/reports/{id}``, every write)::

    {"id", "accession", "version", "status": "draft|final|amended|corrected", "revision",
     "diagnosis", "microscopic", "synoptic": {...}, "figures": [{"slide_id", "region":
     {"x", "y", "width", "height"}, "caption"}], "author", "created_at", "signer", "signed_at",
     "reason", "deliveries": [{"target", "state", "detail", "attempts"}],
     "versions": [{"version", "status"}]}

with an ``ETag`` naming the draft's revision: ``PUT`` needs it in ``If-Match`` (412 when the draft
changed meanwhile, 428 without it). ``POST /api/cases/{accession}/reports`` is idempotent by its
``Idempotency-Key`` header (or an ``identifier`` in the body). Signing and amending need the
signer's own identity: the anonymous user of ``auth=open`` may not. The logic is in
:class:`~slideserver.services.reports.ReportService`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from slideserver.api.bodies import BodyTooLarge, parse_json, read_body
from slideserver.api.openapi import STRING, Body, Param, Reply, operation, ref
from slideserver.errors import (
    BackendUnavailable,
    BadRequest,
    Forbidden,
    PreconditionRequired,
    TooLarge,
)
from slideserver.reports.model import ReportVersion
from slideserver.security.audit import note_subjects
from slideserver.security.principals import STATE_KEY, Principal
from slideserver.services.reports import ReportService

MAX_BODY = 1024 * 1024
"""Largest report body accepted, in bytes."""
MAX_ID = 64

ID_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MAX_ID}
ACCESSION = Param("accession", "The case's accession number", ID_SCHEMA, "path")
REPORT_ID = Param("id", "The report's ID", ID_SCHEMA, "path")
VERSION = Param(
    "version",
    "Which version (1 is the first); the newest by default",
    {"type": "integer", "minimum": 1, "maximum": (1 << 20) - 1},
)
REPORT_HEADERS = {
    "ETag": "The version's revision; send it back in If-Match to edit or sign the draft",
    "Cache-Control": "no-store: a report is never kept by caches",
}
LOCATION = {"Location": "The report's URL, /api/reports/{id}"}
RENDER_ERRORS = (400, 404, 410, 422, 503, 504)
"""What rendering a PDF can answer: its figures read slide regions (bad region, slide gone,
changed, unreadable, storage unavailable or too slow)."""
JSON_BODY_ERRORS = (400, 413)
"""A body that is not JSON, nests too deeply or breaks the report's shape; one over 1 MiB."""


def _report_reply(description: str, headers: dict[str, str] | None = None) -> Reply:
    """A report's JSON answer with its ETag (and ``headers``)."""
    return Reply(
        description, {"application/json": ref("Report")}, {**REPORT_HEADERS, **(headers or {})}
    )


class ReportsUnavailable(BackendUnavailable):
    """This server keeps no reports (its catalog has no database)."""

    code = "reports_unavailable"


class OwnIdentityRequired(Forbidden):
    """Signing needs a signer of one's own, not the open mode's shared anonymous user."""

    code = "signer_identity_required"


def reports_of(request: Request) -> ReportService:
    service: ReportService | None = getattr(request.app.state, "reports", None)
    if service is None:
        raise ReportsUnavailable("this server keeps no reports (its catalog has no database)")
    return service


def _principal(request: Request) -> Principal:
    principal: Principal = request.scope["state"][STATE_KEY]
    return principal


def _signer(request: Request) -> str:
    principal = _principal(request)
    if principal.demo:
        raise OwnIdentityRequired(
            "signing needs your own identity: the open mode's anonymous user cannot sign; "
            "run the server with auth=tokens or OIDC and sign in as yourself"
        )
    return principal.subject


def _id(request: Request, name: str = "id") -> str:
    value = str(request.path_params[name]).strip()
    if not value or len(value) > MAX_ID or not value.isprintable():
        raise BadRequest(f"{name} must be 1 to {MAX_ID} printable characters")
    return value


async def _json(request: Request) -> Any:
    try:
        body = await read_body(request, MAX_BODY)
    except BodyTooLarge:
        raise TooLarge(f"a report body is at most {MAX_BODY} bytes") from None
    if not body.strip():
        return {}
    try:
        return parse_json(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body is not JSON") from None


async def _answer(
    request: Request, service: ReportService, version: ReportVersion, status: int = 200
) -> Response:
    """The report's JSON, with its ETag; the audit row names its case and patient."""
    case = await service.case_of(version)
    patient = case.patient.identifier if case is not None and case.patient else None
    note_subjects(request.scope, version.accession, patient)
    return JSONResponse(
        version.to_json(),
        status_code=status,
        headers={"ETag": version.etag, "Cache-Control": "no-store"},
    )


def _version_param(request: Request) -> int | None:
    raw = request.query_params.get("version")
    if raw is None:
        return None
    if not raw.isdigit() or not 0 < int(raw) < 1 << 20:
        raise BadRequest("version must be a positive integer")
    return int(raw)


@operation(
    "Start a report of a case: a draft",
    tag="reports",
    params=(
        ACCESSION,
        Param(
            "Idempotency-Key",
            "The client's ID of this creation: a repeat answers the report the first one made",
            {"type": "string", "minLength": 1, "maxLength": 100},
            "header",
        ),
    ),
    body=Body(
        {"application/json": ref("ReportNew")},
        "The draft's first text (an empty body makes an empty draft)",
        required=False,
    ),
    replies={
        201: _report_reply("The new draft", LOCATION),
        200: _report_reply("The report an earlier request with the same key made", LOCATION),
    },
    errors=(*JSON_BODY_ERRORS, 404, 503),
)
async def create_report(request: Request) -> Response:
    """Create a draft report of a case, written by the caller.

    Idempotent by the ``Idempotency-Key`` header (or the body's ``identifier``): a retry after a
    lost answer gets the first report back with 200, whatever its state now.
    """
    service = reports_of(request)
    accession = _id(request, "accession")
    data = await _json(request)
    identifier = request.headers.get("idempotency-key")
    if identifier is None and isinstance(data, dict) and isinstance(data.get("identifier"), str):
        identifier = data["identifier"]
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k != "identifier"}
    if identifier is not None and not (0 < len(identifier) <= 100 and identifier.isprintable()):
        raise BadRequest("Idempotency-Key must be 1 to 100 printable characters")
    author = _principal(request).subject
    version, created = await service.create(accession, data, author, identifier)
    answer = await _answer(request, service, version, 201 if created else 200)
    answer.headers["Location"] = f"/api/reports/{version.report_id}"
    return answer


@operation(
    "The reports of a case",
    tag="reports",
    params=(ACCESSION,),
    replies={
        200: Reply(
            "The newest version of each report",
            {"application/json": ref("ReportList")},
            {"Cache-Control": "no-store: never kept by caches"},
        )
    },
    errors=(400, 404, 503),
)
async def list_reports(request: Request) -> Response:
    """The reports of a case, each at its newest version, oldest report first."""
    service = reports_of(request)
    accession = _id(request, "accession")
    found = await service.list_case(accession)
    case = await service.case(accession)
    note_subjects(request.scope, accession, case.patient.identifier if case.patient else None)
    return JSONResponse(
        {"accession": case.accession, "items": [v.to_json() for v in found]},
        headers={"Cache-Control": "no-store"},
    )


@operation(
    "A report",
    tag="reports",
    params=(REPORT_ID, VERSION),
    replies={200: _report_reply("The report's version")},
    errors=(400, 404, 503),
)
async def get_report(request: Request) -> Response:
    """One version of a report; its ``ETag`` is what ``PUT`` and ``sign`` take in If-Match."""
    service = reports_of(request)
    version = await service.get(_id(request), _version_param(request))
    return await _answer(request, service, version)


@operation(
    "Edit a draft",
    tag="reports",
    params=(
        REPORT_ID,
        Param("If-Match", "The draft's ETag, as last read", STRING, "header", True),
    ),
    body=Body(
        {"application/json": ref("ReportFields")},
        "The fields to change; the others are kept",
        required=False,
    ),
    replies={200: _report_reply("The edited draft, with its new ETag")},
    errors=(*JSON_BODY_ERRORS, 404, 409, 412, 428, 503),
)
async def put_report(request: Request) -> Response:
    """Replace the fields given of a draft: 428 without If-Match, 412 when the draft changed
    since it was read, 409 once it is signed (amend it instead)."""
    service = reports_of(request)
    report_id = _id(request)
    etag = request.headers.get("if-match")
    if etag is None:
        raise PreconditionRequired("send the draft's ETag in If-Match (from GET /api/reports/ID)")
    data = await _json(request)
    version = await service.update(report_id, data, etag)
    return await _answer(request, service, version)


@operation(
    "Sign the draft: it becomes final and is sent to the delivery targets",
    tag="reports",
    params=(
        REPORT_ID,
        Param("If-Match", "Sign only if the draft is still this ETag", STRING, "header"),
    ),
    replies={200: _report_reply("The signed (final) version")},
    errors=(*RENDER_ERRORS, 409, 412),
)
async def sign_report(request: Request) -> Response:
    """Sign the draft as it is (or as If-Match names it): its PDF is made and stored with the
    final version, and its deliveries are queued. The signer must be a user of their own: the
    anonymous user of ``auth=open`` gets 403 ``signer_identity_required``."""
    service = reports_of(request)
    report_id = _id(request)
    signer = _signer(request)
    version = await service.sign(report_id, signer, request.headers.get("if-match"))
    return await _answer(request, service, version)


@operation(
    "Amend or correct a signed report: a new signed version",
    tag="reports",
    params=(REPORT_ID,),
    body=Body(
        {"application/json": ref("ReportAmendment")},
        "Why, and the fields that change (the others are kept)",
    ),
    replies={201: _report_reply("The new signed version")},
    errors=(*RENDER_ERRORS, 409, 412, 413),
)
async def amend_report(request: Request) -> Response:
    """Add a signed ``amended`` or ``corrected`` version with its reason; earlier versions are
    kept. 409 while the report is still a draft; 403 for the anonymous user of ``auth=open``."""
    service = reports_of(request)
    report_id = _id(request)
    signer = _signer(request)
    data = await _json(request)
    version = await service.amend(report_id, data, signer)
    return await _answer(request, service, version, 201)


@operation(
    "A report's PDF",
    tag="reports",
    params=(REPORT_ID, VERSION),
    replies={
        200: Reply(
            "The signed PDF exactly as delivered, or a draft's preview made now",
            {"application/pdf": {"type": "string", "format": "binary"}},
            {
                "Content-Disposition": 'inline; filename="report-ID-vN.pdf"',
                "Cache-Control": "no-store: never kept by caches",
            },
        )
    },
    errors=RENDER_ERRORS,
)
async def report_pdf(request: Request) -> Response:
    """The PDF of a version: a signed one exactly as it was delivered, a draft's made now and
    marked as a preview."""
    service = reports_of(request)
    version, pdf = await service.pdf(_id(request), _version_param(request))
    case = await service.case_of(version)
    note_subjects(
        request.scope,
        version.accession,
        case.patient.identifier if case is not None and case.patient else None,
    )
    name = f"report-{version.report_id}-v{version.version}.pdf"
    return Response(
        pdf,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'inline; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )


@operation(
    "Retry a report's failed deliveries now",
    tag="reports",
    params=(REPORT_ID,),
    replies={
        200: _report_reply(
            "The report, its deliveries due again",
            {"X-Deliveries-Retried": "How many failing or given-up deliveries were requeued"},
        )
    },
    errors=(400, 404, 503),
)
async def retry_deliveries(request: Request) -> Response:
    """Make the report's failing and given-up deliveries due now (after fixing a target)."""
    service = reports_of(request)
    report_id = _id(request)
    count = await service.retry(report_id)
    version = await service.get(report_id)
    answer = await _answer(request, service, version)
    answer.headers["X-Deliveries-Retried"] = str(count)
    return answer


def routes() -> list[Route]:
    """Return the report routes."""
    return [
        Route("/api/cases/{accession}/reports", list_reports, methods=["GET"]),
        Route("/api/cases/{accession}/reports", create_report, methods=["POST"]),
        Route("/api/reports/{id}", get_report, methods=["GET"]),
        Route("/api/reports/{id}", put_report, methods=["PUT"]),
        Route("/api/reports/{id}/sign", sign_report, methods=["POST"]),
        Route("/api/reports/{id}/amend", amend_report, methods=["POST"]),
        Route("/api/reports/{id}/pdf", report_pdf, methods=["GET"]),
        Route("/api/reports/{id}/deliveries/retry", retry_deliveries, methods=["POST"]),
    ]


__all__ = ["routes"]
