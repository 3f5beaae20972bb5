"""The catalog's tables: patient -> case -> specimen -> block -> glass slide -> scan (a file).

SQLAlchemy Core, so that one set of statements (with dialect upserts) runs on SQLite and
PostgreSQL. Migrations in :mod:`slideserver.catalog.migrations` create exactly these tables; a
change here needs a new migration there.

PHI lives in two places only, both named for it: the ``patients`` table (``name``,
``birth_date``, ``identifier``) and the ``ev_patient_*`` evidence columns of ``scans`` (what a
DICOM header said). Everything that shows patient data reads it from there.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Deterministic constraint names, so migrations can name what they alter on both databases."""

metadata = MetaData(naming_convention=NAMING)

PHI_COLUMNS = frozenset(
    {
        "patients.identifier",
        "patients.name",
        "patients.birth_date",
        "patients.sex",
        "scans.ev_patient_id",
        "scans.ev_patient_name",
        "scans.ev_patient_birth_date",
    }
)
"""Columns holding protected health information; never logged, filtered per role."""

patients = Table(
    "patients",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("identifier", String(64), nullable=False, comment="PHI: the MRN"),
    Column("issuer", String(64), nullable=False, default=""),
    Column("name", String(200), comment="PHI: FAMILY^GIVEN"),
    Column("birth_date", String(10), comment="PHI: YYYY-MM-DD"),
    Column("sex", String(16), comment="PHI"),
    Column("identifier_type", String(16), comment="as sent: HL7 CX.5, FHIR type (MR, PI...)"),
    Column("merged_into", Integer, ForeignKey("patients.id"), comment="set by ADT^A40 merges"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("identifier", "issuer"),
)

cases = Table(
    "cases",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("accession", String(64), comment="NULL while the order is pending its number"),
    Column("issuer", String(64), nullable=False, default=""),
    Column("patient_id", Integer, ForeignKey("patients.id"), index=True),
    Column("source", String(16), nullable=False, comment="json, fhir or hl7v2"),
    Column("status", String(16), nullable=False, default="active", server_default="active"),
    Column("placer", String(64), index=True, comment="placer order number (ORC-2)"),
    Column("placer_issuer", String(64), nullable=False, default="", server_default=""),
    Column("filler", String(64), index=True, comment="filler order number (ORC-3)"),
    Column("filler_issuer", String(64), nullable=False, default="", server_default=""),
    Column("dicom_study_uid", String(64), index=True, comment="DICOMweb study of its slides"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("accession", "issuer"),
)

specimens = Table(
    "specimens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("case_id", Integer, ForeignKey("cases.id", ondelete="CASCADE"), nullable=False),
    Column("label", String(64), nullable=False, comment="the part, e.g. A"),
    Column("description", Text),
    UniqueConstraint("case_id", "label"),
)

blocks = Table(
    "blocks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("specimen_id", Integer, ForeignKey("specimens.id", ondelete="CASCADE"), nullable=False),
    Column("label", String(64), nullable=False, comment="e.g. A1"),
    UniqueConstraint("specimen_id", "label"),
)

glass_slides = Table(
    "glass_slides",
    metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "key",
        String(200),
        nullable=False,
        unique=True,
        comment="barcode:<barcode> for labelled slides, else scan:<scan row>:<case row>",
    ),
    Column("barcode", String(128), unique=True),
    Column("stain", String(64)),
    Column("case_id", Integer, ForeignKey("cases.id"), nullable=False, index=True),
    Column("specimen_id", Integer, ForeignKey("specimens.id")),
    Column("block_id", Integer, ForeignKey("blocks.id")),
    Column("ordered", Boolean, nullable=False, default=False, comment="the LIS listed it"),
)

scans = Table(
    "scans",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("slide_id", String(40), nullable=False, unique=True, comment="public, opaque"),
    Column("root", String(1024), nullable=False),
    Column("relpath", String(1024), nullable=False),
    Column("name", String(255), nullable=False),
    Column("files", Text, comment="JSON list of file names of a multi-file (DICOM) slide"),
    Column("fingerprint", String(64), nullable=False),
    Column("content_hash", String(64), nullable=False, index=True),
    Column("status", String(16), nullable=False, comment="ok, unreadable or missing"),
    Column("error", Text),
    Column("format", String(32)),
    Column("vendor", String(64)),
    Column("width", Integer),
    Column("height", Integer),
    Column("mpp_x", Float),
    Column("mpp_y", Float),
    Column("objective_power", Float),
    Column("scanned_at", DateTime(timezone=True), nullable=False, comment="acquisition or mtime"),
    Column("indexed_at", DateTime(timezone=True), nullable=False),
    Column("glass_slide_id", Integer, ForeignKey("glass_slides.id"), index=True),
    # What the file itself says about its case (filename rules, DICOM, barcodes): the evidence
    # that links it, kept so that an order arriving later can still find it.
    Column("ev_source", String(32), comment="filename, dicom, barcode, joined by +"),
    Column("ev_accession", String(64), index=True),
    Column("ev_specimen", String(64)),
    Column("ev_block", String(64)),
    Column("ev_stain", String(64)),
    Column("ev_barcode", String(128), index=True),
    Column("ev_patient_id", String(64), index=True, comment="PHI (DICOM PatientID)"),
    Column("ev_patient_name", String(200), comment="PHI (DICOM PatientName)"),
    Column("ev_patient_birth_date", String(10), comment="PHI (DICOM PatientBirthDate)"),
    Column("ev_study_uid", String(128), index=True),
    Column("ev_series_uid", String(128), index=True),
    # DICOMweb's derived UIDs (slideserver.catalog.dicom_uids), so QIDO finds a slide by them.
    Column("dicom_study_uid", String(64), index=True, comment="study while in no numbered case"),
    Column("dicom_series_uid", String(64), index=True),
    Column("research_study_uid", String(64), index=True, comment="de-identified view"),
    Column("research_series_uid", String(64), index=True, comment="de-identified view"),
    UniqueConstraint("root", "relpath"),
)
Index("ix_scans_root_name", scans.c.root, scans.c.name)

link_events = Table(
    "link_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("slide_id", String(40), index=True, comment="public scan ID, when a scan moved"),
    Column("glass_slide_id", Integer),
    Column("case_id", Integer, index=True),
    Column("previous_case_id", Integer),
    Column("action", String(32), nullable=False, comment="link, relink, unlink, merge, move..."),
    Column("source", String(32), nullable=False),
    Column("detail", Text, comment="no PHI"),
)
"""Every re-association, append-only: nothing here is updated or deleted."""

conflicts = Table(
    "conflicts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("kind", String(32), nullable=False, comment="barcode_claimed, patient_mismatch..."),
    Column("subject", String(200), nullable=False, comment="the barcode, accession or slide ID"),
    Column("detail", Text, nullable=False),
    Column("fingerprint", String(64), nullable=False, unique=True, comment="dedupes re-flags"),
    Column("status", String(16), nullable=False, default="open"),
)
"""Disagreements flagged for review instead of overwritten (``GET /api/reconcile``)."""

inbound_messages = Table(
    "inbound_messages",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("source", String(16), nullable=False),
    Column("raw", Text, nullable=False, comment="PHI: the message as received"),
    Column("status", String(16), nullable=False),
    Column("detail", Text, nullable=False, default=""),
)
"""Raw LIS messages with how each was answered."""

ehr_pull_state = Table(
    "ehr_pull_state",
    metadata,
    Column("name", String(32), primary_key=True, comment="ServiceRequest, Patient, or lease"),
    Column("cursor", String(40), comment="newest meta.lastUpdated applied (FHIR instant)"),
    Column("owner", String(64), comment="the process holding the poll lease"),
    Column("lease_until", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
"""The EHR pull's cursors (moved only after a page is applied) and its one-poller lease."""
