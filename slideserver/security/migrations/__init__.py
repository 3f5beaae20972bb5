"""Alembic migrations of the security tables, separate from the catalog's.

They live in the catalog database but keep their own version table
(:data:`VERSION_TABLE`), so the two chains never see each other's revisions. ``upgrade(engine)``
is safe to run from several processes at once (advisory lock on PostgreSQL, the write lock on
SQLite, and a re-check of the revision under the lock).
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

HERE = Path(__file__).resolve().parent
VERSION_TABLE = "slideserver_security_version"
ADVISORY_LOCK = 0x51_1DE5_5EC0
"""PostgreSQL advisory lock key held while migrating (differs from the catalog's)."""


def alembic_config(connection: Connection | None = None) -> Config:
    """Return an Alembic config pointing at these migrations (and a connection to use)."""
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    """Return the newest revision the code knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    """Return the revision the database is at (``None`` when the tables do not exist)."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the security tables behind ``engine`` (a write engine) to the newest revision."""
    head = head_revision()
    with engine.connect() as probe:
        if current_revision(probe) == head:
            return
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_LOCK})
        if current_revision(connection) != head:
            command.upgrade(alembic_config(connection), "head")
