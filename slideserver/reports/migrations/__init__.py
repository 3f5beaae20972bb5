"""Alembic migrations of the report tables, separate from the catalog's and security's.

They live in the catalog database with their own version table (:data:`VERSION_TABLE`);
``upgrade(engine)`` is safe from several processes at once (see :mod:`slideserver.db.migrations`).
"""

from __future__ import annotations

from pathlib import Path

from slideserver.db.migrations import MigrationChain

HERE = Path(__file__).resolve().parent
VERSION_TABLE = "slideserver_reports_version"
ADVISORY_LOCK = 0x51_1DE5_4E90
"""PostgreSQL advisory lock key held while migrating (differs from the other chains')."""

CHAIN = MigrationChain(
    script_location=HERE, advisory_lock=ADVISORY_LOCK, version_table=VERSION_TABLE
)

upgrade = CHAIN.upgrade
head_revision = CHAIN.head_revision
current_revision = CHAIN.current_revision
