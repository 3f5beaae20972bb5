"""The viewer's session cookie: signed, HttpOnly, SameSite=Strict, Secure under TLS.

The cookie names a server-side session (:mod:`slideserver.security.session_store`) that logout
revokes; the signature only proves the cookie was issued here, the session row that it is
still valid.

A browser cannot attach ``Authorization`` to the image requests of ``<img>`` tags and many
viewers, so the viewer trades a bearer token (API token or OIDC JWT) for this cookie once
(``POST /api/session``). CSRF: SameSite=Strict keeps the cookie off cross-site requests, and any
state-changing request authenticated by the cookie must also carry ``X-Requested-With`` (a header
a cross-site form cannot set, and that no CORS policy of ours allows) and, when the browser sends
``Origin``, an origin matching ``Host``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from urllib.parse import urlsplit

from slideserver.security.principals import Principal

COOKIE_NAME = "slideserver_session"
CSRF_HEADER = "x-requested-with"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
VERIFIED_MEMO = 10_000
"""Cookie values whose signature was checked, kept per process (cleared when full)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Issue and verify session cookie values (HMAC-SHA256 over a JSON payload)."""

    def __init__(self, secret: str, max_age: int) -> None:
        self.key = secret.encode("utf-8") if secret else secrets.token_bytes(32)
        self.max_age = max_age
        self._verified: dict[str, tuple[int, Principal]] = {}

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self.key, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(self, principal: Principal, session_id: str) -> str:
        """Return a cookie value naming ``principal`` and its server-side session until
        ``max_age`` seconds from now."""
        claims = principal.to_claims()
        claims["sid"] = session_id
        claims["exp"] = int(time.time()) + self.max_age
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode("utf-8"))
        return f"{payload}.{self._mac(payload)}"

    def verify(self, value: str) -> Principal | None:
        """Return the principal of a valid, unexpired cookie value, else ``None``.

        The caller must still check the principal's ``session_id`` against the session store.
        A value once verified is remembered with its expiry: every tile of a viewer carries the
        same cookie, and an HMAC, a JSON parse and a principal per tile were a tenth of the
        server's CPU at the shift-change peak. Only exact values that passed are remembered, so
        a forged or altered cookie is always checked in full.
        """
        known = self._verified.get(value)
        if known is not None:
            return known[1] if known[0] >= time.time() else None
        payload, _, mac = value.partition(".")
        if not payload or not mac or not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            claims = json.loads(_unb64(payload))
            expires = int(claims["exp"])
            if expires < time.time():
                return None
            principal = Principal.from_claims(claims)
        except (ValueError, KeyError, TypeError):
            return None
        if len(self._verified) >= VERIFIED_MEMO:
            self._verified.clear()
        self._verified[value] = (expires, principal)
        return principal

    def set_cookie(self, value: str, secure: bool) -> str:
        """Return the ``Set-Cookie`` header value opening a session."""
        flags = f"Max-Age={self.max_age}; Path=/; HttpOnly; SameSite=Strict"
        return f"{COOKIE_NAME}={value}; {flags}" + ("; Secure" if secure else "")


def clear_cookie(secure: bool) -> str:
    """Return the ``Set-Cookie`` header value ending a session."""
    flags = "Max-Age=0; Path=/; HttpOnly; SameSite=Strict"
    return f"{COOKIE_NAME}=; {flags}" + ("; Secure" if secure else "")


def cookie_value(cookie_header: str) -> str | None:
    """Return our session cookie's value from a ``Cookie`` header, if present."""
    for part in cookie_header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE_NAME and value:
            return value
    return None


def csrf_ok(method: str, headers: dict[str, str]) -> bool:
    """Tell whether a cookie-authenticated request may proceed (safe, or provably same-site)."""
    if method in SAFE_METHODS:
        return True
    if not headers.get(CSRF_HEADER):
        return False
    origin = headers.get("origin")
    if origin and origin != "null":
        return urlsplit(origin).netloc == headers.get("host", "")
    return origin != "null"
