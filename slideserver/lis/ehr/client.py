"""The HTTP side of the EHR pull: a :class:`~slideserver.lis.ehr.source.FhirSource` over httpx.

Pure of app state: it is handed a base URL and an :class:`Auth`. Every resource it returns is
validated with fhir.resources R4B; anything else the EHR answers (a 5xx, a timeout, HTML, JSON
that is not FHIR) is an :class:`EhrUnavailable` whose detail names no patient data.

Auth: none, a static bearer token, or SMART Backend Services (``client_credentials`` with a
``private_key_jwt`` client assertion signed with the client's key; the access token is cached
and renewed a minute before it expires, or at once after a 401).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import jwt
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.resource import Resource

from slideserver.lis.ehr.source import EhrUnavailable, Params, parse_resource
from slideserver.settings import Settings

FHIR_JSON = "application/fhir+json"
RENEW_BEFORE = 60.0
"""Seconds before a SMART token expires at which it is renewed."""


class Auth(Protocol):
    """What adds credentials to the EHR's requests."""

    def headers(self, client: httpx.Client) -> dict[str, str]:
        """The headers to send (may fetch a token with ``client``)."""

    def invalidate(self) -> None:
        """Forget a cached credential (after a 401)."""


class NoAuth:
    def headers(self, client: httpx.Client) -> dict[str, str]:
        return {}

    def invalidate(self) -> None:
        return None


@dataclass(frozen=True)
class BearerAuth:
    """A static bearer token."""

    token: str

    def headers(self, client: httpx.Client) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def invalidate(self) -> None:
        return None


class SmartBackendAuth:
    """SMART Backend Services: a signed JWT assertion exchanged for a cached access token."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        private_key: str,
        *,
        scope: str = "system/*.read",
        algorithm: str = "RS384",
        key_id: str | None = None,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self.private_key = private_key
        self.scope = scope
        self.algorithm = algorithm
        self.key_id = key_id
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires = 0.0

    @classmethod
    def from_key_file(
        cls, token_url: str, client_id: str, key_file: Path, **kw: Any
    ) -> SmartBackendAuth:
        return cls(token_url, client_id, key_file.read_text(encoding="utf-8"), **kw)

    def assertion(self) -> str:
        """The client assertion: iss = sub = client ID, aud = token URL, five minutes, unique."""
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_url,
            "exp": now + 300,
            "iat": now,
            "jti": uuid.uuid4().hex,
        }
        headers = {"kid": self.key_id} if self.key_id else None
        return jwt.encode(claims, self.private_key, algorithm=self.algorithm, headers=headers)

    def headers(self, client: httpx.Client) -> dict[str, str]:
        with self._lock:
            if self._token is None or time.monotonic() >= self._expires - RENEW_BEFORE:
                self._token, lifetime = self._fetch(client)
                self._expires = time.monotonic() + lifetime
            return {"Authorization": f"Bearer {self._token}"}

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def _fetch(self, client: httpx.Client) -> tuple[str, float]:
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": self.assertion(),
        }
        try:
            answer = client.post(self.token_url, data=form, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise EhrUnavailable(
                f"the EHR token endpoint did not answer ({type(exc).__name__})"
            ) from None
        if answer.status_code != 200:
            raise EhrUnavailable(f"the EHR token endpoint answered {answer.status_code}")
        try:
            body = answer.json()
            token = body["access_token"]
            lifetime = float(body.get("expires_in", 300))
        except (ValueError, KeyError, TypeError):
            raise EhrUnavailable("the EHR token endpoint answered no access token") from None
        if not isinstance(token, str) or not token:
            raise EhrUnavailable("the EHR token endpoint answered no access token")
        return token, lifetime


class FhirClient:
    """Blocking FHIR calls to one EHR base URL; thread-safe (one httpx client, one auth)."""

    def __init__(self, base_url: str, auth: Auth | None = None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth = auth or NoAuth()
        self._http = httpx.Client(timeout=timeout, headers={"Accept": FHIR_JSON})

    def close(self) -> None:
        self._http.close()

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def get_json(self, url: str, params: Params | None = None) -> Any:
        """GET ``url`` with credentials (renewed once after a 401); the decoded JSON body, or
        ``None`` for a 404."""
        query = httpx.QueryParams(list(params)) if params is not None else None
        answer = self._get(url, query)
        if answer.status_code == 401:  # a token revoked or expired early: one fresh try
            self.auth.invalidate()
            answer = self._get(url, query)
            if answer.status_code == 401:
                raise EhrUnavailable("the EHR refused our credentials (401)")
        if answer.status_code == 404:
            return None
        if answer.status_code != 200:
            raise EhrUnavailable(f"the EHR answered {answer.status_code}")
        try:
            return answer.json()
        except ValueError:
            raise EhrUnavailable("the EHR answered something that is not JSON") from None

    def _get(self, url: str, query: httpx.QueryParams | None) -> httpx.Response:
        try:
            return self._http.get(url, params=query, headers=self.auth.headers(self._http))
        except httpx.HTTPError as exc:
            raise EhrUnavailable(f"the EHR did not answer ({type(exc).__name__})") from None

    def search(self, url: str, params: Params | None = None) -> Bundle:
        """One page of a search: a validated ``searchset`` Bundle."""
        bundle = parse_resource(self.get_json(url, params), "Bundle")
        assert isinstance(bundle, Bundle)
        if bundle.type != "searchset":
            raise EhrUnavailable("the EHR answered a Bundle that is not a searchset")
        return bundle

    def read(self, reference: str) -> Resource | None:
        """Read ``Type/id`` (or an absolute URL on this server); ``None`` when it is gone."""
        rtype = reference.rstrip("/").split("/")[-2] if "/" in reference else ""
        url = reference if reference.startswith(("http://", "https://")) else self.url(reference)
        data = self.get_json(url)
        return None if data is None else parse_resource(data, rtype or None)


def ehr_auth(settings: Settings) -> Auth:
    """The EHR credentials the settings describe; ValueError when they are incomplete."""
    if settings.ehr_auth == "none":
        return NoAuth()
    if settings.ehr_auth == "bearer":
        if not settings.ehr_token:
            raise ValueError("SLIDESERVER_EHR_AUTH=bearer needs SLIDESERVER_EHR_TOKEN")
        return BearerAuth(settings.ehr_token)
    if settings.ehr_auth == "smart":
        needed = ("ehr_client_id", "ehr_token_url", "ehr_private_key_file")
        missing = [f"SLIDESERVER_{n.upper()}" for n in needed if not getattr(settings, n)]
        if missing:
            raise ValueError("SLIDESERVER_EHR_AUTH=smart needs " + ", ".join(missing))
        return SmartBackendAuth.from_key_file(
            settings.ehr_token_url,
            settings.ehr_client_id,
            Path(settings.ehr_private_key_file),
            scope=settings.ehr_scope,
        )
    raise ValueError(
        f"SLIDESERVER_EHR_AUTH must be none, bearer or smart, not {settings.ehr_auth!r}"
    )


def fhir_client(settings: Settings) -> FhirClient:
    """The client of the EHR the settings name; ValueError when its auth is incomplete."""
    return FhirClient(settings.ehr_fhir_url, ehr_auth(settings), timeout=settings.ehr_timeout)


__all__ = [
    "Auth",
    "BearerAuth",
    "FhirClient",
    "NoAuth",
    "SmartBackendAuth",
    "ehr_auth",
    "fhir_client",
]
