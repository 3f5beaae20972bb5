"""The audit trail: rows for PHI reads and writes, tile reads summarized, failing closed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.helpers import SVS


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _app(samples_root: Path, db: Path | str) -> tuple[Any, dict[str, str], Any]:
    """An app over the samples on ``db`` (SQLite file or URL), one token per role."""
    from slideserver.api.app import create_app
    from tests.conftest import SECURITY_ROLES, _security_settings, make_tokens

    settings = _security_settings(samples_root, db)
    tokens = make_tokens(settings, {r: (r, "") for r in SECURITY_ROLES})
    return create_app(settings), tokens, settings  # type: ignore[arg-type]


def _svs(client: Any, token: str) -> str:
    items = client.get("/api/slides", headers=_auth(token)).json()["items"]
    svs_id: str = next(i["id"] for i in items if i["name"] == SVS)
    return svs_id


def test_phi_reads_and_writes_are_audited(samples_root: Path, tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    app, tokens, _ = _app(samples_root, tmp_path / "db.sqlite")
    with TestClient(app) as client:
        sid = _svs(client, tokens["pathologist"])
        client.get(f"/api/slides/{sid}", headers=_auth(tokens["pathologist"]))
        client.get(f"/api/slides/{sid}/associated/label", headers=_auth(tokens["pathologist"]))
        client.get("/api/cases/S24-01234", headers=_auth(tokens["pathologist"]))
        order = b'{"accession": "S24-09999", "patient": {"id": "MRN-9"}}'
        client.post("/api/lis/cases", content=order, headers=_auth(tokens["lis"]))
        rows = client.get("/api/audit?limit=1000", headers=_auth(tokens["admin"])).json()["items"]
    by_action = {(r["action"], r["kind"]): r for r in rows}
    detail = by_action[("GET /api/slides/{slide_id}", "request")]
    assert detail["subject"] == "token:pathologist" and detail["role"] == "pathologist"
    assert detail["slide_id"] == sid and detail["status"] == 200
    assert detail["client"] and detail["request_id"] and detail["at"]
    label = by_action[("GET /api/slides/{slide_id}/associated/{name}", "request")]
    assert label["slide_id"] == sid
    assert by_action[("GET /api/cases/{accession}", "request")]["case_id"] == "S24-01234"
    assert by_action[("POST /api/lis/cases", "attempt")]["subject"] == "token:lis"
    assert by_action[("POST /api/lis/cases", "request")]["status"] in (200, 201, 422)


def test_tile_reads_are_summarized(samples_root: Path, tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    app, tokens, _ = _app(samples_root, tmp_path / "db.sqlite")
    with TestClient(app) as client:
        sid = _svs(client, tokens["admin"])
        for col in range(3):
            for row in range(2):
                url = f"/dz/{sid}_files/9/{col}_{row}.jpeg"
                client.get(url, headers=_auth(tokens["researcher"]))
        client.get(f"/iiif/3/{sid}/full/64,/0/default.jpg", headers=_auth(tokens["researcher"]))
        rows = client.get("/api/audit?kind=tiles", headers=_auth(tokens["admin"])).json()["items"]
    mine = [r for r in rows if r["subject"] == "token:researcher" and r["slide_id"] == sid]
    assert len(mine) == 1
    assert mine[0]["count"] == 7 and mine[0]["last_at"]


def test_phi_requests_fail_closed_when_the_audit_is_unwritable(
    samples_root: Path, tmp_path: Path
) -> None:
    from starlette.testclient import TestClient

    db = tmp_path / "db.sqlite"
    app, tokens, _ = _app(samples_root, db)
    with TestClient(app) as client:
        sid = _svs(client, tokens["pathologist"])
        audit = app.state.security.audit
        writable = audit.writer
        audit.writer = create_engine(f"sqlite:///file:{db}?mode=ro&uri=true")
        try:
            for url in (
                f"/api/slides/{sid}",
                f"/api/slides/{sid}/associated/label",
                "/api/slides",
                "/api/cases/S24-01234",
            ):
                response = client.get(url, headers=_auth(tokens["pathologist"]))
                assert response.status_code == 503, url
                assert response.json()["error"] == "audit_unavailable"
                assert "DOE" not in response.text
            order = b'{"accession": "S24-08888"}'
            response = client.post("/api/lis/cases", content=order, headers=_auth(tokens["lis"]))
            assert response.status_code == 503
        finally:
            audit.writer.dispose()
            audit.writer = writable
        # The write was refused before it ran: the case does not exist.
        missing = client.get("/api/cases/S24-08888", headers=_auth(tokens["pathologist"]))
        assert missing.status_code == 404


def test_the_audit_trail_is_append_only(samples_root: Path, tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    db = tmp_path / "db.sqlite"
    app, tokens, _ = _app(samples_root, db)
    with TestClient(app) as client:
        client.get("/api/slides", headers=_auth(tokens["pathologist"]))
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM security_audit_events")).scalar()
    for statement in (
        "UPDATE security_audit_events SET role = 'x'",
        "DELETE FROM security_audit_events",
    ):
        with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    with engine.connect() as conn:
        tables = {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master"))}
        assert {"slideserver_security_version", "alembic_version"} <= tables
        version = conn.execute(text("SELECT version_num FROM slideserver_security_version"))
        assert version.scalar() == "sec0003"
    engine.dispose()


def test_audit_filters_and_admin_only(secure_env: Any) -> None:
    client, tokens = secure_env
    client.get("/api/slides", headers=_auth(tokens["pathologist"]))
    rows = client.get(
        "/api/audit",
        params={"subject": "token:pathologist", "action": "/api/slides"},
        headers=_auth(tokens["admin"]),
    ).json()["items"]
    assert rows and all(r["subject"] == "token:pathologist" for r in rows)
    assert client.get("/api/audit", headers=_auth(tokens["pathologist"])).status_code == 403
    assert (
        client.get("/api/audit?since=yesterday", headers=_auth(tokens["admin"])).status_code == 400
    )


def test_open_mode_is_audited_as_anonymous(client: Any) -> None:
    client.get("/api/slides")
    audit = client.app.state.security.audit
    from slideserver.security.audit import AuditQuery

    rows = audit.query(AuditQuery(subject="anonymous", action="/api/slides"), 5)
    assert rows and rows[0].role == "pathologist"


@pytest.mark.parametrize("query", ["since=notadate", "until=2024-13-01", "since=2024-01-01T25:00"])
def test_audit_refuses_dates_it_cannot_read(secure_env: Any, query: str) -> None:
    client, tokens = secure_env
    refused = client.get(f"/api/audit?{query}", headers=_auth(tokens["admin"]))
    assert refused.status_code == 400
    assert refused.json()["error"] == "bad_request" and "ISO date" in refused.json()["detail"]
