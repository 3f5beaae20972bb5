"""The EHR pull's state in the catalog database: a cursor per resource type, and a lease.

The lease lets one process of a deployment poll at a time on SQLite and PostgreSQL alike: a row
names its owner and until when; another process takes it only once that time has passed (a
process that died loses it after one lease). Each function runs in the caller's transaction.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Connection, or_, select, update

from slideserver.catalog.schema import ehr_pull_state
from slideserver.db.engine import now
from slideserver.db.upsert import dialect_insert

LEASE = "lease"


def _ensure(conn: Connection, name: str) -> None:
    """Make the row of ``name`` exist (concurrent callers make it once)."""
    stmt = dialect_insert(conn, ehr_pull_state).values(name=name, updated_at=now())
    conn.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))


def cursor(conn: Connection, name: str) -> str | None:
    """The cursor of ``name`` (a resource type), ``None`` before the first applied page."""
    found = conn.execute(select(ehr_pull_state.c.cursor).where(ehr_pull_state.c.name == name))
    value = found.scalar()
    return str(value) if value else None


def set_cursor(conn: Connection, name: str, value: str) -> None:
    """Move the cursor of ``name`` to ``value`` (after the page up to it was applied)."""
    _ensure(conn, name)
    conn.execute(
        update(ehr_pull_state)
        .where(ehr_pull_state.c.name == name)
        .values(cursor=value, updated_at=now())
    )


def take_lease(conn: Connection, owner: str, seconds: float) -> bool:
    """Take or renew the poll lease for ``owner``; False while another process holds it."""
    stamp = now()
    _ensure(conn, LEASE)
    taken = conn.execute(
        update(ehr_pull_state)
        .where(
            ehr_pull_state.c.name == LEASE,
            or_(
                ehr_pull_state.c.owner.is_(None),
                ehr_pull_state.c.owner == owner,
                ehr_pull_state.c.lease_until < stamp,
            ),
        )
        .values(owner=owner, lease_until=stamp + timedelta(seconds=seconds), updated_at=stamp)
    )
    return bool(taken.rowcount)


def release_lease(conn: Connection, owner: str) -> None:
    """Give the lease up (at shutdown), so another process may poll at once."""
    conn.execute(
        update(ehr_pull_state)
        .where(ehr_pull_state.c.name == LEASE, ehr_pull_state.c.owner == owner)
        .values(owner=None, lease_until=None, updated_at=now())
    )
