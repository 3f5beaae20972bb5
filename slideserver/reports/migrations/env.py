"""Alembic environment of the report tables: own version table, handed-over connection."""

from __future__ import annotations

from slideserver.db.migrations import run_environment
from slideserver.reports.migrations import VERSION_TABLE
from slideserver.reports.schema import metadata

run_environment("reports", metadata, version_table=VERSION_TABLE)
