"""API tokens and the append-only audit trail

Revision ID: sec0001
Revises:
Create Date: 2026-11-24 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "sec0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_NO_CHANGE = "security_audit_events is append-only"


def upgrade() -> None:
    op.create_table(
        "security_api_tokens",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("collections", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "security_audit_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("token_name", sa.String(100), nullable=True),
        sa.Column("action", sa.String(200), nullable=False),
        sa.Column("method", sa.String(10), nullable=False),
        sa.Column("slide_id", sa.String(100), nullable=True),
        sa.Column("case_id", sa.String(100), nullable=True),
        sa.Column("patient_id", sa.String(100), nullable=True),
        sa.Column("client", sa.String(100), nullable=True),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("count", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_security_audit_events_at", "security_audit_events", ["at"])
    op.create_index("ix_security_audit_events_subject", "security_audit_events", ["subject"])
    op.create_index("ix_security_audit_events_slide_id", "security_audit_events", ["slide_id"])
    # Append-only, enforced by the database itself: no UPDATE, no DELETE.
    if op.get_context().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION security_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{_NO_CHANGE}'; END $$"
        )
        op.execute(
            "CREATE TRIGGER security_audit_append_only BEFORE UPDATE OR DELETE "
            "ON security_audit_events FOR EACH ROW EXECUTE FUNCTION security_audit_append_only()"
        )
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER security_audit_no_{event.lower()} BEFORE {event} "
                f"ON security_audit_events BEGIN SELECT RAISE(ABORT, '{_NO_CHANGE}'); END"
            )


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER security_audit_append_only ON security_audit_events")
        op.execute("DROP FUNCTION security_audit_append_only()")
    op.drop_table("security_audit_events")
    op.drop_table("security_api_tokens")
