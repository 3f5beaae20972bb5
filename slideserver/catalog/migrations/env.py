"""Alembic environment: migrate the connection handed over by :func:`upgrade`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from slideserver.catalog.schema import metadata

config = context.config
connection: Connection | None = config.attributes.get("connection")
if connection is None:  # pragma: no cover - only the programmatic path is supported
    raise RuntimeError("run catalog migrations through slideserver.catalog.migrations.upgrade")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
