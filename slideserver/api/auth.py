"""Pure-ASGI authentication and the per-route guard that enforces the policy and audits.

:class:`AuthenticationMiddleware` runs before routing: it turns the ``Authorization`` header or
the session cookie into a :class:`Principal` (or a reason for refusal) in the scope's state
(:func:`authenticate_scope`, which the tile lane calls too). It refuses nothing itself: public
routes stay reachable with bad credentials. :class:`RouteGuard` wraps each route (see
:func:`slideserver.api.policy.secure_routes`), so it knows the route's rule and path
parameters. Through :meth:`RouteAccess.admit` (shared with the tile lane) it answers 401/403,
applies collection limits, marks image responses ``private`` for caching and counts pixel
reads; it writes the request audit trail, failing closed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from anyio.to_thread import run_sync
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from slideserver.api.errors import error_response, error_status
from slideserver.security.audit import NOTED_SUBJECTS, AuditEvent, AuditUnavailable
from slideserver.security.authority import AuthFailure
from slideserver.security.principals import ERROR_KEY, STATE_KEY, Principal
from slideserver.security.session import csrf_ok

if TYPE_CHECKING:
    from slideserver.api.policy import Rule
    from slideserver.security.authority import Security

log = logging.getLogger("slideserver.security")

MAX_ID = 100


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


CREDENTIAL_HEADERS = frozenset({b"authorization", b"cookie", b"origin", b"host", b"sec-fetch-site"})
"""The headers authentication reads: the credentials, and where a cookie's request comes from."""

CROSS_ORIGIN_COOKIE = (
    "session cookies are not accepted from pages on other origins: send Authorization: Bearer TOKEN"
)


def credential_headers(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Return the headers that carry credentials (the only ones authentication reads).

    ASGI servers give header names in lower case; decoding every header of every tile request
    (a browser sends a dozen) would cost more than answering a cached tile.
    """
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in headers
        if name in CREDENTIAL_HEADERS
    }


def from_other_origin(headers: dict[str, str]) -> bool:
    """Tell whether the browser says the request comes from a page on another origin.

    ``Origin`` (sent on every cross-origin fetch) must name this server's host, as the CSRF
    check requires of writes; ``Sec-Fetch-Site: cross-site`` counts too.
    """
    if headers.get("sec-fetch-site") == "cross-site":
        return True
    origin = headers.get("origin")
    if origin is None:
        return False
    try:
        return origin == "null" or urlsplit(origin).netloc != headers.get("host", "")
    except ValueError:  # not a URL: no origin a browser sends
        return True


async def authenticate_scope(
    security: Security, scope: Scope, headers: Iterable[tuple[bytes, bytes]]
) -> None:
    """Put the caller's principal (or why it was refused) in the scope's state.

    ``headers`` are the request's raw headers, or just those the caller picked out already (the
    tile lane reads all it needs in one pass); only the credential headers are decoded. A
    session cookie on a request from another origin is ignored (the CORS policy never lets such
    a page read the answer, and SameSite=Strict keeps browsers from sending it; this holds when
    a browser does not): such a request is anonymous, refused with a reason on closed routes.
    """
    credentials = credential_headers(headers)
    refused_cookie = "cookie" in credentials and from_other_origin(credentials)
    if refused_cookie:
        del credentials["cookie"]
    principal, failure = await security.authenticate(credentials)
    if refused_cookie and principal is None and failure is None:
        failure = AuthFailure(401, CROSS_ORIGIN_COOKIE)
    state = scope.setdefault("state", {})
    state[STATE_KEY] = principal
    state[ERROR_KEY] = failure


class AuthenticationMiddleware:
    """Attach the caller's principal (or why it was refused) to every HTTP request."""

    def __init__(self, app: ASGIApp, security: Security) -> None:
        self.app = app
        self.security = security

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await authenticate_scope(self.security, scope, scope.get("headers", ()))
        elif scope["type"] == "websocket":
            # No websocket route exists; refuse until one is secured like the HTTP routes.
            await send({"type": "websocket.close", "code": 1008})
            return
        await self.app(scope, receive, send)


class RouteAccess:
    """One policy row applied to a request: who may pass, and what they may see."""

    def __init__(self, rule: Rule, template: str, security: Security) -> None:
        self.rule = rule
        self.template = template
        self.security = security

    async def admit(self, scope: Scope) -> Response | None:
        """Return the error answer for a caller the rule refuses, or ``None`` to proceed.

        Proceeding marks image answers ``private`` for caches when the caller is a real user,
        and, on routes audited as ``tiles``, counts the pixel read: before the route runs, so
        every answer past the guard counts, whatever its status (the tile lane does the same).
        """
        state = scope.setdefault("state", {})
        principal: Principal | None = state.get(STATE_KEY)
        method: str = scope["method"]
        if principal is None:
            failure: AuthFailure | None = state.get(ERROR_KEY)
            status, detail = (failure.status, failure.detail) if failure else (401, "")
            response = error_response(
                status,
                "unauthorized" if status == 401 else "unavailable",
                detail
                or "authentication required: send Authorization: Bearer TOKEN or a session cookie",
            )
            if status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="slideserver"'
            return response
        if principal.role not in self.rule.roles_for(method) and not (
            self.rule.demo and principal.demo
        ):
            detail = f"the {principal.role} role may not {method} {self.template}"
            return error_response(403, "forbidden", detail)
        if principal.method == "session" and not csrf_ok(method, _headers(scope)):
            detail = "cookie-authenticated changes need the X-Requested-With header, same origin"
            return error_response(403, "csrf_check_failed", detail)
        if not principal.demo:
            state["private_cache"] = True
        slide_id = scope.get("path_params", {}).get("slide_id")
        if (
            principal.collections
            and isinstance(slide_id, str)
            and not await self.security.slide_visible(principal, slide_id)
        ):
            return error_response(404, "slide_not_found", f"no slide with id {slide_id[:MAX_ID]!r}")
        audit = self.security.audit
        if self.rule.audit == "tiles" and isinstance(slide_id, str) and audit is not None:
            slide_id = slide_id[:MAX_ID]
            security = self.security
            subjects = security.known_subjects(slide_id) or await security.slide_subjects(slide_id)
            audit.tile_read(principal, slide_id, _client(scope), subjects)  # no I/O
        return None


class RouteGuard:
    """Enforce one policy row around one route's ASGI app."""

    def __init__(self, app: ASGIApp, rule: Rule, template: str, security: Security) -> None:
        self.app = app
        self.rule = rule
        self.template = template
        self.security = security
        self.access = RouteAccess(rule, template, security)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.rule.public:
            await self.app(scope, receive, send)
            return
        refusal = await self.access.admit(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
        elif self.rule.audit == "request":
            await self._audited(scope, receive, send, scope["state"][STATE_KEY])
        else:
            await self.app(scope, receive, send)

    async def _subjects(self, scope: Scope) -> _Subjects:
        """What the request concerns: from its URL, and for a slide its case and patient now."""
        slide, case, patient = _subjects(scope, self.template)
        if slide is not None and case is None and patient is None:
            case, patient = await self.security.slide_subjects(slide)
        return slide, case, patient

    def _event(
        self,
        scope: Scope,
        principal: Principal,
        kind: str,
        status: int | None,
        subjects: _Subjects,
    ) -> AuditEvent:
        slide, case, patient = subjects
        noted = scope.get("state", {}).get(NOTED_SUBJECTS)
        if noted is not None:  # what the route found fills in what the URL does not name
            case, patient = case or _clip(noted[0]), patient or _clip(noted[1])
        return AuditEvent(
            at=datetime.now(UTC),
            kind=kind,
            subject=principal.subject,
            role=principal.role,
            token_name=principal.token_name,
            action=f"{scope['method']} {self.template}",
            method=scope["method"],
            slide_id=slide,
            case_id=case,
            patient_id=patient,
            resource=_resource(scope, self.template),
            client=_client(scope),
            status=status,
            request_id=str(scope.get("state", {}).get("request_id", ""))[:64] or None,
        )

    async def _write(self, event: AuditEvent) -> bool:
        audit = self.security.audit
        if audit is None:
            return False
        try:
            await run_sync(audit.write, event)
        except AuditUnavailable:
            return False
        return True

    async def _audited(
        self, scope: Scope, receive: Receive, send: Send, principal: Principal
    ) -> None:
        """Run the route; its answer leaves only once its audit row is stored (else 503)."""
        unavailable = error_response(
            503, "audit_unavailable", "the audit trail cannot be written; try again later"
        )
        writes = scope["method"] not in ("GET", "HEAD", "OPTIONS")
        subjects = await self._subjects(scope)
        attempt = self._event(scope, principal, "attempt", None, subjects)
        if writes and not await self._write(attempt):
            await unavailable(scope, receive, send)
            return
        started = False
        refused = False

        async def send_audited(message: Message) -> None:
            nonlocal started, refused
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
                event = self._event(scope, principal, "request", status, subjects)
                # A server error discloses nothing: when the database is down it goes out as
                # the route's own answer (backend_unavailable), not as audit_unavailable.
                if not await self._write(event) and status < 500:
                    refused = True
                    await unavailable(scope, receive, send)
                    return
            if refused:
                return
            await send(message)

        try:
            await self.app(scope, receive, send_audited)
        except Exception as exc:
            if not started:
                status = error_status(exc)
                await self._write(self._event(scope, principal, "request", status, subjects))
            raise


def _client(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0])[:MAX_ID] if client else None


_Subjects = tuple[str | None, str | None, str | None]
"""The slide, case (accession) and patient (MRN) of an audit row."""


def _clip(value: Any) -> str | None:
    return str(value)[:MAX_ID] if value else None


def _resource(scope: Scope, template: str) -> str | None:
    """What of a slide a request reads, from its route: ``associated/label`` (the template's
    part after ``{slide_id}/``, its parameters filled in); ``None`` for the slide itself."""
    _, found, tail = template.partition("{slide_id}/")
    if not found:
        return None
    params: dict[str, Any] = scope.get("path_params", {})
    parts = [
        str(params.get(part[1:-1], ""))[:MAX_ID] if part.startswith("{") else part
        for part in tail.split("/")
    ]
    return _clip("/".join(parts))


def _subjects(scope: Scope, template: str) -> _Subjects:
    """Return the slide, case (accession) and patient (MRN) a request names, if any."""
    params: dict[str, Any] = scope.get("path_params", {})
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))

    def q(name: str) -> str | None:
        values = query.get(name)
        return values[0] if values else None

    slide = params.get("slide_id")
    case = params.get("accession") or q("accession") or q("identifier")
    patient = q("patient")
    if template.startswith("/fhir/Patient/"):
        patient = params.get("id")

    return _clip(slide), _clip(case), _clip(patient)
