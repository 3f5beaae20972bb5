"""Alembic migrations of the catalog, run programmatically at start-up (no alembic.ini needed).

``upgrade(engine)`` brings any database, new or old, to the newest schema. Concurrent start-ups
(several workers) are safe: PostgreSQL serialises them with an advisory lock, SQLite with its
write lock, and an upgrade that finds the database already current does nothing.
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
ADVISORY_LOCK = 0x51_1DE5_E4E4
"""PostgreSQL advisory lock key held while migrating."""


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
    """Return the revision the database is at (``None`` when empty)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Migrate the database behind ``engine`` to the newest revision.

    ``engine`` must open write transactions (on SQLite ``BEGIN IMMEDIATE``, see
    :func:`slideserver.catalog.store.engine.writer`): the revision is checked again under the lock,
    so a second process starting at the same moment finds the work done.
    """
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
