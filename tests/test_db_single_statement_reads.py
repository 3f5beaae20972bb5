"""The reads every request makes cost the pool's ping and the statement, no transaction around.

Counted on the wire: libpq's trace of each connection lists every message slideserver sends to
PostgreSQL; a round trip ends with a simple ``Query`` or with the ``Sync`` of a prepared one.
A slide look-up and a session check used to be four (ping, ``BEGIN``, the statement,
``ROLLBACK``); under the shift change's peak each waited for the database's turn on the CPU.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event

pytestmark = pytest.mark.postgres


class WireTrace:
    """libpq traces of the connections an engine opens, read back as round trips."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files: list[Any] = []

    def attach(self, engine: Engine) -> None:
        event.listen(engine, "connect", self._trace)

    def _trace(self, dbapi_connection: Any, _record: Any) -> None:
        handle = (self.folder / f"trace-{len(self.files)}.txt").open("w")
        self.files.append(handle)
        dbapi_connection.pgconn.trace(handle.fileno())

    def mark(self) -> int:
        """The round trips so far (call before and after what is counted)."""
        total = 0
        for handle in self.files:
            handle.flush()
            text = Path(handle.name).read_text()
            total += len(re.findall(r"\tF\t\d+\t(?:Query|Sync)\b", text))
        return total

    def close(self) -> None:
        for handle in self.files:
            handle.close()


@pytest.fixture
def wire(tmp_path: Path) -> Iterator[WireTrace]:
    trace = WireTrace(tmp_path)
    yield trace
    trace.close()


@pytest.fixture
def pg_url(postgres_server: Any, postgres_catalog_url: str) -> str:
    postgres_server.truncate_all("catalog")
    return postgres_catalog_url


def test_a_slide_look_up_is_the_ping_and_one_statement(
    pg_url: str, tmp_path: Path, wire: WireTrace
) -> None:
    from slideserver.catalog.sql import SqlCatalog
    from slideserver.readers.registry import default_registry

    catalog = SqlCatalog(pg_url, [tmp_path], default_registry())
    try:
        wire.attach(catalog.engine)
        catalog.engine.dispose()  # the next connection is a traced one
        assert catalog.get("no-such-slide") is None  # opens and traces the connection
        before = wire.mark()
        assert catalog.get("no-such-slide") is None
        assert wire.mark() - before == 2
    finally:
        catalog.close()


def test_a_session_check_is_the_ping_and_one_statement(
    pg_url: str, samples_root: Path, wire: WireTrace
) -> None:
    from datetime import timedelta

    from slideserver.security import Security
    from tests.conftest import _security_settings

    settings = _security_settings(samples_root, pg_url, session_check_ttl=0.0)
    security = Security(settings)  # type: ignore[arg-type]
    security.open()
    try:
        assert security.engine is not None and security.sessions is not None
        assert security.tokens is not None
        token = security.tokens.create("viewer", "pathologist", "", timedelta(days=1))[1]
        principal = security.tokens.check(token).principal
        assert principal is not None
        wire.attach(security.engine)
        security.engine.dispose()
        session = security.sessions.open(principal, 3600)
        assert security.sessions.is_live(session)
        before = wire.mark()
        assert security.sessions.is_live(session)
        assert wire.mark() - before == 2
    finally:
        security.close()
