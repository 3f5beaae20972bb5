"""The report tables: reports, their versions (signed ones never change) and the outbox.

They live in the catalog database with their own migration chain
(:mod:`slideserver.reports.migrations`), so that signing a version and queueing its deliveries
are one transaction.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

reports = Table(
    "reports",
    metadata,
    Column("id", String(40), primary_key=True, comment="public, opaque"),
    Column("accession", String(64), nullable=False, index=True),
    Column("identifier", String(100), comment="the client's idempotency key"),
    Column("created_by", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("accession", "identifier", name="uq_reports_accession_identifier"),
)
"""One row per report of a case; ``identifier`` makes a retried creation find the first."""

report_versions = Table(
    "report_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("report_id", String(40), ForeignKey("reports.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("status", String(16), nullable=False, comment="draft, final, amended, corrected"),
    Column("body", Text, nullable=False, comment="PHI: the report's JSON body"),
    Column("revision", Integer, nullable=False, default=1),
    Column("author", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("signer", String(200)),
    Column("signed_at", DateTime(timezone=True)),
    Column("reason", Text, nullable=False, default=""),
    Column("pdf", LargeBinary, comment="PHI: the signed PDF, exactly as delivered"),
    Column("pdf_sha1", String(40)),
    UniqueConstraint("report_id", "version", name="uq_report_versions_report_id_version"),
)
"""Every version of every report. A signed row cannot be updated or deleted (triggers)."""

report_outbox = Table(
    "report_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("report_id", String(40), ForeignKey("reports.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("target", String(16), nullable=False, comment="fhir or hl7v2"),
    Column("state", String(16), nullable=False, comment="pending, delivered, failing, given_up"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_at", DateTime(timezone=True), nullable=False, index=True),
    Column("lease_owner", String(64)),
    Column("lease_until", DateTime(timezone=True)),
    Column("detail", Text, nullable=False, default="", comment="no PHI"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint(
        "report_id", "version", "target", name="uq_report_outbox_report_id_version_target"
    ),
)
"""One delivery per version and target, written with the version it delivers."""
