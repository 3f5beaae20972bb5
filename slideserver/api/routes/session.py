"""The viewer's session: ``POST /api/session`` trades a bearer token for a cookie.

- ``POST /api/session`` with ``Authorization: Bearer TOKEN`` (API token or OIDC JWT): sets the
  signed ``slideserver_session`` cookie (HttpOnly, SameSite=Strict, Secure under TLS) and answers
  who is logged in. A cookie cannot open another session: the bearer header is required.
- ``GET /api/session``: who is logged in (``subject``, ``role``, ``via``).
- ``DELETE /api/session``: logs out (clears the cookie); with the cookie, it needs the
  ``X-Requested-With`` header like every cookie-authenticated change.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from slideserver.api.errors import error_response
from slideserver.security.principals import Principal
from slideserver.security.service import Security, principal_of
from slideserver.security.session import clear_cookie

NO_STORE = {"Cache-Control": "no-store"}


def _who(principal: Principal) -> dict[str, object]:
    return {
        "subject": principal.subject,
        "role": principal.role,
        "via": principal.method,
        "collections": list(principal.collections),
    }


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


async def whoami(request: Request) -> Response:
    return JSONResponse(_who(principal_of(request)), headers=NO_STORE)


async def login(request: Request) -> Response:
    principal = principal_of(request)
    security: Security = request.app.state.security
    if principal.method not in ("token", "oidc"):
        return error_response(400, "bad_request", "log in with Authorization: Bearer TOKEN")
    response = JSONResponse(_who(principal), headers=NO_STORE)
    response.headers["Set-Cookie"] = security.signer.set_cookie(
        security.signer.issue(principal), _secure(request)
    )
    return response


async def logout(request: Request) -> Response:
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
