"""Slide lookups and searches: SQL rows -> :class:`SlideRecord`, keyset pagination.

A record's case links go in ``extra["case"]``::

    {"accession", "specimen", "block", "stain", "barcode", "linked", "patient"}

where ``patient`` is ``{"id", "name", "birth_date"}`` (PHI, the only patient data a slide record
carries; role filters drop that one key) or ``None``. ``linked`` is true when the LIS confirmed
the case, false when only the file's own evidence (name, DICOM header, barcode) names it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Select,
    and_,
    bindparam,
    func,
    or_,
    select,
    union,
)

from slideserver.catalog.base import SlidePage, SlideQuery, SlideRecord
from slideserver.catalog.schema import blocks, cases, glass_slides, patients, scans, specimens
from slideserver.errors import BadRequest
from slideserver.models import SlideSource

SORTS = {
    "path": scans.c.relpath,
    "name": scans.c.name,
    "scanned": scans.c.scanned_at,
    "indexed": scans.c.indexed_at,
}
"""Sort keys ``GET /api/slides?sort=`` accepts; prefix ``-`` for descending."""

RECORD_COLUMNS = (
    scans.c.slide_id,
    scans.c.name,
    scans.c.relpath,
    scans.c.root,
    scans.c.files,
    scans.c.format,
    scans.c.vendor,
    scans.c.width,
    scans.c.height,
    scans.c.mpp_x,
    scans.c.mpp_y,
    scans.c.objective_power,
    scans.c.status,
    scans.c.error,
    scans.c.content_hash,
    scans.c.scanned_at,
    scans.c.indexed_at,
    scans.c.ev_accession,
    scans.c.ev_specimen,
    scans.c.ev_block,
    scans.c.ev_stain,
    scans.c.ev_barcode,
    scans.c.ev_patient_id,
    scans.c.ev_patient_name,
    scans.c.ev_patient_birth_date,
    cases.c.accession.label("case_accession"),
    specimens.c.label.label("case_specimen"),
    blocks.c.label.label("case_block"),
    glass_slides.c.stain.label("case_stain"),
    glass_slides.c.barcode.label("case_barcode"),
    patients.c.identifier.label("patient_identifier"),
    patients.c.name.label("patient_name"),
    patients.c.birth_date.label("patient_birth_date"),
)
"""What :func:`to_record` reads: a scan's columns and its case links (outer-joined)."""

RECORD_JOINS = (
    scans.outerjoin(glass_slides, glass_slides.c.id == scans.c.glass_slide_id)
    .outerjoin(cases, cases.c.id == glass_slides.c.case_id)
    .outerjoin(patients, patients.c.id == cases.c.patient_id)
    .outerjoin(specimens, specimens.c.id == glass_slides.c.specimen_id)
    .outerjoin(blocks, blocks.c.id == glass_slides.c.block_id)
)
"""The tables :data:`RECORD_COLUMNS` come from: each scan with its case links, if any."""

accession_of_scan = func.coalesce(cases.c.accession, scans.c.ev_accession)
"""The case a scan belongs to: the LIS link, else what the file says."""
specimen_of_scan = func.coalesce(specimens.c.label, scans.c.ev_specimen)
stain_of_scan = func.coalesce(glass_slides.c.stain, scans.c.ev_stain)


def base_query(roots: Sequence[Path]) -> Select[Any]:
    """Return the select of slide rows (with case links) under ``roots``."""
    return (
        select(*RECORD_COLUMNS)
        .select_from(RECORD_JOINS)
        .where(scans.c.root.in_([str(Path(r).absolute()) for r in roots]))
    )


AnyRow = Row[*tuple[Any, ...]]
"""A result row of any width (selects of many columns are typed by each column)."""


def to_record(row: AnyRow) -> SlideRecord:
    """Build the public record of one joined row."""
    root = Path(row.root)
    path = root / row.relpath
    files: tuple[Path, ...] = ()
    if row.files:
        files = tuple(path / name for name in json.loads(row.files))
    extra: dict[str, Any] = {}
    case = case_links(row)
    if case is not None:
        extra["case"] = case
    return SlideRecord(
        id=row.slide_id,
        name=row.name,
        relpath=row.relpath,
        root=root,
        source=SlideSource(path, files),
        format=row.format,
        vendor=row.vendor,
        width=row.width,
        height=row.height,
        mpp_x=row.mpp_x,
        mpp_y=row.mpp_y,
        objective_power=row.objective_power,
        status=row.status,
        error=row.error,
        content_hash=row.content_hash,
        extra=extra,
    )


def case_links(row: AnyRow) -> dict[str, Any] | None:
    """Return ``extra["case"]`` for a joined row, or ``None`` when nothing names a case."""
    if row.case_accession is not None:
        patient = None
        if row.patient_identifier is not None:
            patient = {
                "id": row.patient_identifier,
                "name": row.patient_name,
                "birth_date": row.patient_birth_date,
            }
        return {
            "accession": row.case_accession,
            "specimen": row.case_specimen,
            "block": row.case_block,
            "stain": row.case_stain or row.ev_stain,
            "barcode": row.case_barcode or row.ev_barcode,
            "linked": True,
            "patient": patient,
        }
    if row.ev_accession is None and row.ev_patient_id is None:
        return None
    return {
        "accession": row.ev_accession,
        "specimen": row.ev_specimen,
        "block": row.ev_block,
        "stain": row.ev_stain,
        "barcode": row.ev_barcode,
        "linked": False,
        "patient": (
            {
                "id": row.ev_patient_id,
                "name": row.ev_patient_name,
                "birth_date": row.ev_patient_birth_date,
            }
            if row.ev_patient_id
            else None
        ),
    }


def get(conn: Connection, roots: Sequence[Path], slide_id: str) -> SlideRecord | None:
    """Return one slide by public ID."""
    query = _by_id(tuple(str(r) for r in roots))
    row = conn.execute(query, {"slide_id": slide_id}).first()
    return None if row is None else to_record(row)


@functools.cache
def _by_id(roots: tuple[str, ...]) -> Select[Any]:
    """The statement of :func:`get`, built once per set of roots.

    SQLAlchemy derives a cache key from a statement's whole structure each time a new one is
    executed; a kept statement has it memoized. Every viewed slide is looked up (its record,
    its audit subjects), and the key of this many-column join cost more than the query.
    """
    return base_query([Path(r) for r in roots]).where(scans.c.slide_id == bindparam("slide_id"))


def get_many(conn: Connection, roots: Sequence[Path], ids: Sequence[str]) -> list[SlideRecord]:
    """Return the slides with these IDs (unknown IDs are left out), in path order."""
    if not ids:
        return []
    query = base_query(roots).where(scans.c.slide_id.in_(list(ids))).order_by(scans.c.relpath)
    return [to_record(r) for r in conn.execute(query)]


def search(conn: Connection, roots: Sequence[Path], query: SlideQuery) -> SlidePage:
    """Return one page of matching slides; the cursor is the last row's sort key."""
    sort = query.sort or "path"
    descending = sort.startswith("-")
    key_name = sort.lstrip("-")
    if key_name not in SORTS:
        raise BadRequest(f"sort must be one of {', '.join(sorted(SORTS))} (prefix - to reverse)")
    key = SORTS[key_name]
    stmt = base_query(roots).where(*filters(query))
    if query.cursor:
        last_value, last_id = decode_cursor(query.cursor, sort)
        if key_name in {"scanned", "indexed"}:
            last_value = datetime.fromisoformat(str(last_value))
        after = (
            or_(key < last_value, and_(key == last_value, scans.c.slide_id < last_id))
            if descending
            else or_(key > last_value, and_(key == last_value, scans.c.slide_id > last_id))
        )
        stmt = stmt.where(after)
    order = (key.desc(), scans.c.slide_id.desc()) if descending else (key, scans.c.slide_id)
    rows = conn.execute(stmt.order_by(*order).limit(query.limit + 1)).all()
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        value = getattr(last, key.name)
        if isinstance(value, datetime):
            value = _utc(value).isoformat()
        next_cursor = encode_cursor(value, last.slide_id, sort)
    return SlidePage([to_record(r) for r in rows], next_cursor)


def filters(query: SlideQuery) -> list[ColumnElement[bool]]:
    """Return the SQL conditions of ``query``'s non-empty fields."""
    where: list[ColumnElement[bool]] = []
    if query.q:
        needle = query.q.lower()
        where.append(
            or_(
                func.lower(scans.c.name).contains(needle, autoescape=True),
                func.lower(scans.c.relpath).contains(needle, autoescape=True),
            )
        )
    exact = {
        "format": scans.c.format,
        "vendor": scans.c.vendor,
        "status": scans.c.status,
    }
    for name, column in exact.items():
        value = getattr(query, name)
        if value:
            where.append(column == value)
    # Patient and case: first the scans found through indexes (of the cases with that patient or
    # number, or whose file names it), then the exact rule on the joined row.
    patient = query.patient
    if patient:
        of_patient = (
            select(glass_slides.c.id)
            .join(cases, cases.c.id == glass_slides.c.case_id)
            .join(patients, patients.c.id == cases.c.patient_id)
            .where(patients.c.identifier == patient)
        )
        where.append(
            _scans_where(scans.c.glass_slide_id.in_(of_patient), scans.c.ev_patient_id == patient)
        )
        where.append(
            or_(
                patients.c.identifier == patient,
                and_(cases.c.id.is_(None), scans.c.ev_patient_id == patient),
            )
        )
    accession = query.accession
    if accession:
        number = accession.upper()
        of_case = (
            select(glass_slides.c.id)
            .join(cases, cases.c.id == glass_slides.c.case_id)
            .where(cases.c.accession == number)
        )
        where.append(
            _scans_where(scans.c.glass_slide_id.in_(of_case), scans.c.ev_accession == number)
        )
        where.append(accession_of_scan == number)
    specimen = query.specimen
    if specimen:
        where.append(specimen_of_scan == specimen)
    stain = query.stain
    if stain:
        where.append(func.upper(stain_of_scan) == stain.upper())
    scanned_from = query.scanned_from
    if scanned_from:
        where.append(scans.c.scanned_at >= _as_datetime("scanned_from", scanned_from))
    scanned_to = query.scanned_to
    if scanned_to:
        where.append(scans.c.scanned_at <= _as_datetime("scanned_to", scanned_to, end=True))
    where += _dicom_uid_filters(query)
    return where


def _scans_where(*conditions: ColumnElement[bool]) -> ColumnElement[bool]:
    """The scans meeting any of ``conditions``, each answered by an index of its own (an ``OR``
    of them would often be a scan: most rows share a NULL there, and all share a root)."""
    found = [select(scans.c.id).where(c) for c in conditions]
    return scans.c.id.in_(found[0] if len(found) == 1 else union(*found))


def _dicom_uid_filters(query: SlideQuery) -> list[ColumnElement[bool]]:
    """Study and series UIDs, on indexed columns (:mod:`slideserver.catalog.dicom_uids`).

    A clinical study is the file's own, the numbered case's, or the scan's while in no such
    case; the conditions name every scan that may have the UID (DICOMweb checks each).
    """
    where: list[ColumnElement[bool]] = []
    series, studies = list(query.series_uids), list(query.study_uids)
    if query.deidentified_uids:
        if series:
            where.append(_scans_where(scans.c.research_series_uid.in_(series)))
        if studies:
            where.append(_scans_where(scans.c.research_study_uid.in_(studies)))
        return where
    if series:
        where.append(
            _scans_where(scans.c.dicom_series_uid.in_(series), scans.c.ev_series_uid.in_(series))
        )
    if studies:
        of_cases = (
            select(glass_slides.c.id)
            .join(cases, cases.c.id == glass_slides.c.case_id)
            .where(cases.c.dicom_study_uid.in_(studies))
        )
        where.append(
            _scans_where(
                scans.c.dicom_study_uid.in_(studies),
                scans.c.ev_study_uid.in_(studies),
                scans.c.glass_slide_id.in_(of_cases),
            )
        )
    return where


def _as_datetime(name: str, value: Any, end: bool = False) -> datetime:
    if isinstance(value, datetime):
        return _utc(value)
    raw = str(value).strip()
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise BadRequest(f"{name} must be an ISO date or date-time, not {raw[:30]!r}") from exc
    if end and len(raw) == 10:  # a bare date includes its whole day
        parsed = parsed.replace(hour=23, minute=59, second=59, microsecond=999999)
    return _utc(parsed)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def encode_cursor(value: Any, slide_id: str, sort: str) -> str:
    """Pack the last row's sort key into an opaque, URL-safe cursor."""
    raw = json.dumps([sort, value, slide_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> tuple[Any, str]:
    """Unpack a cursor; refuse one from another sort order or not from us."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        made_for, value, slide_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise BadRequest("cursor is not one this server gave out") from exc
    if made_for != sort or not isinstance(slide_id, str):
        raise BadRequest("cursor belongs to another sort order; start again without it")
    return value, slide_id
