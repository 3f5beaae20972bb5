"""Tokens, sessions and the audit trail on a real PostgreSQL, the same tests as on SQLite.

Every test that is not about one database runs on both backends through the ``database_url``
fixture (SQLite file; the session's PostgreSQL catalog database, every table but the migration
version tables truncated first, like the catalog suites). PostgreSQL-only: failing closed when
the app's role loses INSERT on the audit table, and the trigger as PostgreSQL lists it. The
migration tests use a database of their own, created empty and dropped afterwards.
"""

from __future__ import annotations

import json
import multiprocessing
import queue
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import BigInteger, DateTime, Engine, create_engine, inspect, make_url, text

from tests.helpers import SVS
from tests.test_security_audit import _app, _auth, _svs

ORDER = {"accession": "S24-09999", "patient": {"identifier": "MRN-0099999", "name": "ROE^RICHARD"}}


def _engine(url: str) -> Engine:
    from slideserver.db.engine import make_engine

    return make_engine(url)


def _client(app: Any) -> Any:
    from starlette.testclient import TestClient

    return TestClient(app, raise_server_exceptions=False, follow_redirects=False)


def _settings(samples_root: Path, url: str, **overrides: object) -> Any:
    from tests.conftest import _security_settings

    return _security_settings(samples_root, url, **overrides)


# --- fixtures ---


@pytest.fixture
def postgres_url(postgres_server: Any, postgres_catalog_url: str) -> str:
    """The session's PostgreSQL catalog database, emptied like the catalog suites empty it."""
    postgres_server.truncate_all("catalog")
    return postgres_catalog_url


# --- migrations ---


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def _security_version(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [
            r[0] for r in conn.execute(text("SELECT version_num FROM slideserver_security_version"))
        ]


def _trigger_names(engine: Engine) -> set[str]:
    sql = (
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'security_audit_events'::regclass "
        "AND NOT tgisinternal"
        if engine.dialect.name == "postgresql"
        else "SELECT name FROM sqlite_master WHERE type = 'trigger' "
        "AND tbl_name = 'security_audit_events'"
    )
    with engine.connect() as conn:
        return {r[0] for r in conn.execute(text(sql))}


def test_migrations_create_the_tables_and_the_trigger_and_round_trip(
    empty_database_url: str,
) -> None:
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from slideserver.catalog.migrations import upgrade as upgrade_catalog
    from slideserver.db.engine import writer
    from slideserver.security.migrations import VERSION_TABLE, alembic_config, upgrade
    from slideserver.security.schema import metadata

    engine = _engine(empty_database_url)
    try:
        upgrade(writer(engine))
        upgrade(writer(engine))  # current: nothing to do
        upgrade_catalog(writer(engine))
        tables = _tables(engine)
        assert {"security_api_tokens", "security_audit_events"} <= tables
        assert {"slideserver_security_version", "alembic_version"} <= tables
        assert _security_version(engine) == ["sec0003"]
        with engine.connect() as conn:
            catalog_version = conn.execute(text("SELECT version_num FROM alembic_version"))
            # the two chains stay apart
            assert catalog_version.scalar() not in ("sec0001", "sec0002", "sec0003")
        assert _trigger_names(engine)
        with engine.connect() as conn:  # the migration builds what schema.py declares
            context = MigrationContext.configure(
                conn, opts={"version_table": VERSION_TABLE, "compare_type": True}
            )
            drift = [
                d
                for d in compare_metadata(context, metadata)
                if "security_" in repr(d)  # the catalog's tables are not this chain's
            ]
            assert drift == []
        if engine.dialect.name == "postgresql":
            columns = {c["name"]: c for c in inspect(engine).get_columns("security_audit_events")}
            assert isinstance(columns["id"]["type"], BigInteger)
            assert isinstance(columns["at"]["type"], DateTime) and columns["at"]["type"].timezone

        with writer(engine).begin() as conn:
            command.downgrade(alembic_config(conn), "base")
        assert not {"security_api_tokens", "security_audit_events"} & _tables(engine)
        assert _security_version(engine) == []
        assert "alembic_version" in _tables(engine)  # the catalog's chain is untouched
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                functions = conn.execute(
                    text(
                        "SELECT count(*) FROM pg_proc WHERE proname = 'security_audit_append_only'"
                    )
                )
                assert functions.scalar() == 0

        upgrade(writer(engine))
        assert _security_version(engine) == ["sec0003"] and _trigger_names(engine)
    finally:
        engine.dispose()


def _migrate(url: str, index: int, wait: Callable[[], object], catalog: bool) -> None:
    """Start up like a server worker: the security chain (and the catalog's, order alternating).

    Threads run the security chain only: Alembic's ``context`` and ``op`` are process-wide
    proxies, so two *different* chains must never run in two threads of one process at once
    (the app opens them one after the other).
    """
    from slideserver.catalog.migrations import upgrade as upgrade_catalog
    from slideserver.db.engine import writer
    from slideserver.security.migrations import upgrade as upgrade_security

    engine = _engine(url)
    try:
        steps = [upgrade_security, upgrade_catalog] if catalog else [upgrade_security]
        if index % 2:
            steps.reverse()
        wait()
        for step in steps:
            step(writer(engine))
    finally:
        engine.dispose()


def _migrate_in_process(url: str, index: int, barrier: Any, errors: Any) -> None:
    try:
        _migrate(url, index, lambda: barrier.wait(60), catalog=True)
    except BaseException as exc:
        errors.put(f"worker {index}: {type(exc).__name__}: {exc}")
        raise


@pytest.mark.parametrize("workers", ["processes", "threads"])
def test_concurrent_start_ups_migrate_once(empty_database_url: str, workers: str) -> None:
    count = 4
    if workers == "processes":
        context = multiprocessing.get_context("spawn")
        barrier: Any = context.Barrier(count)
        errors: Any = context.Queue()
        procs = [
            context.Process(
                target=_migrate_in_process, args=(empty_database_url, i, barrier, errors)
            )
            for i in range(count)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(120)
        failures = []
        while True:
            try:
                failures.append(errors.get(timeout=0.5))
            except queue.Empty:
                break
        assert failures == []
        assert [p.exitcode for p in procs] == [0] * count
    else:
        thread_barrier = threading.Barrier(count)
        thread_errors: list[BaseException] = []

        def run(index: int) -> None:
            try:
                _migrate(empty_database_url, index, lambda: thread_barrier.wait(60), False)
            except BaseException as exc:
                thread_errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert thread_errors == []
    engine = _engine(empty_database_url)
    try:
        assert _security_version(engine) == ["sec0003"]
        if workers == "processes":
            with engine.connect() as conn:
                catalog = conn.execute(text("SELECT version_num FROM alembic_version")).all()
                assert len(catalog) == 1
        assert len(_trigger_names(engine)) == (1 if engine.dialect.name == "postgresql" else 2)
    finally:
        engine.dispose()


# --- tokens and sessions ---


def test_tokens_create_verify_revoke(database_url: str) -> None:
    from slideserver.db.engine import writer
    from slideserver.security.migrations import upgrade
    from slideserver.security.tokens import TokenError, TokenStore

    engine = _engine(database_url)
    try:
        upgrade(writer(engine))
        store = TokenStore(engine, writer(engine), cache_ttl=0)
        info, token = store.create("lab", "researcher", "teaching, research/2024")
        assert info.id > 0 and token.startswith("ss_") and info.prefix == token[3:11]
        with pytest.raises(TokenError, match="exists already"):
            store.create("lab", "admin")
        store.create("lab2", "pathologist")  # the failed insert left the store usable
        principal = store.authenticate(token)
        assert principal is not None
        assert (principal.subject, principal.role) == ("token:lab", "researcher")
        assert principal.collections == info.collections and principal.token_id == info.id
        assert store.is_active(info.id)
        assert store.authenticate("ss_" + "x" * 43) is None
        assert store.authenticate("garbage") is None
        listed = {t.name: t for t in store.list()}
        assert set(listed) == {"lab", "lab2"}
        assert listed["lab"].created_at == info.created_at  # UTC, aware, on both backends
        with engine.connect() as conn:  # stored hashed only
            stored = conn.execute(text("SELECT token_hash FROM security_api_tokens")).all()
            assert token not in {r[0] for r in stored}

        assert store.revoke(info.prefix) == 1
        assert store.revoke("lab") == 0  # already revoked
        assert store.authenticate(token) is None and not store.is_active(info.id)
        revoked = {t.name: t for t in store.list()}["lab"]
        assert revoked.revoked_at is not None
        assert revoked.revoked_at.utcoffset() == timedelta(0)
        assert revoked.revoked_at >= revoked.created_at
    finally:
        engine.dispose()


def test_bearer_and_session_cookie_end_with_revocation(
    samples_root: Path, database_url: str
) -> None:
    from slideserver.api.app import create_app
    from slideserver.security import Security
    from tests.conftest import make_tokens

    settings = _settings(samples_root, database_url, token_cache_ttl=0, session_check_ttl=0)
    tokens = make_tokens(settings, {"reader": ("pathologist", "")})
    with _client(create_app(settings)) as client:
        bearer = _auth(tokens["reader"])
        assert client.get("/api/slides", headers=bearer).status_code == 200
        login = client.post("/api/session", headers=bearer)
        assert login.status_code == 200 and "slideserver_session" in client.cookies
        who = client.get("/api/session")  # the cookie alone
        assert who.status_code == 200 and who.json()["via"] == "session"
        assert client.get("/api/slides").status_code == 200

        other = Security(settings)  # like `slideserver token revoke` from another process
        other.open()
        try:
            assert other.tokens is not None and other.tokens.revoke("reader") == 1
        finally:
            other.close()
        assert client.get("/api/slides", headers=bearer).status_code == 401
        assert client.get("/api/slides").status_code == 401  # the session ends with its token
        client.cookies.clear()
        assert client.get("/api/slides", headers=_auth("ss_" + "y" * 43)).status_code == 401


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slideserver", *args], capture_output=True, text=True, timeout=120
    )


def test_token_and_audit_cli(samples_root: Path, database_url: str) -> None:
    from slideserver.api.app import create_app

    made = _cli("token", "create", "--role", "lis", "--name", "lab", "--database-url", database_url)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    listed = _cli("token", "list", "--database-url", database_url)
    assert "lab" in listed.stdout and token not in listed.stdout
    settings = _settings(samples_root, database_url, token_cache_ttl=0, session_check_ttl=0)
    with _client(create_app(settings)) as client:
        response = client.post("/api/lis/cases", json=ORDER, headers=_auth(token))
        assert response.status_code in (200, 201), response.text
        assert _cli("token", "revoke", "lab", "--database-url", database_url).returncode == 0
        assert client.post("/api/lis/cases", json=ORDER, headers=_auth(token)).status_code == 401
    exported = _cli("audit", "export", "--database-url", database_url, "--subject", "token:lab")
    assert exported.returncode == 0, exported.stderr
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [(r["kind"], r["status"]) for r in rows] == [
        ("attempt", None),
        ("request", response.status_code),
    ]


# --- the audit trail ---


def test_phi_reads_and_writes_are_audited(samples_root: Path, database_url: str) -> None:
    app, tokens, _ = _app(samples_root, database_url)
    before = datetime.now(UTC)
    with _client(app) as client:
        sid = _svs(client, tokens["pathologist"])
        path = _auth(tokens["pathologist"])
        assert client.get(f"/api/slides/{sid}", headers=path).status_code == 200
        assert client.get(f"/api/slides/{sid}/associated/label", headers=path).status_code == 200
        assert client.get("/api/cases/S24-01234", headers=path).status_code == 200
        written = client.post("/api/lis/cases", json=ORDER, headers=_auth(tokens["lis"]))
        assert written.status_code in (200, 201), written.text
        rows = client.get("/api/audit?limit=1000", headers=_auth(tokens["admin"])).json()["items"]
    by_action = {(r["action"], r["kind"]): r for r in rows}
    detail = by_action[("GET /api/slides/{slide_id}", "request")]
    assert detail["subject"] == "token:pathologist" and detail["role"] == "pathologist"
    assert detail["token_name"] == "pathologist" and detail["method"] == "GET"
    assert detail["slide_id"] == sid and detail["status"] == 200
    assert detail["client"] and detail["request_id"]
    at = datetime.fromisoformat(detail["at"])
    assert at.utcoffset() == timedelta(0) and before <= at <= datetime.now(UTC)
    label = by_action[("GET /api/slides/{slide_id}/associated/{name}", "request")]
    assert label["slide_id"] == sid and label["status"] == 200
    assert by_action[("GET /api/cases/{accession}", "request")]["case_id"] == "S24-01234"
    attempt = by_action[("POST /api/lis/cases", "attempt")]
    done = by_action[("POST /api/lis/cases", "request")]
    assert attempt["subject"] == "token:lis" and attempt["status"] is None
    assert done["status"] == written.status_code and done["request_id"] == attempt["request_id"]
    assert attempt["id"] < done["id"]  # recorded before the write ran


def test_tile_reads_are_summarized(samples_root: Path, database_url: str) -> None:
    app, tokens, _ = _app(samples_root, database_url)
    with _client(app) as client:
        sid = _svs(client, tokens["admin"])
        for col in range(3):
            for row in range(2):
                url = f"/dz/{sid}_files/10/{col}_{row}.jpeg"
                assert client.get(url, headers=_auth(tokens["researcher"])).status_code == 200
        iiif = f"/iiif/3/{sid}/full/64,/0/default.jpg"
        assert client.get(iiif, headers=_auth(tokens["researcher"])).status_code == 200
        rows = client.get("/api/audit?kind=tiles", headers=_auth(tokens["admin"])).json()["items"]
    mine = [r for r in rows if r["subject"] == "token:researcher" and r["slide_id"] == sid]
    assert len(mine) == 1
    assert mine[0]["count"] == 7 and mine[0]["action"] == "GET tiles"
    assert mine[0]["at"] <= mine[0]["last_at"]


def test_odd_request_values_never_break_the_audit(samples_root: Path, database_url: str) -> None:
    """NUL bytes are refused at the door (PostgreSQL cannot store them); audit goes on."""
    app, tokens, _ = _app(samples_root, database_url)
    with _client(app) as client:
        path = _auth(tokens["pathologist"])
        assert client.get("/api/cases/S24%00X", headers=path).status_code == 400
        assert client.get("/api/slides/%00nothing", headers=path).status_code == 400
        odd_tile = client.get("/dz/%00nothing_files/9/0_0.jpeg", headers=path)
        assert odd_tile.status_code == 400
        long_id = client.get("/dz/" + "x" * 300 + "_files/9/0_0.jpeg", headers=path)
        assert long_id.status_code == 404
        sid = _svs(client, tokens["pathologist"])
        tile = f"/dz/{sid}_files/9/0_0.jpeg"
        got = client.get(tile, headers=_auth(tokens["researcher"]))
        assert got.status_code == 200, got.text
        admin = _auth(tokens["admin"])
        tiles = client.get("/api/audit?kind=tiles", headers=admin).json()["items"]
        # An over-long ID is cut to the column and does not keep the others from being written.
        assert sid in {r["slide_id"] for r in tiles}
        cases = client.get("/api/audit", params={"case": "S24\x00X"}, headers=admin)
        assert cases.status_code == 400
        long_subject = client.get("/api/audit", params={"subject": "x" * 500}, headers=admin)
        assert long_subject.status_code == 200 and long_subject.json()["items"] == []


def test_the_audit_trail_is_append_only(samples_root: Path, database_url: str) -> None:
    app, tokens, _ = _app(samples_root, database_url)
    with _client(app) as client:
        assert client.get("/api/slides", headers=_auth(tokens["pathologist"])).status_code == 200
    engine = _engine(database_url)
    try:
        count = "SELECT count(*) FROM security_audit_events"
        with engine.connect() as conn:
            before = conn.execute(text(count)).scalar()
        assert before
        for statement in (
            "UPDATE security_audit_events SET role = 'x'",
            "UPDATE security_audit_events SET status = 200 WHERE id = 1",
            "DELETE FROM security_audit_events",
            "DELETE FROM security_audit_events WHERE id = 1",
        ):
            with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
                conn.execute(text(statement))
        with engine.connect() as conn:
            assert conn.execute(text(count)).scalar() == before
            roles = conn.execute(text("SELECT DISTINCT role FROM security_audit_events"))
            assert "x" not in {r[0] for r in roles}
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                enabled = conn.execute(
                    text(
                        "SELECT tgenabled FROM pg_trigger WHERE tgname = "
                        "'security_audit_append_only'"
                    )
                )
                assert [r[0] for r in enabled] == ["O"]  # fires in every session
    finally:
        engine.dispose()


def test_audit_filters(samples_root: Path, database_url: str) -> None:
    from slideserver.security.audit import AuditQuery

    app, tokens, _ = _app(samples_root, database_url)
    admin = _auth(tokens["admin"])
    with _client(app) as client:
        path = _auth(tokens["pathologist"])
        sid = _svs(client, tokens["pathologist"])
        client.get(f"/api/slides/{sid}", headers=path)
        client.get("/api/cases/S24-01234", headers=path)
        client.get("/api/cases/S24-77777", headers=path)  # 404
        client.get(f"/dz/{sid}_files/9/0_0.jpeg", headers=_auth(tokens["researcher"]))
        client.post("/api/lis/cases", json=ORDER, headers=_auth(tokens["lis"]))

        def items(**params: object) -> list[dict[str, Any]]:
            """Matching rows but the admin's own (reading the trail is audited too)."""
            response = client.get("/api/audit", params={"limit": 1000, **params}, headers=admin)
            assert response.status_code == 200, response.text
            rows: list[dict[str, Any]] = response.json()["items"]
            return [r for r in rows if r["subject"] != "token:admin"]

        everything = items()
        assert len(everything) >= 7
        ids = [r["id"] for r in everything]
        assert ids == sorted(ids, reverse=True)  # newest first

        mine = items(subject="token:pathologist")
        assert {r["action"] for r in mine} == {
            "GET /api/slides",
            "GET /api/slides/{slide_id}",
            "GET /api/cases/{accession}",
        }
        assert {r["kind"] for r in items(role="lis")} == {"attempt", "request"}
        assert [r["action"] for r in items(kind="attempt")] == ["POST /api/lis/cases"]
        assert [r["count"] for r in items(kind="tiles")] == [1]
        assert {r["action"] for r in items(action="/api/cases/")} == {"GET /api/cases/{accession}"}
        assert items(action="GET_/api") == [] and items(action="%") == []  # no LIKE wildcards
        assert {(r["kind"], r["subject"]) for r in items(slide=sid)} == {
            ("request", "token:pathologist"),
            ("tiles", "token:researcher"),
        }
        # The case's rows: the case read, and the reads of its slide (detail and tiles).
        by_case = items(case="S24-01234")
        assert {r["action"] for r in by_case} == {
            "GET /api/cases/{accession}",
            "GET /api/slides/{slide_id}",
            "GET tiles",
        }
        assert [r["status"] for r in by_case if "cases" in r["action"]] == [200]
        assert [r["case_id"] for r in items(status=404)] == ["S24-77777"]

        first = datetime.fromisoformat(everything[-1]["at"])
        last = datetime.fromisoformat(everything[0]["at"])
        assert len(items(since=first.isoformat())) == len(everything)
        assert items(since=(last + timedelta(minutes=1)).isoformat()) == []
        assert items(until=(first - timedelta(minutes=1)).isoformat()) == []
        shifted = (first - timedelta(seconds=1)).astimezone(timezone(timedelta(hours=2)))
        assert len(items(since=shifted.isoformat())) == len(everything)  # offsets respected
        naive_utc = (last + timedelta(hours=1)).astimezone(UTC).replace(tzinfo=None)
        assert len(items(until=naive_utc.isoformat())) == len(everything)  # naive means UTC

        pages: list[int] = []
        cursor: str | None = None
        while True:
            params: dict[str, object] = {"limit": 2, "subject": "token:pathologist"}
            if cursor:
                params["cursor"] = cursor
            page = client.get("/api/audit", params=params, headers=admin).json()
            pages.extend(r["id"] for r in page["items"])
            cursor = page["next"]
            if cursor is None:
                break
        assert pages == [r["id"] for r in mine]

        assert client.get("/api/audit", headers=path).status_code == 403
        assert client.get("/api/audit?since=yesterday", headers=admin).status_code == 400
        assert client.get("/api/audit?status=99", headers=admin).status_code == 400
        audit = app.state.security.audit
        exported = list(audit.export(AuditQuery(subject="token:pathologist"), batch=2))
        assert [e.id for e in exported] == sorted(pages)


# --- failing closed, PostgreSQL only ---


def _admin(url: str) -> Engine:
    return create_engine(url, isolation_level="AUTOCOMMIT")


@pytest.mark.postgres
def test_phi_requests_fail_closed_when_the_app_role_may_not_insert_audit_rows(
    samples_root: Path, postgres_url: str
) -> None:
    """The app runs as an ordinary role with DML rights only (the owner ran the migrations).

    Revoking its INSERT on ``security_audit_events`` is what a real deployment can get wrong
    (a DBA tightening grants, a restored dump without them): every audit write then fails with
    ``permission denied`` from PostgreSQL itself, nothing faked in the app.
    """
    from slideserver.api.app import create_app
    from slideserver.catalog.migrations import upgrade as upgrade_catalog
    from slideserver.db.engine import writer
    from slideserver.security.migrations import upgrade
    from tests.conftest import SECURITY_ROLES, make_tokens

    owner = _engine(postgres_url)
    upgrade_catalog(writer(owner))
    upgrade(writer(owner))
    owner.dispose()
    role = f"slideserver_app_{uuid.uuid4().hex[:8]}"
    admin = _admin(postgres_url)
    app_url = make_url(postgres_url).set(username=role).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"))
        conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {role}"))
        conn.execute(
            text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
        )
        conn.execute(text(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}"))
    try:
        settings = _settings(samples_root, app_url)
        tokens = make_tokens(settings, {r: (r, "") for r in SECURITY_ROLES})
        app = create_app(settings)
        with _client(app) as client:
            path = _auth(tokens["pathologist"])
            sid = _svs(client, tokens["pathologist"])
            phi = (
                f"/api/slides/{sid}",
                f"/api/slides/{sid}/associated/label",
                "/api/slides",
                "/api/cases/S24-01234",
            )
            for url in phi:
                assert client.get(url, headers=path).status_code == 200, url

            with admin.connect() as conn:
                conn.execute(text(f"REVOKE INSERT ON security_audit_events FROM {role}"))
            for url in phi:
                response = client.get(url, headers=path)
                assert response.status_code == 503, url
                assert response.json()["error"] == "audit_unavailable"
                assert "DOE" not in response.text and "MRN" not in response.text
            refused = client.post("/api/lis/cases", json=ORDER, headers=_auth(tokens["lis"]))
            assert refused.status_code == 503
            tile = client.get(f"/dz/{sid}_files/9/0_0.jpeg", headers=_auth(tokens["researcher"]))
            assert tile.status_code == 200  # tiles are not PHI: counted, written later

            with admin.connect() as conn:
                conn.execute(text(f"GRANT INSERT ON security_audit_events TO {role}"))
            # The refused write never ran: the case does not exist.
            assert client.get("/api/cases/S24-09999", headers=path).status_code == 404
            assert client.get(f"/api/slides/{sid}", headers=path).status_code == 200
            rows = client.get("/api/audit?kind=tiles", headers=_auth(tokens["admin"])).json()
            assert [(r["subject"], r["count"]) for r in rows["items"]] == [("token:researcher", 1)]
            # The app's role may insert again, and still neither change nor delete rows. The
            # row triggers do not fire on TRUNCATE: that the role lacks the privilege stops it.
            engine = _engine(app_url)
            try:
                for statement in (
                    "UPDATE security_audit_events SET status = 200",
                    "DELETE FROM security_audit_events",
                ):
                    with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
                        conn.execute(text(statement))
                with pytest.raises(Exception, match="permission denied"), engine.begin() as conn:
                    conn.execute(text("TRUNCATE security_audit_events"))
            finally:
                engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
        admin.dispose()


@pytest.mark.postgres
def test_the_samples_live_in_postgresql(samples_root: Path, postgres_url: str) -> None:
    """Guard against the suite silently falling back to SQLite: rows are in PostgreSQL."""
    app, tokens, _ = _app(samples_root, postgres_url)
    with _client(app) as client:
        assert client.get("/api/slides", headers=_auth(tokens["pathologist"])).status_code == 200
        assert app.state.security.engine.dialect.name == "postgresql"
    engine = _engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM security_api_tokens")).scalar() == 4
            assert conn.execute(text("SELECT count(*) FROM security_audit_events")).scalar()
            scans = conn.execute(text("SELECT count(*) FROM scans WHERE relpath = :p"), {"p": SVS})
            assert scans.scalar() == 1
    finally:
        engine.dispose()


def test_sec0003_keeps_the_rows_of_an_older_trail_and_its_append_only_guard(
    empty_database_url: str,
) -> None:
    from alembic import command

    from slideserver.db.engine import writer
    from slideserver.security.migrations import alembic_config, upgrade

    engine = _engine(empty_database_url)
    try:
        with writer(engine).begin() as conn:
            command.upgrade(alembic_config(conn), "sec0002")
        with writer(engine).begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO security_audit_events (at, kind, subject, role, action, method, "
                    "slide_id, count) VALUES (:at, 'request', 'token:p', 'pathologist', "
                    "'GET /api/slides/{slide_id}', 'GET', 'sid', 1)"
                ),
                {"at": datetime.now(UTC)},
            )
        upgrade(writer(engine))
        assert _security_version(engine) == ["sec0003"]
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT slide_id, resource FROM security_audit_events"))
            assert rows.all() == [("sid", None)]
        with pytest.raises(Exception, match="append-only"), writer(engine).begin() as conn:
            conn.execute(text("UPDATE security_audit_events SET resource = 'associated/label'"))
    finally:
        engine.dispose()
