"""Alembic environment of the security tables: own version table, handed-over connection."""

from __future__ import annotations

from slideserver.db.migrations import run_environment
from slideserver.security.migrations import VERSION_TABLE
from slideserver.security.schema import metadata

run_environment("security", metadata, version_table=VERSION_TABLE)
