"""Backups and restores of the catalog database, on real SQLite files and a real PostgreSQL.

A backup taken while a thread keeps writing LIS orders, LIS messages and audit rows holds
exactly the rows committed before it (every one of them, none half-written); after the
database is destroyed, a restore into an empty one brings them all back. Corrupted backups and
non-empty targets are refused before anything is written. The server's own schedule makes
backups one process at a time, keeps only the newest N, and shows the outcome in ``/readyz``
and the metrics.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from slideserver.settings import Settings

WATCHED = ("patients", "cases", "inbound_messages", "security_audit_events")
"""Tables the writer thread adds rows to during the backup."""


def wait_until(condition: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    """Poll ``condition`` until it holds; fail (not time) the test if it never does."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.05)


# --- databases ---


@dataclass
class Databases:
    """A source database to back up, and ways to destroy it and to get empty ones.

    ``destroy`` deletes the SQLite file; on PostgreSQL it drops the database and creates an
    empty one of the same name (restores go into an existing, empty database).
    """

    url: str
    fresh: Callable[[], str]
    destroy: Callable[[], None]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Databases]:
    """Per backend: SQLite files in ``tmp_path``; PostgreSQL databases created, then dropped."""
    if request.param == "sqlite":
        source = tmp_path / "catalog.db"
        count = iter(range(1000))

        def destroy_file() -> None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{source}{suffix}").unlink(missing_ok=True)

        yield Databases(
            f"sqlite:///{source}",
            lambda: f"sqlite:///{tmp_path / f'empty-{next(count)}.db'}",
            destroy_file,
        )
        return
    server = request.getfixturevalue("postgres_server")
    names: list[str] = []

    def create() -> str:
        names.append(f"ops_{uuid.uuid4().hex[:12]}")
        return str(server.create_database(names[-1]))

    admin = create_engine(server.url("postgres"), isolation_level="AUTOCOMMIT")

    def drop(name: str) -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def drop_and_recreate_empty() -> None:
        # The database is lost; the operator creates an empty one of the same name to restore to.
        drop(names[0])
        server.create_database(names[0])

    source_url = create()
    try:
        yield Databases(source_url, create, drop_and_recreate_empty)
    finally:
        for name in names:
            drop(name)
        admin.dispose()


def _settings(url: str, **overrides: Any) -> Settings:
    return Settings(database_url=url, **overrides)


class Writer(threading.Thread):
    """Applies LIS orders, records their messages and writes audit rows until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        from slideserver.catalog.sql import open_catalog
        from slideserver.readers.registry import default_registry
        from slideserver.security import Security

        self.catalog = open_catalog(_settings(url), default_registry())
        self.security = Security(_settings(url))
        self.security.open()
        self.done = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def write_one(self) -> None:
        from slideserver.lis.json_orders import parse_case_order
        from slideserver.security.audit import AuditEvent

        n = self.done
        body = {"accession": f"S24-{n:05d}", "patient": {"identifier": f"MRN-{n:07d}"}}
        self.catalog.apply_order(parse_case_order(body))
        self.catalog.record_message("json", json.dumps(body), "accepted")
        assert self.security.audit is not None
        self.security.audit.write(
            AuditEvent(
                at=datetime.now(UTC),
                kind="request",
                subject="token:lis",
                role="lis",
                action="POST /api/lis/cases",
                method="POST",
                case_id=f"S24-{n:05d}",
                status=200,
            )
        )
        self.done += 1

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.write_one()
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc

    def close(self) -> None:
        self.stop.set()
        if self.ident is not None:  # started
            self.join(timeout=60)
        self.security.close()
        self.catalog.close()


def _rows(url: str) -> dict[str, dict[int, tuple[Any, ...]]]:
    """Every row of the watched tables, by id."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                table: {
                    row[0]: tuple(row)
                    for row in conn.execute(text(f"SELECT * FROM {table} ORDER BY id"))
                }
                for table in WATCHED
            }
    finally:
        engine.dispose()


def _populated(url: str, orders: int = 3) -> None:
    writer = Writer(url)
    try:
        for _ in range(orders):
            writer.write_one()
    finally:
        writer.close()


# --- backup under load, destroy, restore ---


def test_restore_after_losing_the_database_brings_back_every_row_of_the_backup(
    databases: Databases, tmp_path: Path
) -> None:
    from slideserver.ops.backup import create_backup, restore_backup

    writer = Writer(databases.url)
    writer.start()
    try:
        wait_until(lambda: writer.done >= 10, "the writer committed its first orders")
        info = create_backup(databases.url, tmp_path / "backups")
        after = writer.done
        wait_until(lambda: writer.done >= after + 10, "the writer went on after the backup")
    finally:
        writer.close()
    assert writer.error is None
    before_loss = _rows(databases.url)
    # The writer kept writing: the database now holds more than the backup counted.
    assert len(before_loss["cases"]) > info.manifest.tables["cases"]

    databases.destroy()
    restored = restore_backup(info.path, databases.url)

    assert restored.tables == info.manifest.tables
    after_restore = _rows(databases.url)
    for table in WATCHED:
        rows = after_restore[table]
        assert len(rows) == info.manifest.tables[table] > 0
        # Every row committed before the backup is there, unchanged, and nothing later.
        newest = max(rows)
        expected = {i: row for i, row in before_loss[table].items() if i <= newest}
        assert rows == expected, table


def test_restored_database_serves_its_cases_and_tokens(
    databases: Databases, tmp_path: Path
) -> None:
    from slideserver.catalog.sql import open_catalog
    from slideserver.ops.backup import create_backup, restore_backup
    from slideserver.readers.registry import default_registry
    from slideserver.security import Security

    _populated(databases.url)
    security = Security(_settings(databases.url))
    security.open()
    try:
        assert security.tokens is not None
        _, token = security.tokens.create("reader", "pathologist", "", None)
    finally:
        security.close()
    info = create_backup(databases.url, tmp_path / "backups")
    databases.destroy()
    restore_backup(info.path, databases.url)

    catalog = open_catalog(_settings(databases.url), default_registry())
    restored_security = Security(_settings(databases.url))
    restored_security.open()
    try:
        assert catalog.get_case("S24-00002") is not None
        assert restored_security.tokens is not None
        assert restored_security.tokens.authenticate(token) is not None
    finally:
        restored_security.close()
        catalog.close()


def test_manifest_lists_source_schema_counts_and_checksums(
    databases: Databases, tmp_path: Path
) -> None:
    from slideserver.catalog.migrations import head_revision as catalog_head
    from slideserver.ops.backup import create_backup
    from slideserver.ops.manifest import sha256_of
    from slideserver.security.migrations import head_revision as security_head

    _populated(databases.url, orders=4)
    info = create_backup(databases.url, tmp_path / "backups")
    manifest = json.loads((info.path / "manifest.json").read_text())

    kind = databases.url.split(":", 1)[0].split("+")[0]
    assert manifest["format"] == "slideserver-backup"
    assert manifest["format_version"] == 1
    assert manifest["source"] == kind
    assert datetime.fromisoformat(manifest["created_at"]).tzinfo is not None
    assert manifest["schema_versions"] == {
        "catalog": catalog_head(),
        "security": security_head(),
        "annotations": None,  # this database never held annotations
    }
    assert manifest["tables"]["cases"] == 4
    assert manifest["tables"]["security_audit_events"] == 4
    (name,) = manifest["files"]
    assert manifest["files"][name]["sha256"] == sha256_of(info.path / name)
    assert "postgres@" not in json.dumps(manifest)
    assert str(tmp_path) not in json.dumps(manifest)


def test_annotations_come_back_from_a_backup_with_their_spatial_index(
    databases: Databases, tmp_path: Path
) -> None:
    from slideserver.annotations.migrations import head_revision as annotations_head
    from slideserver.annotations.model import AnnotationIn, Layer
    from slideserver.annotations.store import AnnotationStore
    from slideserver.ops.backup import create_backup, restore_backup

    _populated(databases.url)
    store = AnnotationStore.open(databases.url)
    try:
        store.create_layer(Layer("case", "slide-1", "Case", "case", "token:p"))
        points = [
            AnnotationIn(
                "point",
                {"type": "Point", "coordinates": [x, x]},
                (x, x, x, x),
                id=f"a{x}",
                layer_id="case",
            )
            for x in range(0, 1000, 10)
        ]
        store.insert("slide-1", points, [{}] * len(points), "token:p")
    finally:
        store.close()
    info = create_backup(databases.url, tmp_path / "backups")
    assert info.manifest.schema_versions["annotations"] == annotations_head()
    assert info.manifest.tables["annotations"] == 100

    databases.destroy()
    restore_backup(info.path, databases.url)
    restored = AnnotationStore.open(databases.url)
    try:
        found, _ = restored.query("slide-1", ["case"], (95, 95, 205, 205))
        assert [a.id for a in found] == [f"a{x}" for x in range(100, 210, 10)]
        assert len(restored.history("a500")[1]) == 1
    finally:
        restored.close()


def test_backup_leaves_no_partial_folder_behind(databases: Databases, tmp_path: Path) -> None:
    from slideserver.ops.backup import create_backup

    _populated(databases.url)
    info = create_backup(databases.url, tmp_path / "backups")
    assert [p.name for p in (tmp_path / "backups").iterdir()] == [info.path.name]


# --- refusals ---


def _flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _tables_in(url: str) -> list[str]:
    from sqlalchemy import inspect

    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return []
    engine = create_engine(url)
    try:
        return inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_corrupted_backup_is_refused_and_nothing_is_written(
    databases: Databases, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from slideserver.cli import main
    from slideserver.ops.backup import create_backup

    _populated(databases.url)
    info = create_backup(databases.url, tmp_path / "backups")
    _flip_one_byte(info.path / info.manifest.database_file)
    target = databases.fresh()

    status = main(["restore", str(info.path), "--database-url", target])

    assert status == 2
    err = capsys.readouterr().err
    assert f"backup file {info.manifest.database_file} does not match its SHA-256" in err
    assert "nothing was restored" in err
    assert _tables_in(target) == []


def test_restore_into_a_database_that_holds_tables_is_refused(
    databases: Databases, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from slideserver.cli import main
    from slideserver.ops.backup import create_backup

    _populated(databases.url)
    info = create_backup(databases.url, tmp_path / "backups")
    before = _rows(databases.url)

    status = main(["restore", str(info.path), "--database-url", databases.url])

    assert status == 2
    assert "the target database is not empty" in capsys.readouterr().err
    assert _rows(databases.url) == before


def test_restore_with_counts_differing_from_the_manifest_fails(
    databases: Databases, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from slideserver.cli import main
    from slideserver.ops.backup import create_backup

    _populated(databases.url)
    info = create_backup(databases.url, tmp_path / "backups")
    manifest_path = info.path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["tables"]["cases"] += 1
    manifest_path.write_text(json.dumps(manifest))

    status = main(["restore", str(info.path), "--database-url", databases.fresh()])

    assert status == 1
    assert "cases: 4 in the backup, 3 restored" in capsys.readouterr().err


def test_backup_command_writes_a_backup_folder(
    databases: Databases, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from slideserver.cli import main
    from slideserver.ops.backup import list_backups

    _populated(databases.url)
    status = main(["backup", str(tmp_path / "backups"), "--database-url", databases.url])

    assert status == 0
    (made,) = list_backups(tmp_path / "backups")
    assert f"backup written: {tmp_path / 'backups' / made.name}" in capsys.readouterr().out


def test_backup_of_a_missing_sqlite_database_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from slideserver.cli import main

    url = f"sqlite:///{tmp_path / 'nothing.db'}"
    status = main(["backup", str(tmp_path / "backups"), "--database-url", url])

    assert status == 1
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "nothing.db").exists()


# --- the schedule ---


def test_one_process_at_a_time_makes_the_scheduled_backup(
    databases: Databases, tmp_path: Path
) -> None:
    from slideserver.metrics import Metrics
    from slideserver.ops.backup import list_backups
    from slideserver.ops.schedule import BackupSchedule

    _populated(databases.url)
    settings = _settings(databases.url, backup_dir=str(tmp_path / "backups"), backup_interval=3600)
    first, second = BackupSchedule(settings, Metrics()), BackupSchedule(settings, Metrics())

    with first.lock() as held:
        assert held
        second.run_once()
    assert second.last is None
    assert list_backups(tmp_path / "backups") == []

    first.run_once()
    second.run_once()

    (made,) = list_backups(tmp_path / "backups")
    assert first.last is not None and first.last.ok and first.last.name == made.name
    assert first.last.verified == "restored into a scratch database"
    assert second.last is not None and second.last.name == made.name
    assert second.last.verified == "made by another process"


def _app_client(url: str, samples_root: Path, **overrides: Any) -> tuple[Any, dict[str, str]]:
    from starlette.testclient import TestClient

    from slideserver.api.app import create_app
    from tests.conftest import _security_settings, make_tokens

    settings = _security_settings(samples_root, url, **overrides)
    tokens = make_tokens(settings, {"admin": ("admin", "")})
    return TestClient(create_app(settings)), {"Authorization": f"Bearer {tokens['admin']}"}  # type: ignore[arg-type]


def test_scheduled_backups_run_keep_the_newest_and_show_in_readyz(
    databases: Databases, tmp_path: Path, samples_root: Path
) -> None:
    from slideserver.ops.backup import list_backups

    folder = tmp_path / "backups"
    client, admin = _app_client(
        databases.url, samples_root, backup_dir=str(folder), backup_interval=1, backup_keep=2
    )
    seen: set[str] = set()

    def three_made() -> bool:
        seen.update(p.name for p in list_backups(folder))
        return len(seen) >= 3

    with client:
        wait_until(three_made, "three scheduled backups were made", limit=120)
        ready = client.get("/readyz")
        metrics = client.get("/metrics", headers=admin).text

    assert len(list_backups(folder)) == 2
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ok"
    assert body["checks"]["backup"] == "ok"
    assert body["details"]["backup"]["ok"] is True
    assert body["details"]["backup"]["bytes"] > 0
    assert body["details"]["backup"]["name"].startswith("slideserver-backup-")
    success = next(
        line for line in metrics.splitlines() if line.startswith("slideserver_backup_last_success")
    )
    assert float(success.split()[1]) > 0
    assert "slideserver_backup_failures_total 0" in metrics


def test_failing_scheduled_backup_makes_readyz_degraded_and_is_logged(
    tmp_path: Path, samples_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    client, admin = _app_client(
        f"sqlite:///{tmp_path / 'catalog.db'}",
        samples_root,
        backup_dir=str(blocker / "backups"),
        backup_interval=1,
    )
    with client:
        wait_until(
            lambda: client.get("/readyz").json()["checks"]["backup"] != "pending",
            "the first scheduled backup was tried",
        )
        ready = client.get("/readyz")
        metrics = client.get("/metrics", headers=admin).text

    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "degraded"
    reason = "cannot write to the backup folder (Not a directory)"
    assert body["checks"]["backup"] == f"failing: {reason}"
    assert body["details"]["backup"]["ok"] is False
    assert str(tmp_path) not in ready.text
    failures = next(
        line for line in metrics.splitlines() if line.startswith("slideserver_backup_failures")
    )
    assert int(failures.split()[1]) >= 1
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "BACKUP FAILED" in r.message]
    assert errors and all(str(tmp_path) not in r.getMessage() for r in errors)
