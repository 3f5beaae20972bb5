"""The security tables: API tokens, viewer sessions and the append-only audit trail.

They have their own migration chain (:mod:`slideserver.security.migrations`).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

api_tokens = Table(
    "security_api_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False),
    Column("role", String(20), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("collections", Text, nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("rotated_at", DateTime(timezone=True), nullable=True),
    Column("generation", Integer, nullable=False, default=0, server_default="0"),
    UniqueConstraint("name", "generation", name="uq_security_api_tokens_name_generation"),
)
"""One row per secret. ``token rotate`` adds a row with the same name and the next
``generation`` (the old row gets ``rotated_at`` and a shortened ``expires_at``), so every
secret of a name is listed, expires and is revoked on its own; ``NULL`` ``expires_at``: never."""

sessions = Table(
    "security_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("subject", String(200), nullable=False),
    Column("token_id", Integer, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Index("ix_security_sessions_token_id", "token_id"),
    Index("ix_security_sessions_expires_at", "expires_at"),
)
"""Viewer sessions, so logging out ends one on the server: the cookie names a random ID whose
SHA-256 is ``id_hash``; ``token_id`` ties a session to the API token it was opened with."""

audit_events = Table(
    "security_audit_events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("role", String(20), nullable=False),
    Column("token_name", String(100), nullable=True),
    Column("action", String(200), nullable=False),
    Column("method", String(10), nullable=False),
    Column("slide_id", String(100), nullable=True),
    Column("case_id", String(100), nullable=True),
    Column("patient_id", String(100), nullable=True),
    Column("resource", String(100), nullable=True),
    Column("client", String(100), nullable=True),
    Column("status", Integer, nullable=True),
    Column("request_id", String(64), nullable=True),
    Column("count", Integer, nullable=False, default=1),
    Column("last_at", DateTime(timezone=True), nullable=True),
    Index("ix_security_audit_events_at", "at"),
    Index("ix_security_audit_events_subject", "subject"),
    Index("ix_security_audit_events_slide_id", "slide_id"),
    Index("ix_security_audit_events_patient_id", "patient_id"),
    Index("ix_security_audit_events_case_id", "case_id"),
)
"""For slide reads, ``case_id`` (accession) and ``patient_id`` (MRN) are those the slide was
linked to when it was read, so "who saw this patient's slides" is a query on this table alone,
and relinking a slide later leaves the rows as they were. ``resource`` names what of the slide
was read (``associated/label``)."""
