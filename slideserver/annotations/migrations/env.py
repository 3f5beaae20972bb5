"""Alembic environment of the annotation tables: own version table, handed-over connection."""

from __future__ import annotations

from slideserver.annotations.migrations import VERSION_TABLE
from slideserver.annotations.schema import metadata
from slideserver.db.migrations import run_environment

run_environment("annotations", metadata, version_table=VERSION_TABLE)
