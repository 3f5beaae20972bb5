"""OIDC bearer JWTs against a real JWKS on 127.0.0.1; the viewer's session cookie and CSRF."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

AUDIENCE = "slideserver"


@pytest.fixture(scope="module")
def oidc_client(
    samples_root: Path, jwks_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    from starlette.testclient import TestClient

    from slideserver.api.app import create_app
    from tests.conftest import _security_settings

    settings = _security_settings(
        samples_root,
        tmp_path_factory.mktemp("oidc") / "db.sqlite",
        auth="oidc",
        oidc_issuer=jwks_server,
        oidc_audience=AUDIENCE,
        oidc_role_claim="realm_access.roles",
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:  # type: ignore[arg-type]
        yield client


def make_jwt(keys: dict[str, Any], issuer: str, key: str = "good", **changes: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": "user-42",
        "iat": now,
        "exp": now + 600,
        "realm_access": {"roles": ["offline_access", "pathologist"]},
    }
    headers = {"kid": changes.pop("kid", "good")}
    claims.update(changes)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, keys[key], algorithm="RS256", headers=headers)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _get(client: Any, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.get("/api/slides", headers=headers)


def test_a_valid_jwt_is_accepted_with_its_role(
    oidc_client: Any, rsa_keys: Any, jwks_server: str
) -> None:
    token = make_jwt(rsa_keys, jwks_server)
    assert _get(oidc_client, token).status_code == 200
    who = oidc_client.get("/api/session", headers={"Authorization": f"Bearer {token}"}).json()
    assert who == {
        "subject": "oidc:user-42",
        "role": "pathologist",
        "via": "oidc",
        "collections": [],
    }


def _bad_tokens(keys: Any, issuer: str) -> dict[str, str | None]:
    now = int(time.time())
    unsigned = (
        _b64({"alg": "none", "typ": "JWT", "kid": "good"})
        + "."
        + _b64(
            {
                "iss": issuer,
                "aud": AUDIENCE,
                "sub": "x",
                "exp": now + 600,
                "realm_access": {"roles": ["admin"]},
            }
        )
        + "."
    )
    return {
        "missing": None,
        "garbage": "garbage.garbage.garbage",
        "empty-ish": "x",
        "expired": make_jwt(keys, issuer, exp=now - 3600, iat=now - 7200),
        "not-yet-valid": make_jwt(keys, issuer, nbf=now + 3600),
        "alg-none": unsigned,
        "wrong-audience": make_jwt(keys, issuer, aud="someone-else"),
        "wrong-issuer": make_jwt(keys, issuer, iss="https://evil.example"),
        "wrongly-signed": make_jwt(keys, issuer, key="evil"),
        "unknown-kid": make_jwt(keys, issuer, key="evil", kid="evil"),
        "no-exp": make_jwt(keys, issuer, exp=None),
        "no-role": make_jwt(keys, issuer, realm_access={"roles": ["offline_access"]}),
        "tampered": make_jwt(keys, issuer)[:-6] + "AAAAAA",
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "garbage",
        "empty-ish",
        "expired",
        "not-yet-valid",
        "alg-none",
        "wrong-audience",
        "wrong-issuer",
        "wrongly-signed",
        "unknown-kid",
        "no-exp",
        "no-role",
        "tampered",
    ],
)
def test_bad_jwts_get_401(oidc_client: Any, rsa_keys: Any, jwks_server: str, case: str) -> None:
    token = _bad_tokens(rsa_keys, jwks_server)[case]
    response = _get(oidc_client, token)
    assert response.status_code == 401, (case, response.text)
    assert response.json()["error"] == "unauthorized"


def test_hmac_algorithms_cannot_be_configured() -> None:
    from slideserver.security.oidc import parse_algorithms

    with pytest.raises(ValueError):
        parse_algorithms("RS256,HS256")
    with pytest.raises(ValueError):
        parse_algorithms("none")


def test_session_cookie_login_logout_and_csrf(
    oidc_client: Any, rsa_keys: Any, jwks_server: str
) -> None:
    from slideserver.security.session import COOKIE_NAME

    token = make_jwt(rsa_keys, jwks_server)
    login = oidc_client.post("/api/session", headers={"Authorization": f"Bearer {token}"})
    assert login.status_code == 200
    set_cookie = login.headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    assert "Secure" not in set_cookie  # plain HTTP test server; under TLS it is set
    cookie = oidc_client.cookies.get(COOKIE_NAME)
    assert cookie
    # The cookie alone now authenticates reads (the viewer's image requests).
    assert oidc_client.get("/api/slides").status_code == 200
    assert oidc_client.get("/api/session").json()["via"] == "session"
    # A cookie-authenticated change without the custom header is refused (CSRF).
    assert oidc_client.delete("/api/session").status_code == 403
    # From another origin the cookie does not authenticate at all (before any CSRF check).
    cross = {"X-Requested-With": "XMLHttpRequest", "Origin": "https://evil.example"}
    refused = oidc_client.delete("/api/session", headers=cross)
    assert refused.status_code == 401 and "other origins" in refused.json()["detail"]
    out = oidc_client.delete("/api/session", headers={"X-Requested-With": "XMLHttpRequest"})
    assert out.status_code == 204
    oidc_client.cookies.clear()
    assert oidc_client.get("/api/slides").status_code == 401
    # A forged or tampered cookie is refused.
    oidc_client.cookies.set(COOKIE_NAME, cookie[:-4] + "AAAA")
    assert oidc_client.get("/api/slides").status_code == 401
    oidc_client.cookies.clear()


def test_sessions_of_revoked_tokens_end(samples_root: Path, tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from slideserver.api.app import create_app
    from slideserver.security import Security
    from tests.conftest import _security_settings, make_tokens

    settings = _security_settings(
        samples_root, tmp_path / "db.sqlite", token_cache_ttl=0.0, session_check_ttl=0.0
    )
    token = make_tokens(settings, {"viewer": ("pathologist", "")})["viewer"]
    with TestClient(create_app(settings)) as client:  # type: ignore[arg-type]
        assert client.post("/api/session", headers={"Authorization": f"Bearer {token}"}).is_success
        assert client.get("/api/slides").status_code == 200
        security = Security(settings)  # type: ignore[arg-type]
        security.open()
        assert security.tokens is not None and security.tokens.revoke("viewer") == 1
        security.close()
        assert client.get("/api/slides").status_code == 401
        assert (
            client.get("/api/slides", headers={"Authorization": f"Bearer {token}"}).status_code
            == 401
        )
