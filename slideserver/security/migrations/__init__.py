"""Alembic migrations of the security tables, separate from the catalog's.

They live in the catalog database but keep their own version table
(:data:`VERSION_TABLE`), so the two chains never see each other's revisions. ``upgrade(engine)``
is safe to run from several processes at once (advisory lock on PostgreSQL, the write lock on
SQLite, and a re-check of the revision under the lock).
"""

from __future__ import annotations

from pathlib import Path

from slideserver.db.migrations import MigrationChain

HERE = Path(__file__).resolve().parent
VERSION_TABLE = "slideserver_security_version"
ADVISORY_LOCK = 0x51_1DE5_5EC0
"""PostgreSQL advisory lock key held while migrating (differs from the catalog's)."""

CHAIN = MigrationChain(
    script_location=HERE, advisory_lock=ADVISORY_LOCK, version_table=VERSION_TABLE
)

alembic_config = CHAIN.alembic_config
head_revision = CHAIN.head_revision
current_revision = CHAIN.current_revision
upgrade = CHAIN.upgrade
