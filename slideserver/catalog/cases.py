"""What every LIS interface turns a message into, and what the catalog answers with.

Parsers (JSON, FHIR R4, HL7 v2) build a :class:`CaseOrder`; the catalog applies it in one
transaction through :class:`LinkStore`. Views come back as :class:`CaseView` for the JSON case
API, FHIR ImagingStudy bundles and launch links. Patient fields are PHI.

:class:`LinkStore` is the one protocol of a catalog that keeps case links (the SQL catalog does;
the in-memory one does not); it is runtime-checkable so that the layers above check it once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from slideserver.catalog.base import SlideRecord


@dataclass(frozen=True)
class PatientIn:
    """A patient as the LIS knows them. ``name`` and ``birth_date`` are PHI."""

    identifier: str
    """The MRN (HL7 PID-3, else PID-2; FHIR Patient.identifier)."""
    issuer: str = ""
    name: str | None = None
    """``FAMILY^GIVEN`` as in HL7 v2 and DICOM."""
    birth_date: str | None = None
    """ISO date ``YYYY-MM-DD``."""
    sex: str | None = None
    identifier_type: str = ""
    """The identifier's type code as sent (HL7 CX.5, FHIR ``type``: ``MR``, ``PI``...); empty
    when the sender typed it not."""


ACTIVE = "active"
"""A case the LIS ordered and has not withdrawn."""
PENDING = "pending"
"""An order whose accession number has not arrived yet; matched by its order numbers."""
CANCELLED = "cancelled"
"""Withdrawn before or during work (HL7 ORC-1 ``CA``); its slides stay linked."""
DISCONTINUED = "discontinued"
"""Stopped after work began (HL7 ORC-1 ``DC``); its slides stay linked."""
WITHDRAWN = frozenset({CANCELLED, DISCONTINUED})


@dataclass(frozen=True)
class SlideIn:
    """A slide the LIS ordered: its barcode (container identifier) and stain."""

    barcode: str
    stain: str | None = None


@dataclass(frozen=True)
class BlockIn:
    """A block (e.g. ``A1``) with its slides."""

    id: str
    slides: tuple[SlideIn, ...] = ()


@dataclass(frozen=True)
class SpecimenIn:
    """A specimen / part (e.g. ``A``) with its blocks."""

    id: str
    description: str | None = None
    blocks: tuple[BlockIn, ...] = ()


@dataclass(frozen=True)
class CaseOrder:
    """One order: a case with its patient, specimens, blocks and slide barcodes.

    One order is one case. The catalog finds the case of an order by its accession number, its
    filler order number or its placer order number (each with its issuer), so that the messages
    of one order's life (new, numbered by the laboratory, changed, cancelled) reach one case.
    """

    accession: str
    """The case's accession number; empty while it is not known (the order is kept pending)."""
    patient: PatientIn
    accession_issuer: str = ""
    specimens: tuple[SpecimenIn, ...] = ()
    source: str = "json"
    """``json``, ``fhir`` or ``hl7v2``."""
    message_id: str | None = None
    """The sender's message ID, for idempotency and the audit trail."""
    placer: str = ""
    """The placer order number (HL7 ORC-2/OBR-2, FHIR identifier typed ``PLAC``)."""
    placer_issuer: str = ""
    filler: str = ""
    """The filler order number (HL7 ORC-3/OBR-3, FHIR identifier typed ``FILL``)."""
    filler_issuer: str = ""
    status: str = ACTIVE
    """What the order asks the case to be: ``active`` (new or changed), ``cancelled`` or
    ``discontinued`` (HL7 ORC-1 ``CA`` / ``DC``: only the status changes, nothing is unlinked)."""


@dataclass(frozen=True)
class ApplyResult:
    """What applying an order changed."""

    created: bool
    """The case did not exist before."""
    changed: bool
    """Anything at all changed (False for a repeated message)."""
    linked_slides: tuple[str, ...] = ()
    """Slide IDs linked to the case by this message."""
    conflicts: tuple[str, ...] = ()
    """Human-readable conflicts flagged for review instead of overwritten."""
    status: str = ACTIVE
    """The case's status after the order: ``active``, ``pending``, ``cancelled``..."""
    accession: str = ""
    """The case's accession number (the order's, or the one the case already had)."""
    found: bool = True
    """False when a cancel named an order the catalog does not know (nothing was changed)."""


@dataclass(frozen=True)
class SlideView:
    """A slide of a case, with where to see it."""

    id: str
    name: str
    specimen: str | None
    block: str | None
    stain: str | None
    barcode: str | None
    status: str
    format: str | None = None
    width: int | None = None
    height: int | None = None
    mpp_x: float | None = None
    study_uid: str | None = None
    """The DICOM StudyInstanceUID the file carries (DICOM slides only)."""
    series_uid: str | None = None
    """The DICOM SeriesInstanceUID the file carries (DICOM slides only)."""


@dataclass(frozen=True)
class BlockView:
    id: str
    slides: tuple[SlideView, ...] = ()


@dataclass(frozen=True)
class SpecimenView:
    id: str
    description: str | None = None
    blocks: tuple[BlockView, ...] = ()


@dataclass(frozen=True)
class CaseView:
    """A case as the catalog knows it now: patient (PHI), specimens, blocks, slides."""

    accession: str
    accession_issuer: str
    patient: PatientIn | None
    specimens: tuple[SpecimenView, ...] = ()
    slides: tuple[SlideView, ...] = ()
    """Every slide of the case, linked to a block or not."""
    expected_barcodes: tuple[str, ...] = field(default_factory=tuple)
    """Barcodes the LIS ordered that no scanned slide carries yet."""
    status: str = ACTIVE
    """``active``, ``cancelled`` or ``discontinued`` (LIS cases); ``active`` for evidence."""


@dataclass(frozen=True)
class Conflict:
    """A disagreement flagged for review (``GET /api/reconcile``). No PHI."""

    id: int
    at: datetime
    kind: str
    subject: str
    detail: str
    status: str


@runtime_checkable
class LinkStore(Protocol):
    """The catalog's side of the LIS interfaces; every call is one blocking transaction."""

    def apply_order(self, order: CaseOrder) -> ApplyResult:
        """Create or update the case, patient, specimens, blocks and expected slides."""

    def update_patient(self, patient: PatientIn, source: str = "hl7v2") -> bool:
        """Update demographics (ADT^A08, EHR corrections); return whether the patient exists."""

    def merge_patients(
        self, surviving: PatientIn, merged_identifier: str, source: str = "hl7v2"
    ) -> bool:
        """Move every case of ``merged_identifier`` to ``surviving`` (ADT^A40, EHR merges)."""

    def get_case(self, accession: str) -> CaseView | None:
        """Return the case with that accession number (LIS case, else file evidence)."""

    def has_case(self, accession: str) -> bool:
        """Tell whether the LIS sent a case with that accession number."""

    def get_many(self, slide_ids: Sequence[str]) -> list[SlideRecord]:
        """Return the slide records of a case's slides, in path order; unknown IDs left out."""

    def case_with_slides(self, accession: str) -> tuple[CaseView, list[SlideRecord], bool] | None:
        """The case, its slides' records and whether the LIS sent it, read together."""

    def cases_of_patient(self, identifier: str) -> list[CaseView]:
        """Return every case of the patient with that MRN."""

    def record_message(self, source: str, raw: str, status: str, detail: str = "") -> None:
        """Keep the raw inbound message with how it was answered."""

    def conflicts(self, status: str = "open", limit: int = 100, after: int = 0) -> list[Conflict]:
        """Return flagged conflicts (``status`` empty: all), oldest first, IDs above ``after``."""


@runtime_checkable
class EhrStateStore(Protocol):
    """Where the EHR pull keeps its cursors and its one-poller lease (the SQL catalog)."""

    def ehr_cursor(self, name: str) -> str | None:
        """The cursor of a resource type (newest ``meta.lastUpdated`` applied), or ``None``."""

    def set_ehr_cursor(self, name: str, value: str) -> None:
        """Move a cursor, once the page up to it is applied."""

    def take_ehr_lease(self, owner: str, seconds: float) -> bool:
        """Take or renew the poll lease; False while another process holds it."""

    def release_ehr_lease(self, owner: str) -> None:
        """Give the lease up."""
