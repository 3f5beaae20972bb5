"""What the rest of the server needs from a catalog, whatever stores it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from slideserver.models import SlideSource


@dataclass(frozen=True)
class SlideRecord:
    """One indexed slide: where its files are and what the scan found."""

    id: str
    name: str
    """Display name: the file (or DICOM folder) name."""
    relpath: str
    """Path relative to its root, POSIX style; what clients see instead of absolute paths."""
    root: Path
    source: SlideSource
    format: str | None = None
    vendor: str | None = None
    width: int | None = None
    height: int | None = None
    mpp_x: float | None = None
    mpp_y: float | None = None
    objective_power: float | None = None
    status: str = "ok"
    """``ok``, ``unreadable`` (see ``error``) or ``missing``."""
    error: str | None = None
    content_hash: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    """Catalog-specific fields (case links...), already filtered for the caller's role.

    The SQL catalog puts the case links in ``extra["case"]``: ``accession``, ``specimen``,
    ``block``, ``stain``, ``barcode``, ``linked`` and ``patient`` (PHI: ``id``, ``name``,
    ``birth_date``; drop that one key to de-identify).
    """


@dataclass(frozen=True)
class SlideQuery:
    """A slide search; empty fields do not filter."""

    q: str = ""
    format: str = ""
    vendor: str = ""
    status: str = ""
    limit: int = 50
    cursor: str = ""
    patient: str = ""
    """The patient's MRN."""
    accession: str = ""
    specimen: str = ""
    """The specimen (part) label, e.g. ``A``."""
    stain: str = ""
    scanned_from: str = ""
    """ISO date or date-time: scanned at or after."""
    scanned_to: str = ""
    """ISO date or date-time: scanned at or before (a bare date includes the whole day)."""
    sort: str = ""
    """``path`` (default), ``name``, ``scanned`` or ``indexed``; ``-`` prefix reverses."""
    study_uids: tuple[str, ...] = ()
    """DICOM Study Instance UIDs as DICOMweb serves them (any of them; a catalog that keeps no
    UIDs may return more slides, never fewer)."""
    series_uids: tuple[str, ...] = ()
    """DICOM Series Instance UIDs, likewise."""
    deidentified_uids: bool = False
    """Match the UIDs of the de-identified view (researchers') instead of the clinical ones."""


@dataclass(frozen=True)
class SlidePage:
    """One page of search results and the cursor of the next, if any."""

    items: list[SlideRecord]
    next: str | None


class Catalog(Protocol):
    """The slide index, in memory or in a database."""

    def get(self, slide_id: str) -> SlideRecord | None:
        """Return the slide with that ID, or ``None``."""

    def search(self, query: SlideQuery) -> SlidePage:
        """Return one page of slides matching ``query``, in a stable order."""

    def refresh(self) -> int:
        """Scan the roots again; return how many slides were added or changed."""

    def ping(self) -> None:
        """Return when the catalog can answer queries; raise when it cannot (readiness)."""

    def close(self) -> None:
        """Release connections."""
