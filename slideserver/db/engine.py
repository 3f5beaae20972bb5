"""Database engines for the catalog: the URL rules, SQLite tuning, and write transactions.

SQLite runs in WAL mode (readers never wait for the scanner) with a busy timeout, and write
transactions start with ``BEGIN IMMEDIATE`` so that two writers queue on the lock instead of
failing half-way with "database is locked". PostgreSQL needs nothing special.
"""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import ConnectionPoolEntry

from slideserver.settings import Settings

DB_NAME = ".slideserver.db"
BUSY_TIMEOUT_MS = 30_000
_BEGIN = "slideserver_sqlite_begin"


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
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
    )
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def writer(engine: Engine) -> Engine:
    """Return ``engine`` opening transactions that write (``BEGIN IMMEDIATE`` on SQLite)."""
    return engine.execution_options(**{_BEGIN: "BEGIN IMMEDIATE"})


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
