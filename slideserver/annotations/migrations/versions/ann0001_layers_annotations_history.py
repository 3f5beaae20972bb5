"""Annotation layers, annotations with a spatial index, their versions, idempotent requests

Revision ID: ann0001
Revises:
Create Date: 2026-11-30 12:00:00

The spatial index: SQLite an R*Tree virtual table ``annotations_rtree`` (``seq`` and the bbox),
kept in step with ``annotations`` by triggers; PostgreSQL a GiST index over
``box(point(min_x, min_y), point(max_x, max_y))``, the expression the bbox query uses.
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision: str = "ann0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "annotation_layers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("slide_id", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("research_safe", sa.Boolean(), nullable=False),
        sa.Column("locked", sa.Boolean(), nullable=False),
        sa.Column("grants", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_annotation_layers_slide_id", "annotation_layers", ["slide_id"])
    op.create_table(
        "annotations",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("slide_id", sa.String(100), nullable=False),
        sa.Column("layer_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("cls", sa.String(64), nullable=True),
        sa.Column("label", sa.String(200), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("colour", sa.String(7), nullable=True),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("geometry", sa.Text(), nullable=False),
        sa.Column("extra", sa.Text(), nullable=True),
        sa.Column("min_x", sa.Float(), nullable=False),
        sa.Column("min_y", sa.Float(), nullable=False),
        sa.Column("max_x", sa.Float(), nullable=False),
        sa.Column("max_y", sa.Float(), nullable=False),
        sa.Column("measured", sa.Boolean(), nullable=False),
        sa.Column("length_um", sa.Float(), nullable=True),
        sa.Column("area_um2", sa.Float(), nullable=True),
        sa.Column("perimeter_um", sa.Float(), nullable=True),
    )
    op.create_index("ix_annotations_slide_seq", "annotations", ["slide_id", "seq"])
    op.create_index("ix_annotations_layer_id", "annotations", ["layer_id"])
    if op.get_context().dialect.name == "postgresql":
        op.execute(
            "CREATE INDEX ix_annotations_box ON annotations USING gist "
            "(box(point(min_x, min_y), point(max_x, max_y)))"
        )
    else:
        op.execute(
            "CREATE VIRTUAL TABLE annotations_rtree USING rtree(seq, min_x, max_x, min_y, max_y)"
        )
        op.execute(
            "CREATE TRIGGER annotations_rtree_insert AFTER INSERT ON annotations BEGIN "
            "INSERT INTO annotations_rtree VALUES "
            "(new.seq, new.min_x, new.max_x, new.min_y, new.max_y); END"
        )
        op.execute(
            "CREATE TRIGGER annotations_rtree_update AFTER UPDATE OF min_x, min_y, max_x, max_y "
            "ON annotations BEGIN UPDATE annotations_rtree SET min_x = new.min_x, "
            "max_x = new.max_x, min_y = new.min_y, max_y = new.max_y WHERE seq = new.seq; END"
        )
        op.execute(
            "CREATE TRIGGER annotations_rtree_delete AFTER DELETE ON annotations BEGIN "
            "DELETE FROM annotations_rtree WHERE seq = old.seq; END"
        )
    op.create_table(
        "annotation_versions",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("annotation_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(10), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("before", sa.Text(), nullable=True),
        sa.Column("after", sa.Text(), nullable=True),
    )
    op.create_index(
        "ix_annotation_versions_annotation_id",
        "annotation_versions",
        ["annotation_id", "version"],
    )
    op.create_table(
        "annotation_requests",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    secrets_table = op.create_table(
        "annotation_secrets",
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("value", sa.String(128), nullable=False),
    )
    op.bulk_insert(secrets_table, [{"name": "pseudonym_key", "value": secrets.token_hex(32)}])


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        op.execute("DROP TABLE annotations_rtree")
    for table in (
        "annotation_secrets",
        "annotation_requests",
        "annotation_versions",
        "annotations",
        "annotation_layers",
    ):
        op.drop_table(table)
