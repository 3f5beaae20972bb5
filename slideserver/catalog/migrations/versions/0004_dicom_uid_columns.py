"""DICOMweb UIDs in indexed columns: QIDO finds a slide by study or series UID without a scan

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 15:30:00.000000

The derived UIDs of the slides already indexed are filled here, in Python (they are UUID-5 hashes,
which SQL cannot compute), a page of rows at a time: about a second per 10,000 slides on SQLite.
The derivation is imported from the code: it is frozen by design (UIDs never change), and
``tests/test_catalog_dicom_uids.py`` checks the filled columns against DICOMweb's UIDs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from slideserver.catalog.dicom_uids import case_study_uid, scan_columns

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

PAGE = 2000
"""Rows read and updated per round trip of the back-fill."""

SCAN_UIDS = ("dicom_study_uid", "dicom_series_uid", "research_study_uid", "research_series_uid")
SCAN_COMMENTS = {
    "dicom_study_uid": "study while in no numbered case",
    "research_study_uid": "de-identified view",
    "research_series_uid": "de-identified view",
}


def upgrade() -> None:
    with op.batch_alter_table("scans", schema=None) as batch_op:
        for name in SCAN_UIDS:
            column = sa.Column(name, sa.String(length=64), comment=SCAN_COMMENTS.get(name))
            batch_op.add_column(column)
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "dicom_study_uid",
                sa.String(length=64),
                nullable=True,
                comment="DICOMweb study of its slides",
            )
        )
    fill_scans(op.get_bind())
    fill_cases(op.get_bind())
    # indexed once filled: building an index is cheaper than keeping it through the updates
    with op.batch_alter_table("scans", schema=None) as batch_op:
        for name in (*SCAN_UIDS, "ev_study_uid", "ev_series_uid"):
            batch_op.create_index(batch_op.f(f"ix_scans_{name}"), [name], unique=False)
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cases_dicom_study_uid"), ["dicom_study_uid"])
    # statistics for the planner, so searches by UID pick the new indexes (SQLite has none
    # until ANALYZE runs; PostgreSQL would gather them later by itself)
    op.execute("ANALYZE scans")
    op.execute("ANALYZE cases")


def fill_scans(conn: sa.Connection) -> None:
    """Derive the UIDs of every scan row, one keyset page at a time."""
    scans = sa.table(
        "scans",
        sa.column("id", sa.Integer),
        sa.column("slide_id", sa.String),
        sa.column("ev_accession", sa.String),
        *(sa.column(name, sa.String) for name in SCAN_UIDS),
    )
    update = (
        sa.update(scans)
        .where(scans.c.id == sa.bindparam("row_id"))
        .values({name: sa.bindparam(f"new_{name}") for name in SCAN_UIDS})
    )
    last = 0
    while True:
        rows = conn.execute(
            sa.select(scans.c.id, scans.c.slide_id, scans.c.ev_accession)
            .where(scans.c.id > last)
            .order_by(scans.c.id)
            .limit(PAGE)
        ).all()
        if not rows:
            return
        conn.execute(
            update,
            [
                {
                    "row_id": row.id,
                    **{
                        f"new_{k}": v
                        for k, v in scan_columns(row.slide_id, row.ev_accession).items()
                    },
                }
                for row in rows
            ],
        )
        last = rows[-1].id


def fill_cases(conn: sa.Connection) -> None:
    """Derive the study UID of every case that has its accession number."""
    cases = sa.table(
        "cases",
        sa.column("id", sa.Integer),
        sa.column("accession", sa.String),
        sa.column("dicom_study_uid", sa.String),
    )
    update = (
        sa.update(cases)
        .where(cases.c.id == sa.bindparam("row_id"))
        .values(dicom_study_uid=sa.bindparam("uid"))
    )
    last = 0
    while True:
        rows = conn.execute(
            sa.select(cases.c.id, cases.c.accession)
            .where(cases.c.id > last, cases.c.accession.is_not(None))
            .order_by(cases.c.id)
            .limit(PAGE)
        ).all()
        if not rows:
            return
        conn.execute(
            update, [{"row_id": row.id, "uid": case_study_uid(row.accession)} for row in rows]
        )
        last = rows[-1].id


def downgrade() -> None:
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cases_dicom_study_uid"))
        batch_op.drop_column("dicom_study_uid")
    with op.batch_alter_table("scans", schema=None) as batch_op:
        for name in (*SCAN_UIDS, "ev_study_uid", "ev_series_uid"):
            batch_op.drop_index(batch_op.f(f"ix_scans_{name}"))
        for name in SCAN_UIDS:
            batch_op.drop_column(name)
