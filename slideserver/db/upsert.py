"""Concurrency-safe inserts that read the same on SQLite and PostgreSQL.

Two scanners (or a scanner and an LIS message) may create the same row at the same moment; the
unique constraints decide, ``ON CONFLICT DO NOTHING`` absorbs the loser, and the winner's row is
read back. No check-then-insert races, no duplicate rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table, and_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert


def dialect_insert(conn: Connection, table: Table) -> Any:
    """Return the dialect's INSERT construct (it has ``on_conflict_do_*``)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(
        f"catalog databases are SQLite or PostgreSQL, not {conn.dialect.name}"
    )


def insert_ignore(
    conn: Connection, table: Table, values: Mapping[str, Any], conflict: Sequence[str]
) -> bool:
    """Insert ``values`` unless a row with the same ``conflict`` columns exists; say if inserted."""
    stmt: Insert = dialect_insert(conn, table).values(**values)
    stmt = stmt.on_conflict_do_nothing(index_elements=list(conflict))  # type: ignore[attr-defined]
    # RETURNING, not rowcount: drivers disagree on rowcount for a skipped insert.
    return conn.execute(stmt.returning(table.c.id)).first() is not None


def get_or_create(
    conn: Connection,
    table: Table,
    keys: Mapping[str, Any],
    values: Mapping[str, Any] | None = None,
) -> tuple[int, bool]:
    """Return the ID of the row with ``keys`` (made with ``values`` if absent) and if it is new."""
    created = insert_ignore(conn, table, {**keys, **(values or {})}, list(keys))
    where = and_(*(table.c[k] == v for k, v in keys.items()))
    row_id = conn.execute(select(table.c.id).where(where)).scalar_one()
    return int(row_id), created
