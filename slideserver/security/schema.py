"""The security tables: API tokens and the append-only audit trail (own migration chain)."""

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
)

metadata = MetaData()

api_tokens = Table(
    "security_api_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("role", String(20), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("collections", Text, nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

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
    Column("client", String(100), nullable=True),
    Column("status", Integer, nullable=True),
    Column("request_id", String(64), nullable=True),
    Column("count", Integer, nullable=False, default=1),
    Column("last_at", DateTime(timezone=True), nullable=True),
    Index("ix_security_audit_events_at", "at"),
    Index("ix_security_audit_events_subject", "subject"),
    Index("ix_security_audit_events_slide_id", "slide_id"),
)
