"""Cross-origin access (CORS) to the image APIs, for viewers served from another origin.

Only the routes marked ``cors`` in the policy table (:data:`slideserver.api.policy.POLICY`:
info.json, IIIF images, ``.dzi`` and Deep Zoom tiles) answer other origins; every other route
stays same-origin. Credentials are never allowed cross-origin: no
``Access-Control-Allow-Credentials``, so a browser never reads an answer its cookies earned (a
page on another origin must send ``Authorization: Bearer TOKEN``), and the authentication step
refuses a session cookie on a request from another origin
(:func:`slideserver.api.auth.authenticate_scope`).

Preflights (``OPTIONS``) are answered here, before authentication (browsers send no credentials
on them) and before the router, so they never reach a route's guard: answering them opens
nothing, GET and HEAD still need the rule's roles.

Starlette's ``CORSMiddleware`` was not used: it applies to every route (the policy table scopes
this one), answers refusals in plain text rather than the JSON error body, adds the allow-origin
header only when the request names an origin without a ``Vary: Origin`` (a shared cache can then
hand a header-less copy to a cross-origin viewer), and echoes the origin of any request carrying
a cookie. The tile lane also needs the header step as a plain function
(:meth:`CorsPolicy.answer_headers` with :func:`send_with_headers`), as the middleware uses it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from slideserver.api.errors import error_response
from slideserver.settings import Settings

ALLOW_METHODS = ("GET", "HEAD", "OPTIONS")
ALLOW_HEADERS = (
    "Authorization",
    "Accept",
    "Accept-Language",
    "Content-Language",
    "Content-Type",
    "Cache-Control",
    "If-None-Match",
    "X-Request-ID",
)
"""Request headers other origins may send: the bearer token and what viewers' HTTP clients add.

``X-Requested-With`` is deliberately absent: cookie-authenticated writes require it as proof
that the request is same-origin (:func:`slideserver.security.session.csrf_ok`).
"""
EXPOSE_HEADERS = ("ETag", "Link", "WWW-Authenticate", "X-Request-ID")
"""Answer headers a cross-origin script may read besides the always-readable ones."""
MAX_AGE = 7200
"""Seconds a browser may reuse a preflight answer (Chromium caps it at two hours)."""

ANY = "*"
NONE = "none"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_ORIGIN = b"origin"
_REQUEST_METHOD = b"access-control-request-method"
_REQUEST_HEADERS = b"access-control-request-headers"


class CorsConfigError(ValueError):
    """``cors_origins`` names something that is not an origin."""


def normalize_origin(text: str) -> str:
    """Return ``text`` as a browser serializes an origin (``scheme://host[:port]``).

    Case is folded, a default port and a trailing slash dropped; anything else (a path, a query,
    user info, another scheme) is refused with :class:`CorsConfigError`.
    """
    raw = text.strip()
    try:
        parts = urlsplit(raw.lower().removesuffix("/"))
        port = parts.port
    except ValueError as exc:
        raise CorsConfigError(f"{raw!r} is not an origin: {exc}") from None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise CorsConfigError(f"{raw!r} is not an origin: give scheme://host[:port]")
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        raise CorsConfigError(
            f"{raw!r} is not an origin: no path, query or user, only scheme://host[:port]"
        )
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is not None and port != _DEFAULT_PORTS[parts.scheme]:
        host = f"{host}:{port}"
    return f"{parts.scheme}://{host}"


def parse_origins(value: str, auth: str) -> frozenset[str] | None:
    """Return the allowed origins of a ``cors_origins`` setting; ``None`` means any (``*``).

    Empty means the default for ``auth``: any origin in ``open`` mode (the IIIF convention; the
    image APIs answer everyone there anyway), none with ``tokens`` or ``oidc``, where only the
    origins an operator lists are answered. ``none`` allows no origin in any mode.
    """
    text = value.strip()
    if not text:
        return None if auth == "open" else frozenset()
    if text == ANY:
        return None
    if text.lower() == NONE:
        return frozenset()
    entries = [entry for entry in text.split(",") if entry.strip()]
    if any(entry.strip() in (ANY, NONE) for entry in entries):
        raise CorsConfigError("give * or none alone, not in a list of origins")
    return frozenset(normalize_origin(entry) for entry in entries)


def cors_templates() -> tuple[str, ...]:
    """Return the route templates the policy table opens to other origins."""
    from slideserver.api.policy import POLICY

    return tuple(path for path, rule in POLICY.items() if rule.cors)


@dataclass(frozen=True)
class CorsPolicy:
    """Which origins may use which routes, and the headers that say so."""

    origins: frozenset[str] | None
    """Allowed origins; ``None``: any (answered ``*``)."""
    paths: tuple[re.Pattern[str], ...]
    """The routes open to other origins, as their router regexes."""

    @classmethod
    def build(cls, cors_origins: str, auth: str) -> CorsPolicy:
        paths = tuple(compile_path(template)[0] for template in cors_templates())
        return cls(parse_origins(cors_origins, auth), paths)

    @property
    def enabled(self) -> bool:
        """Tell whether any origin at all may use the image APIs."""
        return self.origins is None or bool(self.origins)

    def applies(self, path: str) -> bool:
        """Tell whether ``path`` is a route open to other origins."""
        return any(pattern.match(path) for pattern in self.paths)

    def allows(self, origin: bytes | None) -> bool:
        """Tell whether a request's ``Origin`` may read the answers."""
        if origin is None:
            return False
        return self.origins is None or origin.decode("latin-1") in self.origins

    def answer_headers(self, origin: bytes | None) -> list[tuple[bytes, bytes]]:
        """Return the CORS headers of an answer (not a preflight) on a route open to others.

        With ``*`` they are the same for every request. With a list of origins the answer
        depends on ``Origin``, so it always says ``Vary: Origin`` for caches, and names the
        origin only when it is allowed.
        """
        if self.origins is None:
            return [_ALLOW_ANY, _EXPOSE]
        if not self.origins:
            return []
        if origin is not None and self.allows(origin):
            return [(b"access-control-allow-origin", origin), _EXPOSE, _VARY]
        return [_VARY]

    def preflight(self, scope: Scope) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Answer an ``OPTIONS`` request on a route open to others: status, headers, body.

        No authentication: browsers send no credentials on a preflight, and answering it grants
        nothing (GET and HEAD are still checked against the policy). An origin, method or
        header not allowed gets a JSON 403 without CORS headers, which the browser refuses.
        """
        request = {name: value for name, value in scope["headers"] if name in _PREFLIGHT_HEADERS}
        origin = request.get(_ORIGIN)
        vary = [] if self.origins is None else [_VARY_PREFLIGHT]
        if origin is None:  # a plain OPTIONS, not a browser's preflight
            return 204, [_ALLOW, *vary], b""
        refusal = self._refusal(origin, request.get(_REQUEST_METHOD), request.get(_REQUEST_HEADERS))
        if refusal:
            body = error_response(403, "cors_refused", refusal).body
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *vary,
            ]
            return 403, headers, bytes(body)
        allow_origin = b"*" if self.origins is None else origin
        headers = [
            _ALLOW,
            (b"access-control-allow-origin", allow_origin),
            (b"access-control-allow-methods", _METHODS),
            (b"access-control-allow-headers", _HEADERS),
            (b"access-control-max-age", str(MAX_AGE).encode()),
            *vary,
        ]
        return 204, headers, b""

    def _refusal(self, origin: bytes, method: bytes | None, headers: bytes | None) -> str | None:
        if not self.allows(origin):
            return "this origin may not use the image APIs (see SLIDESERVER_CORS_ORIGINS)"
        if method is not None and method.decode("latin-1").strip() not in ALLOW_METHODS:
            return "only GET, HEAD and OPTIONS are allowed from other origins"
        wanted = headers.decode("latin-1").lower() if headers else ""
        refused = sorted({h.strip() for h in wanted.split(",") if h.strip()} - _HEADER_SET)
        if refused:
            return f"request headers not allowed from other origins: {', '.join(refused)[:200]}"
        return None


_ALLOW = (b"allow", ", ".join(ALLOW_METHODS).encode())
_ALLOW_ANY = (b"access-control-allow-origin", b"*")
_EXPOSE = (b"access-control-expose-headers", ", ".join(EXPOSE_HEADERS).encode())
_VARY = (b"vary", b"Origin")
_VARY_PREFLIGHT = (
    b"vary",
    b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
)
_METHODS = ", ".join(ALLOW_METHODS).encode()
_HEADERS = ", ".join(ALLOW_HEADERS).encode()
_HEADER_SET = frozenset(h.lower() for h in ALLOW_HEADERS)
_PREFLIGHT_HEADERS = frozenset({_ORIGIN, _REQUEST_METHOD, _REQUEST_HEADERS})


@functools.lru_cache(maxsize=8)
def cors_policy(settings: Settings) -> CorsPolicy:
    """Return the CORS policy of ``settings`` (raises :class:`CorsConfigError` when invalid)."""
    return CorsPolicy.build(settings.cors_origins, settings.auth)


def send_with_headers(send: Send, extra: Sequence[tuple[bytes, bytes]]) -> Send:
    """Return ``send`` adding ``extra`` to the answer's headers (a ``Vary`` is merged)."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            for name, value in extra:
                if name == b"vary":
                    _merge_vary(headers, value)
                else:
                    headers.append((name, value))
            message["headers"] = headers
        await send(message)

    return sending


def _merge_vary(headers: list[tuple[bytes, bytes]], value: bytes) -> None:
    for index, (name, present) in enumerate(headers):
        if name.lower() == b"vary":
            headers[index] = (name, present + b", " + value)
            return
    headers.append((b"vary", value))


class CorsMiddleware:
    """Answer preflights and add the CORS headers on the routes open to other origins.

    It runs first, so every answer on those routes carries the headers, the 500 of an
    unexpected error included (a viewer then sees the status, not a CORS failure).
    """

    def __init__(self, app: ASGIApp, policy: CorsPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.policy.applies(scope["path"]):
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            status, headers, body = self.policy.preflight(scope)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        origin = None
        for name, value in scope["headers"]:
            if name == _ORIGIN:
                origin = value
                break
        extra = self.policy.answer_headers(origin)
        await self.app(scope, receive, send_with_headers(send, extra) if extra else send)
