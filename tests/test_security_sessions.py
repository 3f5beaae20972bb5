"""Viewer sessions live on the server: logout and token revocation end them, replays included.

The replay tests run a real ``slideserver serve`` process and a real ``slideserver token revoke``
process; the cache tests use two apps on one database (two processes' worth of caches).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.live_server import live_server

XHR = {"X-Requested-With": "XMLHttpRequest"}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _cookie(value: str) -> dict[str, str]:
    from slideserver.security.session import COOKIE_NAME

    return {"Cookie": f"{COOKIE_NAME}={value}"}


def _login(base: str, token: str) -> str:
    """Sign in like the viewer does; return the session cookie's value."""
    from slideserver.security.session import COOKIE_NAME

    response = httpx.post(f"{base}/api/session", headers=_bearer(token), timeout=30)
    assert response.status_code == 200, response.text
    value = response.cookies.get(COOKIE_NAME)
    assert value
    return value


@pytest.fixture
def served(samples_root: Path, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """A real ``auth=tokens`` server, one pathologist token: ``(base URL, token, database URL)``.

    Sessions are checked against the database on every request (``session_check_ttl`` 0), as
    another process sees them once its short cache has expired.
    """
    from tests.conftest import _security_settings, make_tokens

    db = tmp_path / "db.sqlite"
    url = f"sqlite:///{db}"
    token = make_tokens(_security_settings(samples_root, db), {"viewer": ("pathologist", "")})
    env = {"SLIDESERVER_SESSION_SECRET": "s3cret", "SLIDESERVER_SESSION_CHECK_TTL": "0"}
    with live_server(
        [samples_root], "--auth", "tokens", "--database-url", url, env=env, scrub_env=True
    ) as base:
        yield base, token["viewer"], url


def test_a_copied_cookie_is_refused_after_logout(served: tuple[str, str, str]) -> None:
    base, token, _ = served
    cookie = _login(base, token)
    assert httpx.get(f"{base}/api/slides", headers=_cookie(cookie)).status_code == 200
    out = httpx.delete(f"{base}/api/session", headers={**_cookie(cookie), **XHR})
    assert out.status_code == 204 and "Max-Age=0" in out.headers["set-cookie"]
    replay = httpx.get(f"{base}/api/slides", headers=_cookie(cookie))
    assert replay.status_code == 401
    assert replay.json()["error"] == "unauthorized"
    assert httpx.get(f"{base}/api/session", headers=_cookie(cookie)).status_code == 401


def test_logout_ends_only_its_own_session(served: tuple[str, str, str]) -> None:
    base, token, _ = served
    first, second = _login(base, token), _login(base, token)
    assert httpx.delete(f"{base}/api/session", headers={**_cookie(first), **XHR}).status_code == 204
    assert httpx.get(f"{base}/api/slides", headers=_cookie(first)).status_code == 401
    assert httpx.get(f"{base}/api/slides", headers=_cookie(second)).status_code == 200
    assert httpx.get(f"{base}/api/slides", headers=_bearer(token)).status_code == 200


def test_token_revoke_ends_every_session_made_from_it(served: tuple[str, str, str]) -> None:
    base, token, url = served
    cookies = [_login(base, token), _login(base, token)]
    for cookie in cookies:
        assert httpx.get(f"{base}/api/slides", headers=_cookie(cookie)).status_code == 200
    revoke = subprocess.run(
        [sys.executable, "-m", "slideserver", "token", "revoke", "viewer", "--database-url", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert revoke.returncode == 0, revoke.stderr
    for cookie in cookies:
        assert httpx.get(f"{base}/api/slides", headers=_cookie(cookie)).status_code == 401


def test_a_cookie_without_a_server_side_session_is_refused(
    samples_root: Path, tmp_path: Path
) -> None:
    """A correctly signed cookie naming no recorded session (forged with the secret, or issued
    before sessions were recorded) opens nothing."""
    from starlette.testclient import TestClient

    from slideserver.api.app import create_app
    from slideserver.security.principals import Principal
    from slideserver.security.session import SessionSigner
    from tests.conftest import _security_settings

    settings: Any = _security_settings(samples_root, tmp_path / "db.sqlite")
    signer = SessionSigner(settings.session_secret, settings.session_max_age)
    principal = Principal(subject="token:ghost", role="pathologist", method="token")
    with TestClient(create_app(settings)) as client:
        unknown = signer.issue(principal, "no-such-session")
        assert client.get("/api/slides", headers=_cookie(unknown)).status_code == 401
        legacy = signer.issue(principal, "")  # a cookie of the time before server-side sessions
        assert client.get("/api/slides", headers=_cookie(legacy)).status_code == 401


def test_logout_ends_the_session_at_once_in_its_process_despite_the_cache(
    samples_root: Path, tmp_path: Path
) -> None:
    """The process answering the logout drops its cached check immediately; a second process
    (another app on the same database) asks the database once its cache entry is gone."""
    from starlette.testclient import TestClient

    from slideserver.api.app import create_app
    from tests.conftest import _security_settings, make_tokens

    db = tmp_path / "db.sqlite"
    cached: Any = _security_settings(samples_root, db, session_check_ttl=3600.0)
    uncached: Any = _security_settings(samples_root, db, session_check_ttl=0.0)
    token = make_tokens(cached, {"viewer": ("pathologist", "")})["viewer"]
    with (
        TestClient(create_app(cached)) as here,
        TestClient(create_app(uncached)) as there,
    ):
        login = here.post("/api/session", headers=_bearer(token))
        cookie = _cookie(login.cookies["slideserver_session"])
        here.cookies.clear()
        assert here.get("/api/slides", headers=cookie).status_code == 200  # now cached
        assert there.get("/api/slides", headers=cookie).status_code == 200
        assert here.delete("/api/session", headers={**cookie, **XHR}).status_code == 204
        assert here.get("/api/slides", headers=cookie).status_code == 401
        assert there.get("/api/slides", headers=cookie).status_code == 401


def test_sessions_are_recorded_hashed_and_tied_to_their_token(
    samples_root: Path, tmp_path: Path
) -> None:
    from sqlalchemy import create_engine, text
    from starlette.testclient import TestClient

    from slideserver.api.app import create_app
    from tests.conftest import _security_settings, make_tokens

    db = tmp_path / "db.sqlite"
    settings: Any = _security_settings(samples_root, db)
    token = make_tokens(settings, {"viewer": ("pathologist", "")})["viewer"]
    with TestClient(create_app(settings)) as client:
        assert client.post("/api/session", headers=_bearer(token)).status_code == 200
        cookie = client.cookies["slideserver_session"]
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id_hash, subject, token_id, revoked_at FROM security_sessions")
        ).all()
    engine.dispose()
    assert len(rows) == 1
    id_hash, subject, token_id, revoked_at = rows[0]
    assert subject == "token:viewer" and token_id is not None and revoked_at is None
    assert len(id_hash) == 64 and id_hash not in cookie


def test_behind_a_tls_proxy_the_session_cookie_is_secure(
    samples_root: Path, tmp_path: Path
) -> None:
    from starlette.testclient import TestClient

    from slideserver.api.app import create_app
    from tests.conftest import _security_settings, make_tokens

    settings: Any = _security_settings(samples_root, tmp_path / "db.sqlite", behind_tls_proxy=True)
    token = make_tokens(settings, {"viewer": ("pathologist", "")})["viewer"]
    with TestClient(create_app(settings)) as client:
        login = client.post("/api/session", headers=_bearer(token))
        assert login.status_code == 200 and "; Secure" in login.headers["set-cookie"]


def test_a_verified_cookie_is_refused_once_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    """The signer remembers cookies it verified, and still honours their expiry."""
    from slideserver.security import session
    from slideserver.security.principals import Principal

    signer = session.SessionSigner("a-secret", max_age=60)
    principal = Principal(subject="token:viewer", role="pathologist", method="token")
    cookie = signer.issue(principal, "sid-1")
    first = signer.verify(cookie)
    assert first is not None and first.subject == "token:viewer" and first.session_id == "sid-1"
    assert signer.verify(cookie) == first  # the remembered answer
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)
    assert signer.verify(cookie) is None


def test_an_altered_copy_of_a_verified_cookie_is_refused() -> None:
    """Only the exact value that passed is remembered: a changed payload is checked in full."""
    from slideserver.security.principals import Principal
    from slideserver.security.session import SessionSigner

    signer = SessionSigner("a-secret", max_age=60)
    cookie = signer.issue(Principal(subject="token:viewer", role="pathologist"), "sid-1")
    assert signer.verify(cookie) is not None
    payload, _, mac = cookie.partition(".")
    admin = SessionSigner("a-secret", max_age=60).issue(
        Principal(subject="token:viewer", role="admin"), "sid-1"
    )
    assert signer.verify(f"{admin.partition('.')[0]}.{mac}") is None
    assert signer.verify(f"{payload}.{mac[:-2]}xx") is None
    assert SessionSigner("another-secret", max_age=60).verify(cookie) is None
