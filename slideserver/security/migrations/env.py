"""Alembic environment of the security tables: own version table, handed-over connection."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from slideserver.security.migrations import VERSION_TABLE
from slideserver.security.schema import metadata

config = context.config
connection: Connection | None = config.attributes.get("connection")
if connection is None:  # pragma: no cover - only the programmatic path is supported
    raise RuntimeError("run security migrations through slideserver.security.migrations.upgrade")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
