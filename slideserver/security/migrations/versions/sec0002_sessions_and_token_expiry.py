"""Revocable viewer sessions; token expiry and rotation

Revision ID: sec0002
Revises: sec0001
Create Date: 2026-12-01 10:00:00

- ``security_sessions``: one row per viewer session (logout and token revocation end it).
- ``security_api_tokens`` gains ``expires_at``, ``rotated_at`` and ``generation``; a name is
  unique per generation (a rotated token keeps its name), instead of unique outright.
  Existing tokens keep working: they get no expiry (``NULL``) and generation 0.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "sec0002"
down_revision: str | None = "sec0001"
branch_labels: str | None = None
depends_on: str | None = None

TOKENS = "security_api_tokens"
NAME_GENERATION = "uq_security_api_tokens_name_generation"
PG_NAME_UNIQUE = "security_api_tokens_name_key"
"""PostgreSQL's name for sec0001's unnamed ``UNIQUE (name)``."""
SQLITE_NAMES = {"uq": "uq_%(table_name)s_%(column_0_name)s"}
"""Names SQLite's reflected, unnamed unique constraints get in batch mode, so one can be dropped."""
SQLITE_NAME_UNIQUE = "uq_security_api_tokens_name"


def upgrade() -> None:
    op.create_table(
        "security_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_security_sessions_token_id", "security_sessions", ["token_id"])
    op.create_index("ix_security_sessions_expires_at", "security_sessions", ["expires_at"])
    new_columns = (
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False, server_default="0"),
    )
    if op.get_context().dialect.name == "postgresql":
        for column in new_columns:
            op.add_column(TOKENS, column)
        op.drop_constraint(PG_NAME_UNIQUE, TOKENS, type_="unique")
        op.create_unique_constraint(NAME_GENERATION, TOKENS, ["name", "generation"])
        return
    # SQLite cannot drop a constraint: batch mode copies the table into a new one.
    with op.batch_alter_table(TOKENS, recreate="always", naming_convention=SQLITE_NAMES) as batch:
        for column in new_columns:
            batch.add_column(column)
        batch.drop_constraint(SQLITE_NAME_UNIQUE, type_="unique")
        batch.create_unique_constraint(NAME_GENERATION, ["name", "generation"])


def downgrade() -> None:
    # A name is unique again: only each name's newest secret survives.
    op.execute(f"DELETE FROM {TOKENS} WHERE rotated_at IS NOT NULL")
    if op.get_context().dialect.name == "postgresql":
        op.drop_constraint(NAME_GENERATION, TOKENS, type_="unique")
        op.create_unique_constraint(PG_NAME_UNIQUE, TOKENS, ["name"])
        for name in ("generation", "rotated_at", "expires_at"):
            op.drop_column(TOKENS, name)
    else:
        with op.batch_alter_table(TOKENS, recreate="always") as batch:
            batch.drop_constraint(NAME_GENERATION, type_="unique")
            for name in ("generation", "rotated_at", "expires_at"):
                batch.drop_column(name)
            batch.create_unique_constraint(SQLITE_NAME_UNIQUE, ["name"])
    op.drop_index("ix_security_sessions_expires_at", "security_sessions")
    op.drop_index("ix_security_sessions_token_id", "security_sessions")
    op.drop_table("security_sessions")
