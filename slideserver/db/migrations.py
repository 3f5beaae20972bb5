"""Run an Alembic migration chain programmatically, safely from several processes at once.

The catalog and the security tables each have their own chain
(:mod:`slideserver.catalog.migrations`, :mod:`slideserver.security.migrations`): own script
location, own version table, own advisory lock key. :class:`MigrationChain` holds what differs; the
upgrade protocol is the same for both: skip when the database is already current, otherwise take
the PostgreSQL advisory lock (SQLite: the engine's ``BEGIN IMMEDIATE`` write lock), check the
revision again under the lock, and upgrade to ``head``. :func:`run_environment` is the shared body
of the chains' ``env.py``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command, context
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, text

DEFAULT_VERSION_TABLE = "alembic_version"
"""Alembic's own default version table name."""


@dataclass(frozen=True)
class MigrationChain:
    """One Alembic chain: where its scripts live, its version table and its advisory lock key."""

    script_location: Path
    advisory_lock: int
    version_table: str = DEFAULT_VERSION_TABLE

    def alembic_config(self, connection: Connection | None = None) -> Config:
        """Return an Alembic config pointing at this chain (and a connection to use)."""
        config = Config()
        config.set_main_option("script_location", str(self.script_location))
        config.attributes["connection"] = connection
        return config

    def head_revision(self) -> str | None:
        """Return the newest revision the code knows."""
        return ScriptDirectory.from_config(self.alembic_config()).get_current_head()

    def current_revision(self, connection: Connection) -> str | None:
        """Return the revision the database is at (``None`` when the chain never ran)."""
        context = MigrationContext.configure(connection, opts={"version_table": self.version_table})
        return context.get_current_revision()

    def upgrade(self, engine: Engine) -> None:
        """Migrate the database behind ``engine`` to the newest revision of this chain.

        ``engine`` must open write transactions (on SQLite ``BEGIN IMMEDIATE``, see
        :func:`slideserver.db.engine.writer`): the revision is checked again under the
        lock, so a second process starting at the same moment finds the work done.
        """
        head = self.head_revision()
        with engine.connect() as probe:
            if self.current_revision(probe) == head:
                return
        logging.getLogger("alembic").setLevel(logging.WARNING)
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:k)"), {"k": self.advisory_lock}
                )
            if self.current_revision(connection) != head:
                command.upgrade(self.alembic_config(connection), "head")


def run_environment(chain: str, metadata: MetaData, **options: Any) -> None:
    """Body of ``slideserver.<chain>.migrations.env``: migrate the handed-over connection.

    Alembic runs ``env.py`` with :mod:`alembic.context` bound to the running environment;
    ``options`` go to ``context.configure`` (for example ``version_table``, ``compare_type``).
    """
    connection: Connection | None = context.config.attributes.get("connection")
    if connection is None:  # pragma: no cover - only the programmatic path is supported
        raise RuntimeError(f"run {chain} migrations through slideserver.{chain}.migrations.upgrade")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        **options,
    )
    with context.begin_transaction():
        context.run_migrations()
