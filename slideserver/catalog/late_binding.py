"""Late binding: link scans to the cases the LIS sent, from the evidence stored with each scan.

Evidence (:mod:`slideserver.catalog.evidence`) comes from, strongest first: DICOM attributes,
vendor barcodes, filename and folder rules. It is stored with the scan, so linking can run again
whenever either side changes (late binding both ways): a scan is linked when its case exists,
whether the order came first or not.

Rules that keep links trustworthy:

- A case exists only when the LIS sent it; an accession seen only in a file leaves the scan
  unlinked (its evidence still shows, marked ``linked: false``).
- Disagreements are flagged in ``conflicts`` and nothing is overwritten: a barcode the LIS put
  in another case, a DICOM PatientID that is not the case's patient.
- Every link and re-link is written to ``link_events``.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, or_, select, update

from slideserver.catalog.schema import (
    blocks,
    cases,
    conflicts,
    glass_slides,
    link_events,
    patients,
    scans,
    specimens,
)
from slideserver.db.engine import now
from slideserver.db.upsert import get_or_create, insert_ignore

log = logging.getLogger(__name__)


def flag_conflict(conn: Connection, kind: str, subject: str, detail: str) -> str:
    """Record a conflict for review once (repeats are absorbed); return its text. No PHI."""
    fingerprint = hashlib.blake2b(f"{kind}|{subject}|{detail}".encode(), digest_size=16)
    values = {
        "at": now(),
        "kind": kind,
        "subject": subject,
        "detail": detail,
        "fingerprint": fingerprint.hexdigest(),
        "status": "open",
    }
    if insert_ignore(conn, conflicts, values, ["fingerprint"]):
        log.info("link conflict flagged for review: %s", kind)
    return f"{kind}: {subject}: {detail}"


def record_event(conn: Connection, action: str, source: str, **values: Any) -> None:
    """Append one entry to the link history."""
    conn.execute(link_events.insert().values(at=now(), action=action, source=source, **values))


@dataclass(frozen=True)
class LinkOutcome:
    """What linking did to the scans it looked at."""

    linked: tuple[str, ...] = ()
    """Public slide IDs newly linked or re-linked."""
    conflicts: tuple[str, ...] = ()
    unknown_accessions: tuple[str, ...] = ()
    """Accessions the scans name that no case has (the EHR may be asked for them)."""


_SCAN_COLUMNS = (
    scans.c.id,
    scans.c.slide_id,
    scans.c.glass_slide_id,
    scans.c.ev_accession,
    scans.c.ev_specimen,
    scans.c.ev_block,
    scans.c.ev_stain,
    scans.c.ev_barcode,
    scans.c.ev_patient_id,
)


def link_scans(conn: Connection, where: Any, source: str = "scan") -> LinkOutcome:
    """Link every scan matching ``where`` (a SQL condition on ``scans``) to its case, if known."""
    linked: list[str] = []
    found: list[str] = []
    rows = conn.execute(select(*_SCAN_COLUMNS).where(where).order_by(scans.c.id)).all()
    accessions = {r.ev_accession for r in rows if r.ev_accession}
    barcodes = {r.ev_barcode for r in rows if r.ev_barcode}
    known_cases = set(
        conn.execute(select(cases.c.accession).where(cases.c.accession.in_(accessions))).scalars()
    )
    known_barcodes = set(
        conn.execute(
            select(glass_slides.c.barcode)
            .join(cases, cases.c.id == glass_slides.c.case_id)
            .where(glass_slides.c.barcode.in_(barcodes), cases.c.accession.is_not(None))
        ).scalars()
    )
    for row in rows:
        if row.ev_accession not in known_cases and row.ev_barcode not in known_barcodes:
            continue  # nothing the LIS sent names this scan (yet): leave it as it is
        target, problems = _resolve(conn, row)
        found.extend(problems)
        if target is None or target == row.glass_slide_id:
            continue
        previous_case = _case_of_glass(conn, row.glass_slide_id)
        new_case = _case_of_glass(conn, target)
        conn.execute(update(scans).where(scans.c.id == row.id).values(glass_slide_id=target))
        record_event(
            conn,
            "link" if row.glass_slide_id is None else "relink",
            source,
            slide_id=row.slide_id,
            glass_slide_id=target,
            case_id=new_case,
            previous_case_id=previous_case,
        )
        linked.append(row.slide_id)
    return LinkOutcome(tuple(linked), tuple(found), tuple(sorted(accessions - known_cases)))


def _case_of_glass(conn: Connection, glass_id: int | None) -> int | None:
    if glass_id is None:
        return None
    value = conn.execute(select(glass_slides.c.case_id).where(glass_slides.c.id == glass_id))
    case_id = value.scalar_one_or_none()
    return None if case_id is None else int(case_id)


def _resolve(conn: Connection, row: Any) -> tuple[int | None, list[str]]:
    """Return the glass slide the scan belongs to (or None) and any conflicts found."""
    problems: list[str] = []
    if row.ev_barcode:
        glass = conn.execute(
            select(glass_slides.c.id, cases.c.accession, cases.c.patient_id)
            .join(cases, cases.c.id == glass_slides.c.case_id)
            .where(glass_slides.c.barcode == row.ev_barcode, cases.c.accession.is_not(None))
        ).first()
        if glass is not None:
            if row.ev_accession and row.ev_accession != glass.accession:
                problems.append(
                    flag_conflict(
                        conn,
                        "barcode_case_mismatch",
                        row.slide_id,
                        f"the file names case {row.ev_accession} but its barcode belongs to "
                        f"case {glass.accession}",
                    )
                )
                return None, problems
            if not _same_patient(conn, glass.patient_id, row.ev_patient_id):
                problems.append(_patient_conflict(conn, row.slide_id, glass.accession))
                return None, problems
            return int(glass.id), problems
    if not row.ev_accession:
        return None, problems
    matches = conn.execute(
        select(cases.c.id, cases.c.patient_id).where(cases.c.accession == row.ev_accession)
    ).all()
    if not matches:
        return None, problems
    if len(matches) > 1:
        problems.append(
            flag_conflict(
                conn,
                "ambiguous_accession",
                row.slide_id,
                f"accession {row.ev_accession} exists with {len(matches)} issuers",
            )
        )
        return None, problems
    case_id, patient_id = int(matches[0].id), matches[0].patient_id
    if not _same_patient(conn, patient_id, row.ev_patient_id):
        problems.append(_patient_conflict(conn, row.slide_id, row.ev_accession))
        return None, problems
    specimen_id = block_id = None
    if row.ev_specimen or row.ev_block:
        label = row.ev_specimen or (row.ev_block or "")[:1]
        specimen_id, _ = get_or_create(conn, specimens, {"case_id": case_id, "label": label})
        if row.ev_block:
            block_id, _ = get_or_create(
                conn, blocks, {"specimen_id": specimen_id, "label": row.ev_block}
            )
    if row.glass_slide_id is not None and _case_of_glass(conn, row.glass_slide_id) == case_id:
        return int(row.glass_slide_id), problems
    if not row.ev_barcode and block_id is not None:
        ordered = _unscanned_ordered(conn, block_id, row.ev_stain)
        if ordered is not None:
            return ordered, problems
    key = f"barcode:{row.ev_barcode}" if row.ev_barcode else f"scan:{row.id}:{case_id}"
    glass_id, _ = get_or_create(
        conn,
        glass_slides,
        {"key": key},
        {
            "barcode": row.ev_barcode,
            "stain": row.ev_stain,
            "case_id": case_id,
            "specimen_id": specimen_id,
            "block_id": block_id,
            "ordered": False,
        },
    )
    return glass_id, problems


def _unscanned_ordered(conn: Connection, block_id: int, stain: str | None) -> int | None:
    """Return the one ordered slide of the block with that stain that has no scan yet."""
    scanned = select(scans.c.glass_slide_id).where(scans.c.glass_slide_id.is_not(None))
    query = select(glass_slides.c.id).where(
        glass_slides.c.block_id == block_id,
        glass_slides.c.ordered.is_(True),
        glass_slides.c.id.not_in(scanned),
    )
    if stain:
        query = query.where(
            or_(glass_slides.c.stain.is_(None), func.upper(glass_slides.c.stain) == stain.upper())
        )
    found = conn.execute(query.limit(2)).all()
    return int(found[0].id) if len(found) == 1 else None


def _same_patient(conn: Connection, patient_id: int | None, dicom_id: str | None) -> bool:
    if patient_id is None or not dicom_id:
        return True
    identifier = conn.execute(
        select(patients.c.identifier).where(patients.c.id == patient_id)
    ).scalar_one_or_none()
    if identifier is None or identifier == dicom_id:
        return True
    # a header written before an ADT^A40 merge still names the merged patient
    merged = select(patients.c.id).where(
        patients.c.identifier == dicom_id, patients.c.merged_into == patient_id
    )
    return conn.execute(merged).first() is not None


def _patient_conflict(conn: Connection, slide_id: str, accession: str) -> str:
    return flag_conflict(
        conn,
        "patient_mismatch",
        slide_id,
        f"the DICOM PatientID differs from the LIS patient of case {accession}; not linked",
    )
