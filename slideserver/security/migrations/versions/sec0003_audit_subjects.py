"""Audit rows name the patient, case and resource a slide read concerned

Revision ID: sec0003
Revises: sec0002
Create Date: 2026-12-08 10:00:00

- ``security_audit_events`` gains ``resource`` (``associated/label``: what of a slide was read).
- Indexes on ``patient_id`` and ``case_id``, for ``GET /api/audit?patient=`` and ``?case=``.

Old rows keep ``NULL`` in ``resource``. Adding a nullable column rewrites no row, so the
append-only triggers neither fire nor need to change.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "sec0003"
down_revision: str | None = "sec0002"
branch_labels: str | None = None
depends_on: str | None = None

AUDIT = "security_audit_events"


def upgrade() -> None:
    op.add_column(AUDIT, sa.Column("resource", sa.String(100), nullable=True))
    op.create_index("ix_security_audit_events_patient_id", AUDIT, ["patient_id"])
    op.create_index("ix_security_audit_events_case_id", AUDIT, ["case_id"])


def downgrade() -> None:
    op.drop_index("ix_security_audit_events_case_id", AUDIT)
    op.drop_index("ix_security_audit_events_patient_id", AUDIT)
    if op.get_context().dialect.name == "postgresql":
        op.drop_column(AUDIT, "resource")
    else:
        # SQLite (3.35+) drops a column in place: no row is rewritten, no trigger fires.
        op.execute(f"ALTER TABLE {AUDIT} DROP COLUMN resource")
