"""``slideserver token`` and ``audit export``; ``serve`` refuses open mode off loopback;
``create_app`` refuses routes missing from the policy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slideserver", *args], capture_output=True, text=True, timeout=120
    )


def test_token_create_prints_a_working_token_last(samples_root: Path, tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from slideserver.api.app import create_app
    from tests.conftest import _security_settings

    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    made = _cli("token", "create", "--role", "researcher", "--name", "lab", "--database-url", db)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    assert token.startswith("ss_") and len(token) > 40
    listed = _cli("token", "list", "--database-url", db)
    assert "lab" in listed.stdout and "researcher" in listed.stdout and token not in listed.stdout
    settings = _security_settings(samples_root, tmp_path / "db.sqlite")
    with TestClient(create_app(settings)) as client:  # type: ignore[arg-type]
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/slides", headers=headers).status_code == 200
        assert client.get("/api/cases/S24-01234", headers=headers).status_code == 403
    assert _cli("token", "revoke", "lab", "--database-url", db).returncode == 0
    with TestClient(create_app(settings)) as client:  # type: ignore[arg-type]
        assert client.get("/api/slides", headers=headers).status_code == 401
    exported = _cli("audit", "export", "--database-url", db)
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert any(r["subject"] == "token:lab" and r["status"] == 200 for r in rows)


def test_token_create_refuses_unknown_roles(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    made = _cli("token", "create", "--role", "root", "--name", "x", "--database-url", db)
    assert made.returncode == 2 and "role must be one of" in made.stderr


def test_serve_refuses_open_mode_off_loopback(samples_root: Path) -> None:
    from slideserver.server.runner import auth_refusal as _auth_refusal
    from slideserver.settings import Settings

    refused = _cli("serve", str(samples_root), "--host", "0.0.0.0", "--auth", "open")
    assert refused.returncode == 2 and "refusing auth=open" in refused.stderr
    assert (
        _auth_refusal(Settings(host="0.0.0.0", auth="open", allow_open_non_loopback=True)) is None
    )
    assert _auth_refusal(Settings(host="127.0.0.1")) is None
    assert _auth_refusal(Settings(host="0.0.0.0", auth="tokens")) is None
    assert _auth_refusal(Settings(auth="oidc"))  # no issuer
    assert _auth_refusal(Settings(auth="password"))


def test_create_app_fails_for_a_route_without_a_policy_row(monkeypatch: Any) -> None:
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from slideserver.api import app as app_module
    from slideserver.api.policy import PolicyError
    from slideserver.settings import Settings

    def extra() -> list[Any]:
        return [Route("/api/new-thing", lambda r: PlainTextResponse("hi"))]

    monkeypatch.setattr(app_module, "viewer_routes", extra)
    with pytest.raises(PolicyError, match="/api/new-thing"):
        app_module.create_app(Settings())


def test_create_app_refuses_unknown_auth_modes() -> None:
    from slideserver.api.app import create_app
    from slideserver.settings import Settings

    with pytest.raises(ValueError):
        create_app(Settings(auth="password"))
    with pytest.raises(ValueError):
        create_app(Settings(auth="oidc"))


def test_open_mode_honours_a_presented_token(samples_root: Path, tmp_path: Path) -> None:
    """The demo user cannot write LIS orders, but an ``lis`` token can, even in open mode."""
    from starlette.testclient import TestClient

    from slideserver.api.app import create_app
    from slideserver.settings import Settings

    url = f"sqlite:///{tmp_path}/open.db"
    settings = Settings(roots=(samples_root,), auth="open", database_url=url)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        security = client.app.state.security  # type: ignore[attr-defined]
        _, token = security.tokens.create("lis-demo", "lis")
        body = {"accession": "S99-00001", "patient": {"identifier": "MRN-9"}}
        assert client.post("/api/lis/cases", json=body).status_code == 403
        ok = client.post("/api/lis/cases", json=body, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code in (200, 201), ok.text
        bad = client.get("/api/slides", headers={"Authorization": "Bearer ss_garbage"})
        assert bad.status_code == 401
