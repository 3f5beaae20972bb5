"""EHR pull: cursors per resource type and the lease that lets one process poll at a time

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "ehr_pull_state",
        sa.Column(
            "name",
            sa.String(length=32),
            nullable=False,
            comment="ServiceRequest, Patient, or lease",
        ),
        sa.Column(
            "cursor",
            sa.String(length=40),
            nullable=True,
            comment="newest meta.lastUpdated applied (FHIR instant)",
        ),
        sa.Column(
            "owner",
            sa.String(length=64),
            nullable=True,
            comment="the process holding the poll lease",
        ),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_ehr_pull_state")),
    )


def downgrade() -> None:
    op.drop_table("ehr_pull_state")
