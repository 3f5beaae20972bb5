"""``GET /api/audit``: the audit trail, newest first, filtered (admin only, see the policy).

Query parameters: ``subject``, ``role``, ``kind`` (request, attempt, tiles), ``action`` (substring
of ``METHOD /template``), ``slide``, ``case`` (or ``accession``), ``patient`` (the MRN),
``resource`` (``associated/label``), ``status``, ``since`` and ``until`` (ISO dates or
date-times), ``limit`` (1-1000, default 100) and ``cursor`` (from ``next``). Slide reads carry
the case and patient the slide was linked to when it was read, so ``patient=MRN`` answers who
saw that patient's slides.
"""

from __future__ import annotations

from datetime import datetime

from anyio.to_thread import run_sync
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from slideserver.api.openapi import Param, json_reply, operation
from slideserver.api.params import parse_int
from slideserver.errors import BackendUnavailable, BadRequest
from slideserver.security.audit import AuditQuery
from slideserver.security.authority import Security


def _when(name: str, raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw.strip())
    except ValueError:
        raise BadRequest(f"{name} must be an ISO date or date-time") from None


def _filter(name: str, description: str) -> Param:
    return Param(name, description)


AUDIT_PARAMS = (
    _filter("subject", "Who: `token:NAME`, an OIDC subject, `mllp:PEER`"),
    _filter("role", "admin, pathologist, researcher, lis"),
    _filter("kind", "request, attempt or tiles"),
    _filter("action", "Substring of `METHOD /template`"),
    _filter("slide", "Slide ID"),
    _filter("case", "Accession number"),
    _filter("accession", "Accession number (as `case`)"),
    _filter("patient", "Patient MRN"),
    _filter("resource", "For example `associated/label`"),
    Param("status", "HTTP status", {"type": "integer", "minimum": 100, "maximum": 599}),
    Param("since", "ISO date or date-time", {"type": "string"}),
    Param("until", "ISO date or date-time", {"type": "string"}),
    Param("limit", "Page size", {"type": "integer", "minimum": 1, "maximum": 1000}),
    Param("cursor", "The previous page's `next`", {"type": "integer", "minimum": 1}),
)
AUDIT_PAGE = {
    "type": "object",
    "required": ["items", "next"],
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "at", "kind", "subject", "role", "action"],
                "properties": {
                    "id": {"type": "integer"},
                    "at": {"type": ["string", "null"]},
                    "kind": {"type": "string"},
                    "subject": {"type": "string"},
                    "role": {"type": "string"},
                    "action": {"type": "string"},
                    "status": {"type": ["integer", "null"]},
                },
            },
        },
        "next": {"type": ["string", "null"]},
    },
}


@operation(
    "The audit trail, newest first",
    tag="security",
    params=AUDIT_PARAMS,
    replies={200: json_reply("One page of audit rows", AUDIT_PAGE)},
    errors=(400, 503),
)
async def list_audit(request: Request) -> Response:
    """Who read or changed what, and when; ``patient=MRN`` answers who saw a patient's slides."""
    security: Security = request.app.state.security
    audit = security.audit
    if audit is None:
        raise BackendUnavailable("the audit trail is not open")
    params = request.query_params
    status = params.get("status")
    cursor = params.get("cursor")
    query = AuditQuery(
        subject=params.get("subject", "")[:200],
        role=params.get("role", "")[:20],
        kind=params.get("kind", "")[:20],
        action=params.get("action", "")[:200],
        slide_id=params.get("slide", "")[:100],
        case_id=(params.get("case") or params.get("accession") or "")[:100],
        patient_id=params.get("patient", "")[:100],
        resource=params.get("resource", "")[:100],
        status=parse_int("status", status, 0, 100, 599) if status else None,
        since=_when("since", params.get("since")),
        until=_when("until", params.get("until")),
        before_id=parse_int("cursor", cursor, 0, 1, 1 << 62) if cursor else None,
    )
    limit = parse_int("limit", params.get("limit"), 100, 1, 1000)
    # Show tile reads up to now: pending summaries are written first (a window read here
    # continues in a new row).
    await run_sync(lambda: audit.flush_tiles(everything=True))
    rows = await run_sync(audit.query, query, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return JSONResponse(
        {
            "items": [r.to_json() for r in rows],
            "next": str(rows[-1].id) if more and rows else None,
        },
        headers={"Cache-Control": "no-store"},
    )


def routes() -> list[Route]:
    """Return the audit route."""
    return [Route("/api/audit", list_audit, methods=["GET"])]
