"""Readiness asks the catalog: a catalog that cannot answer takes the process out of rotation."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from slideserver.api.app import create_app
from slideserver.api.routes.health import catalog_answers
from slideserver.catalog.memory import MemoryCatalog
from slideserver.catalog.sql import SqlCatalog
from slideserver.errors import BackendUnavailable
from slideserver.readers.registry import default_registry
from slideserver.settings import Settings


def test_readyz_reports_every_check_ok(client: Any) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"catalog": "ok", "cache": "ok"}}


def test_every_catalog_answers_ping(tmp_path: Path, samples_root: Path) -> None:
    registry = default_registry()
    memory = MemoryCatalog((samples_root,), registry)
    sql = SqlCatalog(f"sqlite:///{tmp_path / 'catalog.db'}", (samples_root,), registry)
    try:
        memory.ping()  # answers by returning; a catalog that cannot answer raises
        sql.ping()
    finally:
        sql.close()


@pytest.mark.postgres
def test_readyz_is_503_once_the_catalog_database_stops(tiny_slides: Any) -> None:
    from tests.postgres import find_bin_dir, temp_postgres

    if find_bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (no initdb); `make system-deps` installs it")
    tiny_slides("a.tif")
    with temp_postgres() as server:
        settings = Settings(roots=(tiny_slides.root,), database_url=server.create_database("ready"))
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            assert client.get("/readyz").json()["checks"]["catalog"] == "ok"
            server.stop()
            response = client.get("/readyz")
            assert response.status_code == 503
            assert response.json() == {
                "status": "unavailable",
                "checks": {"catalog": "unavailable", "cache": "ok"},
            }
            assert client.get("/healthz").status_code == 200  # alive, just not ready


class _UnanswerableCatalog(MemoryCatalog):
    """A catalog whose database never answers: ``ping`` waits until the test releases it."""

    def __init__(self, release: threading.Event) -> None:
        super().__init__((), default_registry())
        self.release = release

    def ping(self) -> None:
        self.release.wait(30)
        raise BackendUnavailable("the catalog database does not answer")


def test_a_catalog_that_hangs_is_not_ready_after_the_timeout() -> None:
    release = threading.Event()
    try:
        answered = asyncio.run(catalog_answers(_UnanswerableCatalog(release), timeout=0.05))
    finally:
        release.set()
    assert answered is False


def test_a_catalog_that_fails_is_not_ready() -> None:
    release = threading.Event()
    release.set()
    assert asyncio.run(catalog_answers(_UnanswerableCatalog(release))) is False
