"""Reports, their versions and the delivery outbox

Revision ID: rep0001
Revises:
Create Date: 2026-11-30 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "rep0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_SIGNED = "a signed report version never changes"


def upgrade() -> None:
    op.create_table(
        "reports",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("accession", sa.String(64), nullable=False, index=True),
        sa.Column("identifier", sa.String(100), nullable=True),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("accession", "identifier", name="uq_reports_accession_identifier"),
    )
    op.create_table(
        "report_versions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("report_id", sa.String(40), sa.ForeignKey("reports.id"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signer", sa.String(200), nullable=True),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("pdf", sa.LargeBinary(), nullable=True),
        sa.Column("pdf_sha1", sa.String(40), nullable=True),
        sa.UniqueConstraint("report_id", "version", name="uq_report_versions_report_id_version"),
    )
    op.create_table(
        "report_outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("report_id", sa.String(40), sa.ForeignKey("reports.id"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint(
            "report_id", "version", "target", name="uq_report_outbox_report_id_version_target"
        ),
    )
    # Signed versions are immutable, enforced by the database itself.
    if op.get_context().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION report_versions_signed() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN IF OLD.status <> 'draft' THEN RAISE EXCEPTION '{_SIGNED}'; END IF; "
            "IF TG_OP = 'DELETE' THEN RETURN OLD; END IF; RETURN NEW; END $$"
        )
        op.execute(
            "CREATE TRIGGER report_versions_signed BEFORE UPDATE OR DELETE ON report_versions "
            "FOR EACH ROW EXECUTE FUNCTION report_versions_signed()"
        )
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER report_versions_no_{event.lower()} BEFORE {event} "
                "ON report_versions WHEN OLD.status <> 'draft' "
                f"BEGIN SELECT RAISE(ABORT, '{_SIGNED}'); END"
            )


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER report_versions_signed ON report_versions")
        op.execute("DROP FUNCTION report_versions_signed()")
    op.drop_table("report_outbox")
    op.drop_table("report_versions")
    op.drop_table("reports")
