"""The viewer's session: ``POST /api/session`` trades a bearer token for a cookie.

- ``POST /api/session`` with ``Authorization: Bearer TOKEN`` (API token or OIDC JWT): records a
  server-side session and sets the signed ``slideserver_session`` cookie naming it (HttpOnly,
  SameSite=Strict, Secure under TLS or ``behind_tls_proxy``), and answers who is logged in. A
  cookie cannot open another session: the bearer header is required.
- ``GET /api/session``: who is logged in (``subject``, ``role``, ``via``).
- ``DELETE /api/session``: logs out: revokes the cookie's session on the server (a copy of the
  cookie is refused from then on) and clears the cookie; with the cookie, it needs the
  ``X-Requested-With`` header like every cookie-authenticated change.
"""

from __future__ import annotations

from anyio.to_thread import run_sync
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from slideserver.api.errors import error_response
from slideserver.api.openapi import Reply, json_reply, operation
from slideserver.security.authority import Security, principal_of
from slideserver.security.principals import Principal
from slideserver.security.session import clear_cookie, cookie_value

NO_STORE = {"Cache-Control": "no-store"}


WHO = {
    "type": "object",
    "required": ["subject", "role", "via"],
    "properties": {
        "subject": {"type": "string"},
        "role": {"type": "string"},
        "via": {"type": "string", "description": "token, oidc, session or open"},
        "collections": {"type": "array", "items": {"type": "string"}},
    },
}
SET_COOKIE = {"Set-Cookie": "The session cookie (HttpOnly, SameSite=Strict)"}


def _who(principal: Principal) -> dict[str, object]:
    return {
        "subject": principal.subject,
        "role": principal.role,
        "via": principal.method,
        "collections": list(principal.collections),
    }


def _secure(request: Request) -> bool:
    security: Security = request.app.state.security
    return request.url.scheme == "https" or security.settings.behind_tls_proxy


@operation("Who is logged in", tag="security", replies={200: json_reply("The caller", WHO)})
async def whoami(request: Request) -> Response:
    """The principal the request's credentials name."""
    return JSONResponse(_who(principal_of(request)), headers=NO_STORE)


@operation(
    "Log in: trade a bearer token for a session cookie",
    tag="security",
    replies={200: Reply("Logged in", {"application/json": WHO}, SET_COOKIE)},
    errors=(400, 503),
)
async def login(request: Request) -> Response:
    """Open a server-side session for the bearer token's principal (a cookie cannot)."""
    principal = principal_of(request)
    security: Security = request.app.state.security
    if principal.method not in ("token", "oidc"):
        return error_response(400, "bad_request", "log in with Authorization: Bearer TOKEN")
    sessions = security.sessions
    if sessions is None:
        return error_response(503, "unavailable", "the session store is not open")
    session_id = await run_sync(sessions.open, principal, security.signer.max_age)
    response = JSONResponse(_who(principal), headers=NO_STORE)
    response.headers["Set-Cookie"] = security.signer.set_cookie(
        security.signer.issue(principal, session_id), _secure(request)
    )
    return response


@operation(
    "Log out: end the cookie's session",
    tag="security",
    replies={204: Reply("Logged out; the cookie is cleared", headers=SET_COOKIE)},
)
async def logout(request: Request) -> Response:
    """Revoke the cookie's session on the server and clear the cookie."""
    security: Security = request.app.state.security
    cookie = cookie_value(request.headers.get("cookie", ""))
    ended = security.signer.verify(cookie) if cookie else None
    if ended is not None and ended.session_id and security.sessions is not None:
        await run_sync(security.sessions.revoke, ended.session_id)
    response = Response(status_code=204, headers=NO_STORE)
    response.headers["Set-Cookie"] = clear_cookie(_secure(request))
    return response


def routes() -> list[Route]:
    """Return the session routes."""
    return [
        Route("/api/session", whoami, methods=["GET"]),
        Route("/api/session", login, methods=["POST"]),
        Route("/api/session", logout, methods=["DELETE"]),
    ]
