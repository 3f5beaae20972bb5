"""Alembic migrations of the catalog, run programmatically at start-up (no alembic.ini needed).

``upgrade(engine)`` brings any database, new or old, to the newest schema. Concurrent start-ups
(several workers) are safe: PostgreSQL serialises them with an advisory lock, SQLite with its
write lock, and an upgrade that finds the database already current does nothing.
"""

from __future__ import annotations

from pathlib import Path

from slideserver.db.migrations import MigrationChain

HERE = Path(__file__).resolve().parent
ADVISORY_LOCK = 0x51_1DE5_E4E4
"""PostgreSQL advisory lock key held while migrating."""

CHAIN = MigrationChain(script_location=HERE, advisory_lock=ADVISORY_LOCK)

alembic_config = CHAIN.alembic_config
head_revision = CHAIN.head_revision
current_revision = CHAIN.current_revision
upgrade = CHAIN.upgrade
