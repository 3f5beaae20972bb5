"""The SQL catalog: SQLite by default, PostgreSQL when the URL says so, same code for both.

:class:`SqlCatalog` is a :class:`~slideserver.catalog.base.Catalog` (slides, search, scans) and a
:class:`~slideserver.catalog.cases.LinkStore` (the LIS side: orders, patients, case views). Every
method is one transaction; the object is safe to share between threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, select, text

from slideserver.catalog.base import SlidePage, SlideQuery, SlideRecord
from slideserver.catalog.cases import (
    ApplyResult,
    CaseOrder,
    CaseView,
    Conflict,
    EhrStateStore,
    LinkStore,
    PatientIn,
)
from slideserver.catalog.migrations import upgrade
from slideserver.catalog.rules import FilenameRules
from slideserver.catalog.scanner import Progress, Scanner, ScanReport
from slideserver.catalog.schema import conflicts, link_events
from slideserver.catalog.store import cases, ehr_state, slides
from slideserver.db.engine import (
    check_free_space,
    default_database_url,
    make_engine,
    single_statement_reads,
    writer,
)
from slideserver.db.errors import READ_ONLY, DatabaseReadOnly
from slideserver.errors import BackendUnavailable
from slideserver.readers.registry import ReaderRegistry
from slideserver.settings import Settings

if TYPE_CHECKING:
    from slideserver.catalog.watch import RootWatcher

log = logging.getLogger(__name__)

__all__ = ["Conflict", "LinkEvent", "SqlCatalog", "open_catalog"]


@dataclass(frozen=True)
class LinkEvent:
    """One entry of the link history."""

    id: int
    at: datetime
    action: str
    source: str
    slide_id: str | None
    case_id: int | None
    previous_case_id: int | None
    detail: str | None


class SqlCatalog:
    """Slides and their case links in a SQL database."""

    def __init__(
        self,
        url: str,
        roots: Sequence[Path],
        registry: ReaderRegistry,
        *,
        rules: FilenameRules | None = None,
        scan_threads: int = 0,
    ) -> None:
        self.url = url
        self.roots = tuple(Path(r).absolute() for r in roots)
        self._root_names = [str(r) for r in self.roots]
        self.engine: Engine = make_engine(url)
        self.writer: Engine = writer(self.engine)
        self._one_read: Engine = single_statement_reads(self.engine)
        self.rules = rules or FilenameRules()
        self.scanner = Scanner(self.writer, self.roots, registry, self.rules, scan_threads)
        self._scan_lock = threading.Lock()
        self._watcher: RootWatcher | None = None
        upgrade(self.writer)

    # -- Catalog --

    def get(self, slide_id: str) -> SlideRecord | None:
        """Return the slide with that ID, or ``None`` (one statement: asked for by every view)."""
        with self._one_read.connect() as conn:
            return slides.get(conn, self.roots, slide_id)

    def get_many(self, slide_ids: Sequence[str]) -> list[SlideRecord]:
        """Return the slides with these IDs, in path order; unknown IDs are left out."""
        with self.engine.connect() as conn:
            return slides.get_many(conn, self.roots, slide_ids)

    def search(self, query: SlideQuery) -> SlidePage:
        """Return one page of slides matching ``query`` (keyset pagination, stable order)."""
        with self.engine.connect() as conn:
            return slides.search(conn, self.roots, query)

    def refresh(self) -> int:
        """Scan the roots incrementally; return how many slides were added, changed or lost."""
        return self.scan().touched

    def scan(self, progress: Progress | None = None) -> ScanReport:
        """Scan the roots incrementally and report what was found and done.

        Scans within one process run one at a time; scans in other processes may overlap.
        """
        with self._scan_lock:
            return self.scanner.scan(progress)

    def ping(self) -> None:
        """Raise :class:`BackendUnavailable` when the database does not answer."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            raise BackendUnavailable("the catalog database does not answer") from exc

    def check_writable(self, min_free_bytes: int = 0) -> None:
        """Raise when a write would fail now; cheap enough for every readiness probe.

        SQLite: ``BEGIN IMMEDIATE`` takes the write lock (a read-only file or mount refuses
        it), and the database's folder must keep ``min_free_bytes`` free (a full disk shows
        before SQLite fails mid-write). PostgreSQL: the server must accept writes (not a
        standby, not read-only); a full disk there shows as writes answering 507.
        """
        if self.engine.dialect.name == "sqlite":
            with self.writer.connect() as conn:
                conn.begin()  # BEGIN IMMEDIATE: the write lock, nothing written
                conn.rollback()
            check_free_space(self.engine, min_free_bytes)
            return
        with self.engine.connect() as conn:
            if conn.exec_driver_sql("SHOW transaction_read_only").scalar() == "on":
                raise DatabaseReadOnly(READ_ONLY)

    def watch(self, debounce_ms: int = 500) -> None:
        """Start re-scanning in a background thread whenever files under the roots change."""
        from slideserver.catalog.watch import RootWatcher

        if self._watcher is None:
            self._watcher = RootWatcher(self.roots, self.refresh, debounce_ms=debounce_ms)
            self._watcher.start()

    @property
    def watcher(self) -> RootWatcher | None:
        """The file watcher :meth:`watch` started, or ``None`` (none started, or closed)."""
        return self._watcher

    def close(self) -> None:
        """Stop the watcher and release connections."""
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        self.engine.dispose()

    # -- LinkStore --

    def apply_order(self, order: CaseOrder) -> ApplyResult:
        """Create or update the case, patient, specimens, blocks and expected slides."""
        with self.writer.begin() as conn:
            return cases.apply_order(conn, order)

    def update_patient(self, patient: PatientIn, source: str = "hl7v2") -> bool:
        """Update demographics (ADT^A08, EHR corrections); return whether the patient exists."""
        with self.writer.begin() as conn:
            return cases.update_patient(conn, patient, source)

    def merge_patients(
        self, surviving: PatientIn, merged_identifier: str, source: str = "hl7v2"
    ) -> bool:
        """Move every case of ``merged_identifier`` to ``surviving`` (ADT^A40, EHR merges)."""
        with self.writer.begin() as conn:
            return cases.merge_patients(conn, surviving, merged_identifier, source)

    def get_case(self, accession: str) -> CaseView | None:
        """Return the case with that accession number (LIS case, else file evidence)."""
        with self.engine.connect() as conn:
            return cases.get_case(conn, self._root_names, accession)

    def has_case(self, accession: str) -> bool:
        """Tell whether the LIS sent a case with that accession number."""
        with self.engine.connect() as conn:
            return cases.has_case(conn, accession)

    def case_with_slides(self, accession: str) -> tuple[CaseView, list[SlideRecord], bool] | None:
        """The case, its slides' records and whether the LIS sent it: one connection, three
        statements (what opening a case asks for, :func:`cases.get_case_linked`)."""
        with self.engine.connect() as conn:
            return cases.get_case_linked(conn, self._root_names, accession)

    def cases_of_patient(self, identifier: str) -> list[CaseView]:
        """Return every case of the patient with that MRN."""
        with self.engine.connect() as conn:
            return cases.cases_of_patient(conn, self._root_names, identifier)

    def record_message(self, source: str, raw: str, status: str, detail: str = "") -> None:
        """Keep the raw inbound message with how it was answered."""
        with self.writer.begin() as conn:
            cases.record_message(conn, source, raw, status, detail)

    # -- EHR pull state (issue 14) --

    def ehr_cursor(self, name: str) -> str | None:
        """The EHR pull's cursor for a resource type, or ``None``."""
        with self.engine.connect() as conn:
            return ehr_state.cursor(conn, name)

    def set_ehr_cursor(self, name: str, value: str) -> None:
        """Move the EHR pull's cursor for a resource type."""
        with self.writer.begin() as conn:
            ehr_state.set_cursor(conn, name, value)

    def take_ehr_lease(self, owner: str, seconds: float) -> bool:
        """Take or renew the EHR poll lease; False while another process holds it."""
        with self.writer.begin() as conn:
            return ehr_state.take_lease(conn, owner, seconds)

    def release_ehr_lease(self, owner: str) -> None:
        """Give the EHR poll lease up."""
        with self.writer.begin() as conn:
            ehr_state.release_lease(conn, owner)

    # -- review --

    def conflicts(self, status: str = "open", limit: int = 100, after: int = 0) -> list[Conflict]:
        """Return flagged conflicts (``status`` empty: all), oldest first, IDs above ``after``."""
        query = select(conflicts).where(conflicts.c.id > after).order_by(conflicts.c.id)
        if status:
            query = query.where(conflicts.c.status == status)
        with self.engine.connect() as conn:
            return [
                Conflict(r.id, r.at, r.kind, r.subject, r.detail, r.status)
                for r in conn.execute(query.limit(limit))
            ]

    def link_history(self, slide_id: str | None = None, limit: int = 100) -> list[LinkEvent]:
        """Return the link history, newest first (of one slide when ``slide_id`` is given)."""
        query = select(link_events).order_by(link_events.c.id.desc()).limit(limit)
        if slide_id:
            query = query.where(link_events.c.slide_id == slide_id)
        with self.engine.connect() as conn:
            return [
                LinkEvent(
                    r.id,
                    r.at,
                    r.action,
                    r.source,
                    r.slide_id,
                    r.case_id,
                    r.previous_case_id,
                    r.detail,
                )
                for r in conn.execute(query)
            ]


def open_catalog(settings: Settings, registry: ReaderRegistry) -> SqlCatalog:
    """Open the SQL catalog the settings ask for (and start watching if they say so)."""
    catalog = SqlCatalog(
        default_database_url(settings),
        settings.roots,
        registry,
        rules=FilenameRules.from_setting(settings.filename_pattern),
    )
    if settings.watch:
        catalog.watch()
    return catalog


def _implements_link_store(catalog: SqlCatalog) -> LinkStore:
    """Let mypy check that :class:`SqlCatalog` implements :class:`LinkStore` (never called)."""
    return catalog


def _implements_ehr_state_store(catalog: SqlCatalog) -> EhrStateStore:
    """Let mypy check that :class:`SqlCatalog` implements :class:`EhrStateStore` (never called)."""
    return catalog
