"""Database engines for the catalog: the URL rules, SQLite tuning, and write transactions.

SQLite runs in WAL mode (readers never wait for the scanner) with a busy timeout, and write
transactions start with ``BEGIN IMMEDIATE`` so that two writers queue on the lock instead of
failing half-way with "database is locked". PostgreSQL connections are checked before use
(``pool_pre_ping``: a restarted server costs no failed request once it is back), and every wait
on it is bounded (connecting, a pool slot, a statement) so a hung server cannot hold worker
threads forever. Failures of either database raise domain errors (:mod:`slideserver.db.errors`).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import ConnectionPoolEntry

from slideserver.db.errors import DISK_FULL, translate_errors
from slideserver.errors import InsufficientStorage
from slideserver.settings import Settings

DB_NAME = ".slideserver.db"
BUSY_TIMEOUT_MS = 30_000
_BEGIN = "slideserver_sqlite_begin"
PG_CONNECT_TIMEOUT = 5
"""Seconds a PostgreSQL connection attempt may take (an unreachable host fails in bounded time)."""
PG_STATEMENT_TIMEOUT_MS = 60_000
"""Longest statement PostgreSQL runs for us before cancelling it (a hung lock, a runaway scan)."""
PG_POOL_SIZE = 10
"""Connections each engine keeps open. Busy processes use more than a few at once (worker threads
ask for sessions, slides and audit rows together); beyond the kept ones, a connection is opened
for one request and closed after it (a new PostgreSQL backend each time: under the shift-change
peak, a fork every few requests)."""
PG_POOL_OVERFLOW = 5
"""Connections an engine may open beyond :data:`PG_POOL_SIZE`: 15 in all, as before, so three
engines (catalog, security, annotations) of two instances stay within PostgreSQL's default 100."""
PG_POOL_TIMEOUT = 10
"""Seconds a request waits for a free pooled connection before the catalog counts as unavailable."""


def now() -> datetime:
    """Return the current time, timezone-aware (stored as UTC)."""
    return datetime.now(UTC)


def default_database_url(settings: Settings) -> str:
    """Return the catalog URL the settings ask for.

    ``database_url`` wins; otherwise a SQLite file ``.slideserver.db`` in the first root when
    that folder is writable, else in the working folder.
    """
    if settings.database_url:
        return normalise_url(settings.database_url)
    folder = Path(".")
    if settings.roots and os.access(settings.roots[0], os.W_OK):
        folder = Path(settings.roots[0])
    return f"sqlite:///{(folder / DB_NAME).absolute()}"


def normalise_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs (SQLAlchemy would pick psycopg2)."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str) -> Engine:
    """Create the engine for ``url`` with the settings each database needs."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = create_engine(
            url,
            pool_pre_ping=True,
            pool_size=PG_POOL_SIZE,
            max_overflow=PG_POOL_OVERFLOW,
            pool_timeout=PG_POOL_TIMEOUT,
            connect_args=_postgres_connect_args(parsed.query),
        )
        translate_errors(engine)
        return engine
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
    )
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    translate_errors(engine)
    return engine


def _postgres_connect_args(query: Mapping[str, Any]) -> dict[str, Any]:
    """Bounded waits and dead-peer detection, unless the URL sets them itself."""
    args: dict[str, Any] = {
        "connect_timeout": PG_CONNECT_TIMEOUT,
        # TCP keepalives notice a server that vanished without closing the connection.
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        "options": f"-c statement_timeout={PG_STATEMENT_TIMEOUT_MS}",
    }
    return {name: value for name, value in args.items() if name not in query}


def writer(engine: Engine) -> Engine:
    """Return ``engine`` opening transactions that write (``BEGIN IMMEDIATE`` on SQLite)."""
    return engine.execution_options(**{_BEGIN: "BEGIN IMMEDIATE"})


def single_statement_reads(engine: Engine) -> Engine:
    """Return ``engine`` for reads made of one statement: on PostgreSQL, outside a transaction.

    A transaction costs a ``BEGIN`` and a ``ROLLBACK`` round trip around the statement, and a
    statement alone is atomic and sees one snapshot anyway. Under a peak (every pathologist's
    tiles checking their session, every slide looked up) those round trips, each waiting for
    the database's turn on the CPU, were most of the time. SQLite keeps its own ``BEGIN``.
    """
    if engine.dialect.name != "postgresql":
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def check_free_space(engine: Engine, min_free_bytes: int) -> None:
    """Raise :class:`InsufficientStorage` when a SQLite file's folder has too little room left."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return
    stats = os.statvfs(Path(database).parent)
    if stats.f_bavail * stats.f_frsize < min_free_bytes:
        raise InsufficientStorage(DISK_FULL)


def _sqlite_connect(dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
    # Let SQLAlchemy emit BEGIN itself (pysqlite's implicit transactions break savepoints).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    options: dict[str, Any] = dict(connection.get_execution_options())
    connection.exec_driver_sql(options.get(_BEGIN, "BEGIN"))
