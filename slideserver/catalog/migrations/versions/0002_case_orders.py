"""case orders: placer and filler numbers, status, pending orders, patient identifier type

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.alter_column(
            "accession",
            existing_type=sa.String(length=64),
            nullable=True,
            comment="NULL while the order is pending its number",
        )
        batch_op.add_column(
            sa.Column("status", sa.String(length=16), nullable=False, server_default="active")
        )
        batch_op.add_column(
            sa.Column(
                "placer",
                sa.String(length=64),
                nullable=True,
                comment="placer order number (ORC-2)",
            )
        )
        batch_op.add_column(
            sa.Column("placer_issuer", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column(
                "filler",
                sa.String(length=64),
                nullable=True,
                comment="filler order number (ORC-3)",
            )
        )
        batch_op.add_column(
            sa.Column("filler_issuer", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.create_index(batch_op.f("ix_cases_placer"), ["placer"], unique=False)
        batch_op.create_index(batch_op.f("ix_cases_filler"), ["filler"], unique=False)
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "identifier_type",
                sa.String(length=16),
                nullable=True,
                comment="as sent: HL7 CX.5, FHIR type (MR, PI...)",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.drop_column("identifier_type")
    op.execute("DELETE FROM cases WHERE accession IS NULL")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cases_filler"))
        batch_op.drop_index(batch_op.f("ix_cases_placer"))
        batch_op.drop_column("filler_issuer")
        batch_op.drop_column("filler")
        batch_op.drop_column("placer_issuer")
        batch_op.drop_column("placer")
        batch_op.drop_column("status")
        batch_op.alter_column(
            "accession", existing_type=sa.String(length=64), nullable=False, comment=None
        )
