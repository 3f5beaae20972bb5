"""The catalog database failing: clear 503/507 answers, tiles of open slides flowing, recovery.

PostgreSQL is a real server stopped and started mid-run; SQLite lives on a real size-limited
tmpfs that the test fills and remounts read-only.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from slideserver.api.app import create_app
from slideserver.api.errors import error_status
from slideserver.errors import BackendUnavailable, InsufficientStorage
from slideserver.lis.json_orders import parse_case_order
from slideserver.settings import Settings
from tests.helpers import assert_error, slide_id

RECOVERY_DEADLINE = 30.0
"""Seconds the server has to serve catalog routes again once its database is back."""
UNREACHABLE = {
    "error": "backend_unavailable",
    "detail": "the catalog database is unreachable; retry shortly",
}
FIXTURES = Path(__file__).parent / "fixtures"


def recovered(client: Any, url: str) -> bool:
    """Poll ``url`` until it answers 200, within the recovery deadline."""
    deadline = time.monotonic() + RECOVERY_DEADLINE
    while time.monotonic() < deadline:
        if client.get(url).status_code == 200:
            return True
        time.sleep(0.2)
    return False


def json_order() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "lis" / "json_order.json").read_text())
    return data


# -- PostgreSQL stopped and started again --------------------------------------------------------


@pytest.fixture
def postgres_app(tiny_slides: Any) -> Iterator[tuple[Any, Any]]:
    from tests.postgres import find_bin_dir, temp_postgres

    if find_bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (no initdb); `make system-deps` installs it")
    tiny_slides("open.tif")
    tiny_slides("unopened.tif")
    with temp_postgres() as server:
        settings = Settings(
            roots=(tiny_slides.root,),
            database_url=server.create_database("faults"),
            fingerprint_ttl=0.001,  # every tile request past the first looks the slide up again
            catalog_record_ttl=0,
            auth="tokens",
        )
        app = create_app(settings)
        with TestClient(app, raise_server_exceptions=False) as client:
            _info, token = app.state.security.tokens.create("viewer", "pathologist")
            client.headers["Authorization"] = f"Bearer {token}"
            yield client, server


def lis_headers(client: Any) -> dict[str, str]:
    """Credentials of the LIS role (created while the database answers)."""
    _info, token = client.app.state.security.tokens.create("lis", "lis")
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.postgres
@pytest.mark.parametrize(
    "route",
    ["/api/slides", "/api/slides/{id}", "/api/cases/S24-01234", "/fhir/ImagingStudy?identifier=S"],
)
def test_catalog_routes_answer_503_while_postgres_is_stopped(
    postgres_app: tuple[Any, Any], route: str
) -> None:
    client, server = postgres_app
    sid = slide_id(client, "unopened.tif")
    server.pause()
    response = client.get(route.format(id=sid))
    assert response.status_code == 503
    assert response.json() == UNREACHABLE


@pytest.mark.postgres
def test_lis_writes_answer_503_while_postgres_is_stopped(postgres_app: tuple[Any, Any]) -> None:
    client, server = postgres_app
    headers = lis_headers(client)
    server.pause()
    response = client.post("/api/lis/cases", json=json_order(), headers=headers)
    assert response.status_code == 503
    assert response.json() == UNREACHABLE


@pytest.mark.postgres
def test_tiles_of_an_open_slide_keep_flowing_while_postgres_is_stopped(
    postgres_app: tuple[Any, Any],
) -> None:
    client, server = postgres_app
    open_id = slide_id(client, "open.tif")
    unopened_id = slide_id(client, "unopened.tif")
    assert client.get(f"/dz/{open_id}_files/9/0_0.jpeg").status_code == 200
    server.pause()
    assert client.get(f"/dz/{open_id}_files/9/1_1.jpeg").status_code == 200
    assert client.get(f"/dz/{open_id}.dzi").status_code == 200
    response = client.get(f"/dz/{unopened_id}_files/9/0_0.jpeg")
    assert response.status_code == 503
    assert response.json() == UNREACHABLE


@pytest.mark.postgres
def test_an_open_slide_stops_after_the_outage_grace(tiny_slides: Any) -> None:
    from tests.postgres import find_bin_dir, temp_postgres

    if find_bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (no initdb); `make system-deps` installs it")
    tiny_slides("open.tif")
    with temp_postgres() as server:
        settings = Settings(
            roots=(tiny_slides.root,),
            database_url=server.create_database("grace"),
            fingerprint_ttl=0.001,
            catalog_record_ttl=0,
            catalog_outage_grace=0,
        )
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            open_id = slide_id(client, "open.tif")
            assert client.get(f"/dz/{open_id}_files/9/0_0.jpeg").status_code == 200
            server.pause()
            assert_error(client.get(f"/dz/{open_id}_files/9/1_1.jpeg"), 503, "backend_unavailable")


@pytest.fixture
def short_credential_caches(tiny_slides: Any) -> Iterator[tuple[Any, Any, str]]:
    """An app whose token and session checks go to PostgreSQL again after 50 ms."""
    from tests.postgres import find_bin_dir, temp_postgres

    if find_bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (no initdb); `make system-deps` installs it")
    tiny_slides("open.tif")
    with temp_postgres() as server:
        settings = Settings(
            roots=(tiny_slides.root,),
            database_url=server.create_database("credentials"),
            auth="tokens",
            token_cache_ttl=0.05,
            session_check_ttl=0.05,
            session_secret="s" * 64,
        )
        app = create_app(settings)
        with TestClient(app, raise_server_exceptions=False) as client:
            _info, token = app.state.security.tokens.create("viewer", "pathologist")
            yield client, server, token


def past_the_credential_caches() -> None:
    time.sleep(0.2)  # the caches above expire: the next check asks the stopped database


@pytest.mark.postgres
def test_a_viewer_signed_in_with_a_token_keeps_getting_tiles_while_postgres_is_stopped(
    short_credential_caches: tuple[Any, Any, str],
) -> None:
    client, server, token = short_credential_caches
    client.headers["Authorization"] = f"Bearer {token}"
    open_id = slide_id(client, "open.tif")
    assert client.get(f"/dz/{open_id}_files/9/0_0.jpeg").status_code == 200
    server.pause()
    past_the_credential_caches()
    assert client.get(f"/dz/{open_id}_files/9/1_1.jpeg").status_code == 200


@pytest.mark.postgres
def test_a_viewer_session_keeps_getting_tiles_while_postgres_is_stopped(
    short_credential_caches: tuple[Any, Any, str],
) -> None:
    client, server, token = short_credential_caches
    signed_in = client.post(
        "/api/session",
        headers={"Authorization": f"Bearer {token}", "X-Requested-With": "slideserver"},
    )
    assert signed_in.status_code == 200, signed_in.text
    assert "authorization" not in client.headers  # from here on, the cookie alone
    open_id = slide_id(client, "open.tif")
    assert client.get(f"/dz/{open_id}_files/9/0_0.jpeg").status_code == 200
    server.pause()
    past_the_credential_caches()
    assert client.get(f"/dz/{open_id}_files/9/1_1.jpeg").status_code == 200


@pytest.mark.postgres
def test_a_token_never_checked_before_the_outage_answers_503(
    short_credential_caches: tuple[Any, Any, str],
) -> None:
    client, server, _token = short_credential_caches
    _info, other = client.app.state.security.tokens.create("late", "pathologist")
    server.pause()
    response = client.get("/api/session", headers={"Authorization": f"Bearer {other}"})
    assert_error(response, 503, "backend_unavailable")


@pytest.mark.postgres
def test_everything_recovers_without_a_restart_once_postgres_is_back(
    postgres_app: tuple[Any, Any],
) -> None:
    client, server = postgres_app
    sid = slide_id(client, "unopened.tif")
    headers = lis_headers(client)
    server.pause()
    assert client.get("/api/slides").status_code == 503
    assert client.get("/readyz").status_code == 503
    server.resume()
    assert recovered(client, "/api/slides")
    assert client.get(f"/api/slides/{sid}").status_code == 200
    assert client.get(f"/dz/{sid}_files/9/0_0.jpeg").status_code == 200
    assert client.post("/api/lis/cases", json=json_order(), headers=headers).status_code == 201
    assert client.get("/readyz").json()["status"] == "ok"


# -- SQLite on a full or read-only disk -----------------------------------------------------------


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs (we run as root in CI; skipped where mounting is not permitted)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    try:
        _mount("-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder))
    except (subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {exc}")
    try:
        yield folder
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["umount", "-l", str(folder)], check=True, timeout=30)


def fill(folder: Path) -> Path:
    """Write a file until the disk is full; return it (delete it to free the space)."""
    filler = folder / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as out:  # closing may fail too
        while True:
            out.write(b"\0" * 16384)
            out.flush()
            os.fsync(out.fileno())
    return filler


@pytest.fixture
def sqlite_app(small_disk: Path, tiny_slides: Any) -> Iterator[tuple[Any, Path]]:
    tiny_slides("open.tif")
    database = small_disk / "catalog.db"
    settings = Settings(
        roots=(tiny_slides.root,),
        database_url=f"sqlite:///{database}",
        database_min_free_bytes=256 * 1024,
        fingerprint_ttl=0.001,
        catalog_record_ttl=0,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, database


def integrity(database: Path) -> str:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def open_tile(client: Any) -> str:
    """View a tile of the slide (so it counts as open) and return the slide's ID."""
    sid = slide_id(client, "open.tif")
    assert client.get(f"/dz/{sid}_files/9/0_0.jpeg").status_code == 200
    return sid


def test_a_full_disk_makes_catalog_writes_raise_insufficient_storage(
    sqlite_app: tuple[Any, Path],
) -> None:
    client, database = sqlite_app
    catalog = client.app.state.slideserver.catalog
    fill(database.parent)
    with pytest.raises(InsufficientStorage) as raised:
        catalog.apply_order(parse_case_order(json_order()))
    assert error_status(raised.value) == 507
    assert raised.value.code == "insufficient_storage"


def test_a_full_disk_refuses_audited_requests_and_tiles_keep_flowing(
    sqlite_app: tuple[Any, Path],
) -> None:
    client, database = sqlite_app
    sid = open_tile(client)
    fill(database.parent)
    # Every catalog request is audited first, in the same database: it is refused, not served
    # unaudited.
    assert_error(client.get("/api/slides"), 503, "audit_unavailable")
    assert client.get(f"/dz/{sid}_files/9/1_1.jpeg").status_code == 200


def test_readyz_reports_a_full_disk(sqlite_app: tuple[Any, Path]) -> None:
    client, database = sqlite_app
    assert client.get("/readyz").json()["status"] == "ok"
    fill(database.parent)
    response = client.get("/readyz")
    assert response.status_code == 200  # reads and tiles still serve
    assert response.json() == {
        "status": "degraded",
        "checks": {"catalog": "ok", "cache": "ok", "catalog_writes": "disk_full"},
    }


def test_writes_work_again_once_space_is_freed_and_nothing_is_corrupted(
    sqlite_app: tuple[Any, Path],
) -> None:
    client, database = sqlite_app
    catalog = client.app.state.slideserver.catalog
    filler = fill(database.parent)
    with pytest.raises(InsufficientStorage):
        catalog.apply_order(parse_case_order(json_order()))
    filler.unlink()
    assert catalog.apply_order(parse_case_order(json_order())).created
    assert client.get("/api/slides").status_code == 200
    assert client.get("/readyz").json()["status"] == "ok"
    assert integrity(database) == "ok"


def test_a_disk_turned_read_only_answers_503_and_recovers_once_writable(
    sqlite_app: tuple[Any, Path],
) -> None:
    client, database = sqlite_app
    catalog = client.app.state.slideserver.catalog
    sid = open_tile(client)
    # Linux refuses to remount a disk read-only while files on it are open for writing, so the
    # pooled connections are closed first (as a restart of the pool would); the next ones find
    # the disk read-only. A WAL database cannot even be read there (its shared-memory file
    # cannot be created), so the catalog is unavailable, not just its writes.
    catalog.engine.dispose()
    client.app.state.security.engine.dispose()
    client.app.state.annotations.engine.dispose()
    if client.app.state.reports is not None:
        client.app.state.reports.store.engine.dispose()
    _mount("-o", "remount,ro", str(database.parent))
    with pytest.raises(BackendUnavailable) as raised:
        catalog.apply_order(parse_case_order(json_order()))
    assert error_status(raised.value) == 503
    response = client.get("/api/slides")
    assert response.status_code == 503
    assert response.json()["error"] == "backend_unavailable"
    assert client.get("/readyz").status_code == 503
    assert client.get(f"/dz/{sid}_files/9/1_1.jpeg").status_code == 200
    _mount("-o", "remount,rw", str(database.parent))
    assert catalog.apply_order(parse_case_order(json_order())).created
    assert client.get("/api/slides").status_code == 200
    assert client.get("/readyz").json()["status"] == "ok"
    assert integrity(database) == "ok"
