"""The annotation tables: layers, annotations, their versions, idempotent requests.

They live in the catalog database under their own migration chain
(:mod:`slideserver.annotations.migrations`). The spatial index is not in this metadata: SQLite
keeps an R*Tree virtual table (``annotations_rtree``, filled by triggers), PostgreSQL a GiST index
over the box of the bbox columns; both are made by the migration.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

layers = Table(
    "annotation_layers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("slide_id", String(100), nullable=False),
    Column("name", String(200), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("owner", String(200), nullable=False),
    Column("research_safe", Boolean, nullable=False, default=False),
    Column("locked", Boolean, nullable=False, default=False),
    Column("grants", Text, nullable=False, default="[]"),
    Column("version", Integer, nullable=False, default=1),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("deleted_at", DateTime(timezone=True), nullable=True),
    Index("ix_annotation_layers_slide_id", "slide_id"),
)
"""``grants``: a JSON list of the researchers (subjects) who may write to the layer."""

annotation_table = Table(
    "annotations",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("id", String(64), nullable=False, unique=True),
    Column("slide_id", String(100), nullable=False),
    Column("layer_id", String(64), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("cls", String(64), nullable=True),
    Column("label", String(200), nullable=True),
    Column("note", Text, nullable=True),
    Column("colour", String(7), nullable=True),
    Column("author", String(200), nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("deleted_at", DateTime(timezone=True), nullable=True),
    Column("geometry", Text, nullable=False),
    Column("extra", Text, nullable=True),
    Column("min_x", Float, nullable=False),
    Column("min_y", Float, nullable=False),
    Column("max_x", Float, nullable=False),
    Column("max_y", Float, nullable=False),
    Column("measured", Boolean, nullable=False, default=False),
    Column("length_um", Float, nullable=True),
    Column("area_um2", Float, nullable=True),
    Column("perimeter_um", Float, nullable=True),
    Index("ix_annotations_slide_seq", "slide_id", "seq"),
    Index("ix_annotations_layer_id", "layer_id"),
)
"""``seq`` orders pages and keys the R*Tree; ``id`` is the public (possibly client-given) id.
``measured`` is false when the slide had no MPP when the geometry was last written."""

versions = Table(
    "annotation_versions",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("annotation_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("action", String(10), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("before", Text, nullable=True),
    Column("after", Text, nullable=True),
    Index("ix_annotation_versions_annotation_id", "annotation_id", "version"),
)
"""Every change: ``create``, ``update`` or ``delete``, with the annotation before and after."""

requests = Table(
    "annotation_requests",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("digest", String(64), nullable=False),
    Column("result", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
"""Answered uploads by ``Idempotency-Key`` (hashed with the caller): a retry gets the same
answer and writes nothing."""

secrets = Table(
    "annotation_secrets",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("value", String(128), nullable=False),
)
"""``pseudonym_key``: the random key authors' pseudonyms are made with (stable per database)."""
