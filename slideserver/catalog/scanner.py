"""Incremental scans: open only new or changed files, keep identities, never stop on a bad file.

One scan: walk the roots; compare each slide's stat fingerprint (size, mtime, inode) with the
catalog; describe only what is new or changed (content hash + one reader open + one small pixel
read per level, in a small thread pool); store in batches; mark vanished files ``missing`` (links
kept); link what changed.

A slide is ``ok`` only when its pixels can be read: a file whose header opens but whose tiles no
reader decodes (old-style JPEG, corrupt tile data, a truncated DICOM instance) is ``unreadable``
with a reason, so that nobody is offered a slide that fails on every pixel request. The reason
never names the file or its folder.

A file whose content hash matches a row whose file has gone is a *move*: the row takes the new
path and keeps its slide ID and links. Every write is an upsert on the unique constraints, each
slide in its own savepoint, so concurrent scans (several workers, ``index`` while serving)
neither duplicate nor lose rows: the loser of a race re-reads and retries.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, and_, select, update
from sqlalchemy.exc import IntegrityError

from slideserver.catalog.dicom_uids import scan_columns
from slideserver.catalog.discovery import (
    FoundSlide,
    content_hash,
    discover,
    slide_id_from_hash,
)
from slideserver.catalog.evidence import gather_evidence
from slideserver.catalog.late_binding import flag_conflict, link_scans, record_event
from slideserver.catalog.rules import FilenameRules
from slideserver.catalog.schema import scans
from slideserver.db.engine import now
from slideserver.db.upsert import dialect_insert
from slideserver.errors import SlideServerError
from slideserver.files import stat_fingerprint, without_file_names
from slideserver.models import SlideInfo, SlideSource
from slideserver.readers.registry import ReaderRegistry

log = logging.getLogger(__name__)

BATCH = 500
"""Slides stored per transaction: big enough to be fast, small enough not to hold the lock long."""

SCAN_DATE_KEYS = ("dicom.AcquisitionDateTime", "dicom.ContentDate", "tiff.DateTime", "aperio.Date")
"""Properties that say when the glass slide was scanned, best first; else the file's mtime."""

Progress = Callable[[int, int], None]
"""Called with (slides described so far, slides to describe)."""

PROBE_SIZE = 16
"""Side of the box read at the origin of every level to prove its pixels decode: small, so the
check costs one tile decode per level, and the first tile is where a broken codec shows."""


class PixelReader(Protocol):
    """The part of a reader the pixel check uses (any :class:`~slideserver.readers` reader)."""

    @property
    def info(self) -> SlideInfo: ...

    def read_region(self, l0_x: int, l0_y: int, level: int, l_width: int, l_height: int) -> Any: ...


def check_pixels(reader: PixelReader) -> None:
    """Read a small box of every level; raise what the reader raises if one cannot be decoded."""
    for index, level in enumerate(reader.info.levels):
        reader.read_region(0, 0, index, min(PROBE_SIZE, level.width), min(PROBE_SIZE, level.height))


def unreadable_reason(detail: str, source: SlideSource) -> str:
    """Return a reader's error text without the file's path, name or folder name."""
    return without_file_names(detail, source)


@dataclass
class ScanReport:
    """What one scan found and did."""

    found: int = 0
    unchanged: int = 0
    added: int = 0
    changed: int = 0
    moved: int = 0
    missing: int = 0
    unreadable: int = 0
    linked: int = 0
    seconds: float = 0.0
    conflicts: list[str] = field(default_factory=list)

    @property
    def touched(self) -> int:
        """Slides added, changed, moved or gone: what ``Catalog.refresh`` reports."""
        return self.added + self.changed + self.moved + self.missing


@dataclass(frozen=True)
class _Known:
    id: int
    slide_id: str
    fingerprint: str
    content_hash: str
    status: str


@dataclass(frozen=True)
class _Described:
    found: FoundSlide
    fingerprint: str
    digest: str
    values: dict[str, Any]
    evidence: dict[str, Any]
    disagreements: tuple[str, ...]


class Scanner:
    """Brings the catalog in line with the files under the roots."""

    def __init__(
        self,
        writer: Engine,
        roots: Sequence[Path],
        registry: ReaderRegistry,
        rules: FilenameRules,
        threads: int = 0,
    ) -> None:
        self.writer = writer
        self.roots = tuple(Path(r).absolute() for r in roots)
        self.registry = registry
        self.rules = rules
        self.threads = threads or min(8, (os.cpu_count() or 1) * 2)
        self.on_unknown_accession: Callable[[str], None] | None = None
        """Told each accession a new or changed scan names that no case has (issue 14: the EHR
        pull looks it up); it must not block, and its failures are only logged."""

    def scan(self, progress: Progress | None = None) -> ScanReport:
        """Run one incremental scan of every root."""
        started = time.perf_counter()
        report = ScanReport()
        known = self._load_known()
        seen: set[tuple[str, str]] = set()
        todo: list[tuple[FoundSlide, str]] = []
        for found in discover(self.roots, self.registry):
            key = (str(found.root), found.relpath)
            try:
                fingerprint = stat_fingerprint(found.source)
            except OSError:
                continue  # vanished between the walk and the stat
            seen.add(key)
            report.found += 1
            old = known.get(key)
            if old is not None and old.fingerprint == fingerprint and old.status != "missing":
                report.unchanged += 1
            else:
                todo.append((found, fingerprint))
        gone = {k: v for k, v in known.items() if k not in seen and v.status != "missing"}
        touched: list[int] = []
        for batch in _chunks(self._describe_all(todo, progress), BATCH):
            with self.writer.begin() as conn:
                rest = self._insert_new(conn, batch, known, report, touched)
                for item in rest:
                    row_id = self._store_with_retry(conn, item, known, gone, report)
                    if row_id is not None:
                        touched.append(row_id)
        self._mark_missing(gone, report)
        for ids in _chunks(touched, BATCH):
            with self.writer.begin() as conn:
                outcome = link_scans(conn, scans.c.id.in_(ids))
            report.linked += len(outcome.linked)
            report.conflicts.extend(outcome.conflicts)
            self._tell_unknown(outcome.unknown_accessions)
        report.seconds = time.perf_counter() - started
        log.info(
            "scan: %d found, %d unchanged, %d added, %d changed, %d moved, %d missing, "
            "%d unreadable, %d linked in %.1f s",
            report.found,
            report.unchanged,
            report.added,
            report.changed,
            report.moved,
            report.missing,
            report.unreadable,
            report.linked,
            report.seconds,
        )
        return report

    def _tell_unknown(self, accessions: Sequence[str]) -> None:
        hook = self.on_unknown_accession
        if hook is None:
            return
        for accession in accessions:
            try:
                hook(accession)
            except Exception as exc:  # a hook never fails a scan
                log.warning("unknown-accession hook failed (%s)", type(exc).__name__)

    def _load_known(self) -> dict[tuple[str, str], _Known]:
        query = select(
            scans.c.id,
            scans.c.slide_id,
            scans.c.root,
            scans.c.relpath,
            scans.c.fingerprint,
            scans.c.content_hash,
            scans.c.status,
        ).where(scans.c.root.in_([str(r) for r in self.roots]))
        with self.writer.connect() as conn:
            return {
                (r.root, r.relpath): _Known(
                    r.id, r.slide_id, r.fingerprint, r.content_hash, r.status
                )
                for r in conn.execute(query)
            }

    def _describe_all(
        self, todo: list[tuple[FoundSlide, str]], progress: Progress | None
    ) -> Iterable[_Described]:
        total = len(todo)
        if progress:
            progress(0, total)
        if not todo:
            return
        with ThreadPoolExecutor(self.threads, thread_name_prefix="scan") as pool:
            for done, item in enumerate(pool.map(lambda t: self._describe(*t), todo), 1):
                if progress:
                    progress(done, total)
                if item is not None:
                    yield item

    def _describe(self, found: FoundSlide, fingerprint: str) -> _Described | None:
        """Hash and open one slide; ``None`` when it vanished meanwhile."""
        try:
            digest = content_hash(found.source)
            mtime = max(p.stat().st_mtime for p in found.source.all_files)
        except OSError:
            return None
        values: dict[str, Any] = {
            "name": found.name,
            "files": (
                json.dumps([p.name for p in found.source.files]) if found.source.files else None
            ),
            "status": "ok",
            "error": None,
            "format": None,
            "vendor": None,
            "width": None,
            "height": None,
            "mpp_x": None,
            "mpp_y": None,
            "objective_power": None,
        }
        properties: dict[str, str] = {}
        try:
            with self.registry.open(found.source) as reader:
                info = reader.info
                properties = dict(info.properties)
                values.update(info.summary())
                check_pixels(reader)
        except SlideServerError as exc:
            reason = unreadable_reason(exc.detail, found.source)
            values.update(status="unreadable", error=reason)
        except Exception as exc:  # a reader bug must not stop the scan either
            log.warning("a reader failed unexpectedly on one slide: %s", type(exc).__name__)
            values.update(status="unreadable", error=f"reader failure: {type(exc).__name__}")
        values["scanned_at"] = scan_date(properties) or datetime.fromtimestamp(mtime, UTC)
        evidence = gather_evidence(found.relpath, properties, self.rules)
        return _Described(
            found, fingerprint, digest, values, evidence.columns(), evidence.disagreements
        )

    def _insert_new(
        self,
        conn: Connection,
        batch: list[_Described],
        known: dict[tuple[str, str], _Known],
        report: ScanReport,
        touched: list[int],
    ) -> list[_Described]:
        """Insert the plainly new slides of a batch at once; return the others (moves...)."""
        digests = {item.digest for item in batch}
        taken = set(
            conn.execute(
                select(scans.c.content_hash).where(scans.c.content_hash.in_(digests))
            ).scalars()
        )
        fresh: list[_Described] = []
        rest: list[_Described] = []
        for item in batch:
            key = (str(item.found.root), item.found.relpath)
            if key in known or item.digest in taken or item.disagreements:
                rest.append(item)
            else:
                taken.add(item.digest)
                fresh.append(item)
        if not fresh:
            return rest
        stamp = now()
        rows = [
            {
                **item.values,
                **item.evidence,
                **scan_columns(slide_id_from_hash(item.digest), item.evidence["ev_accession"]),
                "slide_id": slide_id_from_hash(item.digest),
                "root": str(item.found.root),
                "relpath": item.found.relpath,
                "fingerprint": item.fingerprint,
                "content_hash": item.digest,
                "indexed_at": stamp,
            }
            for item in fresh
        ]
        # Rows a concurrent scan inserted meanwhile are skipped here (any unique constraint)
        # and stored one by one below, where races are resolved.
        conn.execute(dialect_insert(conn, scans).on_conflict_do_nothing(), rows)
        stored = {
            (r.root, r.relpath, r.slide_id): int(r.id)
            for r in conn.execute(
                select(scans.c.id, scans.c.root, scans.c.relpath, scans.c.slide_id).where(
                    scans.c.slide_id.in_([r["slide_id"] for r in rows])
                )
            )
        }
        for item, row in zip(fresh, rows, strict=True):
            row_id = stored.get((row["root"], row["relpath"], row["slide_id"]))
            if row_id is None:
                rest.append(item)
                continue
            touched.append(row_id)
            report.added += 1
            report.unreadable += row["status"] == "unreadable"
        return rest

    def _store_with_retry(
        self,
        conn: Connection,
        item: _Described,
        known: dict[tuple[str, str], _Known],
        gone: dict[tuple[str, str], _Known],
        report: ScanReport,
    ) -> int | None:
        for attempt in range(3):
            try:
                with conn.begin_nested():
                    return self._store(conn, item, known, gone, report)
            except IntegrityError:
                if attempt == 2:
                    log.warning("a slide could not be stored after concurrent updates; skipped")
                    return None
        return None

    def _store(
        self,
        conn: Connection,
        item: _Described,
        known: dict[tuple[str, str], _Known],
        gone: dict[tuple[str, str], _Known],
        report: ScanReport,
    ) -> int:
        root, relpath = str(item.found.root), item.found.relpath

        def uids(slide_id: str) -> dict[str, Any]:
            return scan_columns(slide_id, item.evidence["ev_accession"])

        values = {
            **item.values,
            **item.evidence,
            "fingerprint": item.fingerprint,
            "content_hash": item.digest,
            "indexed_at": now(),
        }
        current = conn.execute(
            select(scans.c.id, scans.c.slide_id, scans.c.content_hash).where(
                scans.c.root == root, scans.c.relpath == relpath
            )
        ).first()
        same_hash = conn.execute(
            select(scans.c.id, scans.c.slide_id, scans.c.root, scans.c.relpath, scans.c.status)
            .where(scans.c.content_hash == item.digest)
            .order_by(scans.c.id)
        ).all()
        if current is None:
            moved = next(
                (r for r in same_hash if r.status == "missing" or (r.root, r.relpath) in gone),
                None,
            )
            if moved is not None and not _exists(Path(moved.root) / moved.relpath):
                conn.execute(
                    update(scans)
                    .where(scans.c.id == moved.id)
                    .values(root=root, relpath=relpath, **values, **uids(moved.slide_id))
                )
                record_event(
                    conn, "move", "scan", slide_id=moved.slide_id, detail="file moved or renamed"
                )
                gone.pop((moved.root, moved.relpath), None)
                report.moved += 1
                row_id = int(moved.id)
            else:
                slide_id = _free_slide_id(item.digest, relpath, same_hash, None)
                stmt = dialect_insert(conn, scans).values(
                    slide_id=slide_id, root=root, relpath=relpath, **values, **uids(slide_id)
                )
                stmt = stmt.on_conflict_do_update(
                    index_elements=["root", "relpath"], set_=values
                ).returning(scans.c.id, scans.c.slide_id)
                stored = conn.execute(stmt).one()
                row_id, stored_id = int(stored.id), str(stored.slide_id)
                if stored_id != slide_id:  # a concurrent scan inserted the row: its slide ID
                    conn.execute(
                        update(scans).where(scans.c.id == row_id).values(**uids(stored_id))
                    )
                report.added += 1
        else:
            row_id = int(current.id)
            slide_id = current.slide_id
            if current.content_hash != item.digest:
                slide_id = _free_slide_id(item.digest, relpath, same_hash, row_id)
            conn.execute(
                update(scans)
                .where(scans.c.id == row_id)
                .values(slide_id=slide_id, **values, **uids(slide_id))
            )
            report.changed += 1
        if values["status"] == "unreadable":
            report.unreadable += 1
        for text in item.disagreements:
            report.conflicts.append(flag_conflict(conn, "evidence_disagrees", relpath, text))
        return row_id

    def _mark_missing(self, gone: dict[tuple[str, str], _Known], report: ScanReport) -> None:
        rows = [(k, v) for k, v in gone.items() if not _exists(Path(k[0]) / k[1])]
        for batch in _chunks(rows, BATCH):
            with self.writer.begin() as conn:
                for (root, relpath), old in batch:
                    result = conn.execute(
                        update(scans)
                        .where(
                            and_(
                                scans.c.id == old.id,
                                scans.c.root == root,
                                scans.c.relpath == relpath,
                                scans.c.status != "missing",
                            )
                        )
                        .values(status="missing", indexed_at=now())
                    )
                    report.missing += result.rowcount


def _free_slide_id(digest: str, relpath: str, same_hash: Sequence[Any], own: int | None) -> str:
    """Return the content-derived ID, or one derived from the path too for a duplicate copy."""
    slide_id = slide_id_from_hash(digest)
    if any(r.slide_id == slide_id and r.id != own for r in same_hash):
        return slide_id_from_hash(f"{digest}:{relpath}")
    return slide_id


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def _chunks(items: Iterable[Any], size: int) -> Iterable[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


_DATE_FORMATS = (
    (re.compile(r"^\d{14}"), "%Y%m%d%H%M%S", 14),
    (re.compile(r"^\d{8}$"), "%Y%m%d", 8),
    (re.compile(r"^\d{4}:\d{2}:\d{2} \d{2}:\d{2}:\d{2}"), "%Y:%m:%d %H:%M:%S", 19),
    (re.compile(r"^\d{2}/\d{2}/\d{2}$"), "%m/%d/%y", 8),
    (re.compile(r"^\d{4}-\d{2}-\d{2}"), "%Y-%m-%d", 10),
)


def scan_date(properties: dict[str, str]) -> datetime | None:
    """Return when the slide was scanned according to its properties, in UTC, if they say."""
    for key in SCAN_DATE_KEYS:
        raw = (properties.get(key) or "").strip()
        for pattern, fmt, length in _DATE_FORMATS:
            if pattern.match(raw):
                try:
                    return datetime.strptime(raw[:length], fmt).replace(tzinfo=UTC)
                except ValueError:
                    break
    return None
