"""OIDC bearer tokens: JWTs verified against the issuer's published keys (JWKS).

The accepted algorithms come from the settings only, never from the token's header, and only
asymmetric ones are allowed (no ``none``, no HMAC: a public key must never double as a shared
secret). ``iss``, ``aud``, ``exp`` (and ``nbf`` when present) are checked; the role is read from a
configurable claim. Keys are cached; an unknown ``kid`` refetches the set, at most once per
``min_refresh`` seconds, so forged tokens cannot hammer the identity provider.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import jwt

from slideserver.security.principals import ROLES, Principal, parse_collections
from slideserver.settings import Settings

ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
LEEWAY_SECONDS = 30
"""Clock skew tolerated on ``exp`` and ``nbf``."""
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}

Fetch = Callable[[str], dict[str, Any]]


class InvalidToken(Exception):
    """The bearer JWT is not acceptable; the message names the check, never the claims."""


class KeysUnavailable(Exception):
    """The issuer's keys cannot be fetched."""


def fetch_json(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """GET a JSON document (discovery document or JWKS)."""
    check_key_url(url)
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = json.loads(response.read(1 << 20))
    except Exception as exc:
        raise KeysUnavailable(f"cannot fetch {urlsplit(url).netloc}: {type(exc).__name__}") from exc
    if not isinstance(data, dict):
        raise KeysUnavailable("the issuer answered something other than a JSON object")
    return data


def check_key_url(url: str) -> None:
    """Refuse key URLs that are not HTTPS, except on loopback (tests, a local IdP)."""
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS):
        return
    raise KeysUnavailable("OIDC discovery and JWKS URLs must be https (or http on loopback)")


def parse_algorithms(text: str) -> tuple[str, ...]:
    """Return the configured algorithms; raise ``ValueError`` for unsafe or unknown ones."""
    algorithms = tuple(a.strip() for a in text.split(",") if a.strip())
    bad = [a for a in algorithms if a not in ASYMMETRIC]
    if not algorithms or bad:
        raise ValueError(f"oidc_algorithms must list asymmetric JWT algorithms ({bad or 'none'})")
    return algorithms


class JwksCache:
    """The issuer's signing keys, fetched lazily, cached for ``ttl`` seconds."""

    def __init__(
        self,
        jwks_url: str,
        issuer: str,
        *,
        ttl: float = 300.0,
        min_refresh: float = 30.0,
        fetch: Fetch = fetch_json,
    ) -> None:
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.ttl = ttl
        self.min_refresh = min_refresh
        self.fetch = fetch
        self._keys: dict[str | None, tuple[jwt.PyJWK, str | None]] = {}
        self._fetched_at = float("-inf")
        self._lock = threading.Lock()

    def _url(self) -> str:
        if self.jwks_url:
            return self.jwks_url
        discovery = self.fetch(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
        url = discovery.get("jwks_uri")
        if not isinstance(url, str) or not url:
            raise KeysUnavailable("the issuer's discovery document has no jwks_uri")
        self.jwks_url = url
        return url

    def _refresh(self) -> None:
        data = self.fetch(self._url())
        keys: dict[str | None, tuple[jwt.PyJWK, str | None]] = {}
        for entry in data.get("keys", []):
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                continue  # a key type or algorithm this PyJWT cannot use
            declared = entry.get("alg")
            keys[entry.get("kid")] = (key, declared if isinstance(declared, str) else None)
        self._keys = keys
        self._fetched_at = time.monotonic()

    def key(self, kid: str | None) -> tuple[jwt.PyJWK, str | None]:
        """Return the signing key ``kid`` (or the only key when the token names none) and the
        algorithm the key set declares for it, if any."""
        with self._lock:
            age = time.monotonic() - self._fetched_at
            if age > self.ttl or (kid not in self._keys and age > self.min_refresh):
                self._refresh()
            if kid is None and len(self._keys) == 1:
                return next(iter(self._keys.values()))
            found = self._keys.get(kid)
        if found is None:
            raise InvalidToken("signed with an unknown key")
        return found


def claim(claims: dict[str, Any], path: str) -> Any:
    """Return the claim at a dotted ``path`` (``realm_access.roles``), or ``None``."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def role_of(value: Any) -> str | None:
    """Return the most privileged known role in a claim value (a string or a list)."""
    candidates = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    names = {str(v).strip().lower() for v in candidates}
    return next((role for role in ROLES if role in names), None)


class OidcVerifier:
    """Verify bearer JWTs for ``settings`` (``auth=oidc``)."""

    def __init__(self, settings: Settings, *, fetch: Fetch = fetch_json) -> None:
        if not settings.oidc_issuer or not settings.oidc_audience:
            raise ValueError("auth=oidc needs oidc_issuer and oidc_audience")
        self.issuer = settings.oidc_issuer
        self.audience = settings.oidc_audience
        self.algorithms = parse_algorithms(settings.oidc_algorithms)
        self.role_claim = settings.oidc_role_claim
        self.collections_claim = settings.oidc_collections_claim
        self.keys = JwksCache(settings.oidc_jwks_url, settings.oidc_issuer, fetch=fetch)

    def verify(self, token: str) -> Principal:
        """Return the principal of a valid token; raise :class:`InvalidToken` (may block)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("not a JWT") from exc
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise InvalidToken("algorithm not accepted")
        kid = header.get("kid")
        key, declared = self.keys.key(kid if isinstance(kid, str) else None)
        if key.key_type != KEY_TYPES.get(str(alg)[:2]) or (declared and declared != alg):
            raise InvalidToken("key does not match the algorithm")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[str(alg)],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise InvalidToken("wrong audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise InvalidToken("wrong issuer") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"rejected ({type(exc).__name__})") from exc
        role = role_of(claim(claims, self.role_claim))
        if role is None:
            raise InvalidToken(f"no known role in claim {self.role_claim!r}")
        collections: tuple[str, ...] = ()
        if self.collections_claim:
            value = claim(claims, self.collections_claim)
            if isinstance(value, str):
                collections = parse_collections(value)
            elif isinstance(value, list):
                collections = parse_collections(",".join(str(v) for v in value))
        return Principal(
            subject=f"oidc:{str(claims['sub'])[:150]}",
            role=role,
            collections=collections,
            method="oidc",
        )
