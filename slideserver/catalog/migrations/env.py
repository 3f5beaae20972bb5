"""Alembic environment: migrate the connection handed over by :func:`upgrade`."""

from __future__ import annotations

from slideserver.catalog.schema import metadata
from slideserver.db.migrations import run_environment

run_environment("catalog", metadata, compare_type=True)
