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


async def create_report(request: Request) -> Response:
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


async def list_reports(request: Request) -> Response:
    service = reports_of(request)
    accession = _id(request, "accession")
    found = await service.list_case(accession)
    case = await service.case(accession)
    note_subjects(request.scope, accession, case.patient.identifier if case.patient else None)
    return JSONResponse(
        {"accession": case.accession, "items": [v.to_json() for v in found]},
        headers={"Cache-Control": "no-store"},
    )


async def get_report(request: Request) -> Response:
    service = reports_of(request)
    version = await service.get(_id(request), _version_param(request))
    return await _answer(request, service, version)


async def put_report(request: Request) -> Response:
    service = reports_of(request)
    report_id = _id(request)
    etag = request.headers.get("if-match")
    if etag is None:
        raise PreconditionRequired("send the draft's ETag in If-Match (from GET /api/reports/ID)")
    data = await _json(request)
    version = await service.update(report_id, data, etag)
    return await _answer(request, service, version)


async def sign_report(request: Request) -> Response:
    service = reports_of(request)
    report_id = _id(request)
    signer = _signer(request)
    version = await service.sign(report_id, signer, request.headers.get("if-match"))
    return await _answer(request, service, version)


async def amend_report(request: Request) -> Response:
    service = reports_of(request)
    report_id = _id(request)
    signer = _signer(request)
    data = await _json(request)
    version = await service.amend(report_id, data, signer)
    return await _answer(request, service, version, 201)


async def report_pdf(request: Request) -> Response:
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


async def retry_deliveries(request: Request) -> Response:
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
