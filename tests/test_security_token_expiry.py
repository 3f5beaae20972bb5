"""API tokens expire; ``token rotate`` swaps a secret without downtime; the CLI shows both and
never creates a database when reading or revoking."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slideserver", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Any]:
    from slideserver.db.engine import make_engine, writer
    from slideserver.security.migrations import upgrade
    from slideserver.security.tokens import TokenStore

    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(writer(engine))
    try:
        yield TokenStore(engine, writer(engine), cache_ttl=0)
    finally:
        engine.dispose()


def test_durations_take_s_m_h_d_and_never_only_when_allowed() -> None:
    from slideserver.security.tokens import TokenError, parse_duration

    assert parse_duration("90d") == timedelta(days=90)
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration("30m") == timedelta(minutes=30)
    assert parse_duration("45s") == timedelta(seconds=45)
    assert parse_duration("never", allow_never=True) is None
    for bad in ("never", "90", "1w", "-1d", "1.5h", ""):
        with pytest.raises(TokenError):
            parse_duration(bad)


def test_new_tokens_expire_in_90_days_unless_told(store: Any) -> None:
    info, _ = store.create("default", "pathologist")
    assert info.expires_at is not None
    assert timedelta(days=89) < info.expires_at - info.created_at <= timedelta(days=90)
    forever, token = store.create("forever", "lis", lifetime=None)
    assert forever.expires_at is None and store.authenticate(token) is not None


def test_an_expired_token_is_refused_and_says_why(store: Any) -> None:
    info, token = store.create("old", "pathologist", lifetime=timedelta(0))
    check = store.check(token)
    assert check.principal is None and check.expired_at == info.expires_at
    assert store.authenticate(token) is None and not store.is_active(info.id)
    assert {t.name: t.state() for t in store.list()} == {"old": "expired"}


def test_expired_tokens_answer_401_with_a_clear_detail(samples_root: Path, tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from slideserver.api.app import create_app
    from slideserver.security import Security
    from tests.conftest import _security_settings

    settings: Any = _security_settings(samples_root, tmp_path / "db.sqlite")
    security = Security(settings)
    security.open()
    assert security.tokens is not None
    _, token = security.tokens.create("old", "pathologist", lifetime=timedelta(0))
    security.close()
    with TestClient(create_app(settings)) as client:
        refused = client.get("/api/slides", headers=_bearer(token))
        assert refused.status_code == 401
        body = refused.json()
        assert body["error"] == "unauthorized" and "expired on" in body["detail"]
        garbage = client.get("/api/slides", headers=_bearer("ss_" + "z" * 43))
        assert garbage.status_code == 401 and "expired on" not in garbage.json()["detail"]


def test_rotation_keeps_the_old_secret_valid_for_the_overlap(store: Any) -> None:
    old_info, old = store.create("lab", "researcher", "study-a")
    new_info, new, until = store.rotate("lab", overlap=timedelta(days=1))
    assert new != old and new_info.name == "lab" and new_info.role == "researcher"
    assert new_info.collections == ("study-a",)
    now = datetime.now(UTC)
    assert until is not None and now < until <= now + timedelta(days=1)
    both = [store.authenticate(old), store.authenticate(new)]
    assert [p.subject if p else None for p in both] == ["token:lab", "token:lab"]
    states = {t.prefix: t.state() for t in store.list()}
    assert states == {old_info.prefix: "rotated", new_info.prefix: "active"}
    assert {t.prefix: t.expires_at for t in store.list()}[old_info.prefix] == until


def test_rotation_without_overlap_ends_the_old_secret_and_its_sessions(
    samples_root: Path, tmp_path: Path
) -> None:
    from starlette.testclient import TestClient

    from slideserver.api.app import create_app
    from slideserver.security import Security
    from tests.conftest import _security_settings, make_tokens

    settings: Any = _security_settings(
        samples_root, tmp_path / "db.sqlite", token_cache_ttl=0.0, session_check_ttl=0.0
    )
    old = make_tokens(settings, {"viewer": ("pathologist", "")})["viewer"]
    with TestClient(create_app(settings)) as client:
        assert client.post("/api/session", headers=_bearer(old)).status_code == 200
        assert client.get("/api/slides").status_code == 200
        other = Security(settings)  # like `slideserver token rotate` from another process
        other.open()
        assert other.tokens is not None
        _, new, until = other.tokens.rotate("viewer", overlap=timedelta(0))
        other.close()
        assert until is None
        assert client.get("/api/slides").status_code == 401  # the old secret's session
        client.cookies.clear()
        assert client.get("/api/slides", headers=_bearer(old)).status_code == 401
        assert client.get("/api/slides", headers=_bearer(new)).status_code == 200


def test_revoking_a_rotated_name_revokes_every_secret(store: Any) -> None:
    from slideserver.security.tokens import TokenError

    _, old = store.create("lab", "pathologist")
    _, new, _ = store.rotate("lab")
    assert store.revoke("lab") == 2
    assert store.authenticate(old) is None and store.authenticate(new) is None
    with pytest.raises(TokenError, match="revoked"):
        store.rotate("lab")
    with pytest.raises(TokenError, match="no token named"):
        store.rotate("nobody")
    with pytest.raises(TokenError, match="exists already"):
        store.create("lab", "pathologist")


def test_cli_create_list_and_rotate_show_expiry(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    made = _cli(
        "token",
        "create",
        "--role",
        "lis",
        "--name",
        "lab",
        "--expires",
        "12h",
        "--database-url",
        db,
    )
    assert made.returncode == 0, made.stderr
    assert "expires 20" in made.stdout and made.stdout.strip().splitlines()[-1].startswith("ss_")
    never = _cli(
        "token",
        "create",
        "--role",
        "lis",
        "--name",
        "pump",
        "--expires",
        "never",
        "--database-url",
        db,
    )
    assert never.returncode == 0 and "expires never" in never.stdout
    gone = _cli(
        "token",
        "create",
        "--role",
        "lis",
        "--name",
        "gone",
        "--expires",
        "0s",
        "--database-url",
        db,
    )
    assert gone.returncode == 0
    bad = _cli(
        "token", "create", "--role", "lis", "--name", "x", "--expires", "1y", "--database-url", db
    )
    assert bad.returncode == 2 and "unit s, m, h or d" in bad.stderr
    rotated = _cli("token", "rotate", "lab", "--overlap", "2h", "--database-url", db)
    assert rotated.returncode == 0, rotated.stderr
    assert "the old secret works until 20" in rotated.stdout
    assert rotated.stdout.strip().splitlines()[-1].startswith("ss_")
    listed = _cli("token", "list", "--database-url", db).stdout.splitlines()
    assert listed[0].split() == [
        "PREFIX",
        "NAME",
        "ROLE",
        "COLLECTIONS",
        "CREATED",
        "EXPIRES",
        "STATE",
    ]
    states = {(line.split()[1], line.split()[-1]) for line in listed[1:]}
    assert states == {
        ("lab", "rotated"),
        ("lab", "active"),
        ("pump", "active"),
        ("gone", "expired"),
    }
    assert any("never" in line and "pump" in line for line in listed)


def test_cli_revoke_with_the_root_after_the_name_and_no_database_creates_nothing(
    tmp_path: Path,
) -> None:
    slides = tmp_path / "slides"
    slides.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    revoked = _cli("token", "revoke", "lab", str(slides), cwd=work)
    assert revoked.returncode == 2 and "no catalog database" in revoked.stderr
    listed = _cli("token", "list", cwd=work)
    assert listed.returncode == 2 and "no catalog database" in listed.stderr
    assert list(work.iterdir()) == [] and list(slides.iterdir()) == []


def test_cli_revoke_refuses_the_root_before_the_name(tmp_path: Path) -> None:
    slides = tmp_path / "slides"
    slides.mkdir()
    made = _cli("token", "create", str(slides), "--role", "lis", "--name", "lab")
    assert made.returncode == 0, made.stderr
    swapped = _cli("token", "revoke", str(slides), "lab", cwd=tmp_path)
    assert swapped.returncode == 2
    assert "'lab' is not a folder" in swapped.stderr and "revoke NAME [ROOT ...]" in swapped.stderr
    revoked = _cli("token", "revoke", "lab", str(slides))
    assert revoked.returncode == 0, revoked.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slides"]
