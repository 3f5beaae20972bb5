"""The SQL store of patients, cases, specimens, blocks and ordered slides (the LinkStore side).

Apply LIS orders, update and merge patients, keep inbound messages, build case views.

Each function runs inside the caller's transaction (one per message). The LIS is the authority
on cases and demographics; where it contradicts what the catalog already holds about *which*
case or patient something belongs to, the disagreement is flagged and the old link kept.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, or_, select, update

from slideserver.catalog.base import SlideRecord
from slideserver.catalog.cases import (
    ACTIVE,
    PENDING,
    WITHDRAWN,
    ApplyResult,
    BlockView,
    CaseOrder,
    CaseView,
    PatientIn,
    SlideView,
    SpecimenView,
)
from slideserver.catalog.dicom_uids import case_study_uid
from slideserver.catalog.late_binding import flag_conflict, link_scans, record_event
from slideserver.catalog.schema import (
    blocks,
    cases,
    glass_slides,
    inbound_messages,
    patients,
    scans,
    specimens,
)
from slideserver.catalog.store.slides import RECORD_COLUMNS, RECORD_JOINS, AnyRow, to_record
from slideserver.db.engine import now
from slideserver.db.upsert import get_or_create


def apply_order(conn: Connection, order: CaseOrder) -> ApplyResult:
    """Apply ``order`` to its one case (found by its numbers) and link the scans waiting for it.

    An order without an accession number is kept as a ``pending`` case until a later message
    of the same order (same placer or filler number) brings it; a cancel or discontinue only
    changes the case's status and writes its history: nothing is unlinked.
    """
    accession = order.accession.strip().upper()
    case, problems = _find_case(conn, order, accession)
    if order.status in WITHDRAWN:
        return _withdraw(conn, case, order)
    changed = False
    patient_id, patient_changed = _upsert_patient(conn, order.patient)
    changed |= patient_changed
    stamp = now()
    numbers = {
        "placer": order.placer or None,
        "placer_issuer": order.placer_issuer,
        "filler": order.filler or None,
        "filler_issuer": order.filler_issuer,
    }
    created = case is None
    if case is None:
        values = {
            "accession": accession or None,
            "dicom_study_uid": case_study_uid(accession or None),
            "issuer": order.accession_issuer,
            "patient_id": patient_id,
            "source": order.source,
            "status": ACTIVE if accession else PENDING,
            "created_at": stamp,
            "updated_at": stamp,
            **numbers,
        }
        inserted = conn.execute(cases.insert().values(**values)).inserted_primary_key
        assert inserted is not None
        case_id = int(inserted[0])
        record_event(
            conn, "case_created" if accession else "order_pending", order.source, case_id=case_id
        )
        changed = True
        status, case_accession = str(values["status"]), accession
    else:
        case_id = int(case.id)
        updates = _missing_numbers(case, order, accession)
        if updates:
            conn.execute(update(cases).where(cases.c.id == case_id).values(**updates))
            changed = True
            if "accession" in updates:
                record_event(conn, "accession_assigned", order.source, case_id=case_id)
        case_accession = updates.get("accession") or case.accession or ""
        status = updates.get("status") or case.status
        if accession and case.accession and accession != case.accession:
            problems.append(
                flag_conflict(
                    conn,
                    "accession_changed",
                    case.accession,
                    f"a {order.source} order of this case names another accession; kept the first",
                )
            )
        if case.status in WITHDRAWN:
            problems.append(
                flag_conflict(
                    conn,
                    "order_after_withdrawal",
                    case_accession or f"order {order.placer or order.filler}",
                    f"a {order.source} order arrived for a {case.status} case; "
                    f"it stays {case.status}",
                )
            )
        if case.patient_id is None:
            conn.execute(
                update(cases)
                .where(cases.c.id == case_id)
                .values(patient_id=patient_id, updated_at=stamp)
            )
            changed = True
        elif case.patient_id != patient_id and not _merged_into(conn, patient_id, case.patient_id):
            problems.append(
                flag_conflict(
                    conn,
                    "case_patient_changed",
                    case_accession or f"order {order.placer or order.filler}",
                    f"a {order.source} order names another patient for this case; kept the first",
                )
            )
    barcodes: list[str] = []
    subject = case_accession or f"order {order.placer or order.filler}"
    for specimen in order.specimens:
        specimen_id, new = get_or_create(
            conn,
            specimens,
            {"case_id": case_id, "label": specimen.id},
            {"description": specimen.description},
        )
        changed |= new
        if not new and specimen.description:
            result = conn.execute(
                update(specimens)
                .where(
                    specimens.c.id == specimen_id,
                    or_(
                        specimens.c.description.is_(None),
                        specimens.c.description != specimen.description,
                    ),
                )
                .values(description=specimen.description)
            )
            changed |= bool(result.rowcount)
        for block in specimen.blocks:
            block_id, new = get_or_create(
                conn, blocks, {"specimen_id": specimen_id, "label": block.id}
            )
            changed |= new
            for slide in block.slides:
                barcodes.append(slide.barcode)
                slide_changed, conflict = _upsert_ordered_slide(
                    conn, case_id, specimen_id, block_id, slide.barcode, slide.stain, subject
                )
                changed |= slide_changed
                if conflict:
                    problems.append(conflict)
    linked: tuple[str, ...] = ()
    if case_accession:  # a pending order links nothing until its accession arrives
        waiting = scans.c.ev_accession == case_accession
        if barcodes:
            waiting = or_(waiting, scans.c.ev_barcode.in_(barcodes))
        outcome = link_scans(conn, waiting, source=order.source)
        problems.extend(outcome.conflicts)
        linked = outcome.linked
        changed |= bool(linked)
    if changed and not created:
        conn.execute(update(cases).where(cases.c.id == case_id).values(updated_at=stamp))
    return ApplyResult(
        created=created,
        changed=changed,
        linked_slides=linked,
        conflicts=tuple(dict.fromkeys(problems)),
        status=status,
        accession=case_accession,
    )


def _compatible(stored: str, sent: str) -> bool:
    """Two issuers agree when equal or when one side did not say."""
    return not stored or not sent or stored == sent


def _find_case(
    conn: Connection, order: CaseOrder, accession: str
) -> tuple[Row[Any] | None, list[str]]:
    """Return the one case of ``order``: by accession, else filler, else placer number.

    When the numbers lead to different cases the first found wins and the disagreement is
    flagged for review.
    """
    keys = (
        (cases.c.accession, cases.c.issuer, accession, order.accession_issuer),
        (cases.c.filler, cases.c.filler_issuer, order.filler, order.filler_issuer),
        (cases.c.placer, cases.c.placer_issuer, order.placer, order.placer_issuer),
    )
    found: list[Row[Any]] = []
    for column, issuer_column, value, issuer in keys:
        if not value:
            continue
        rows = conn.execute(select(cases).where(column == value).order_by(cases.c.id)).all()
        exact = [r for r in rows if getattr(r, issuer_column.name) == issuer]
        loose = [r for r in rows if _compatible(getattr(r, issuer_column.name), issuer)]
        match = exact[0] if exact else (loose[0] if len(loose) == 1 else None)
        if match is not None:
            found.append(match)
    if not found:
        return None, []
    problems: list[str] = []
    first = found[0]
    if any(row.id != first.id for row in found):
        problems.append(
            flag_conflict(
                conn,
                "order_numbers_disagree",
                first.accession or f"order {order.placer or order.filler}",
                f"the {order.source} order's numbers name different cases; applied to the first",
            )
        )
    return first, problems


def _missing_numbers(case: Row[Any], order: CaseOrder, accession: str) -> dict[str, Any]:
    """The order numbers (and accession) the case learns from ``order``; known ones are kept."""
    updates: dict[str, Any] = {}
    if accession and not case.accession:
        updates.update(
            accession=accession,
            issuer=order.accession_issuer,
            dicom_study_uid=case_study_uid(accession),
        )
        if case.status == PENDING:
            updates["status"] = ACTIVE
    if order.placer and not case.placer:
        updates.update(placer=order.placer, placer_issuer=order.placer_issuer)
    if order.filler and not case.filler:
        updates.update(filler=order.filler, filler_issuer=order.filler_issuer)
    if order.accession_issuer and accession == case.accession and not case.issuer:
        updates["issuer"] = order.accession_issuer
    return updates


def _withdraw(conn: Connection, case: Row[Any] | None, order: CaseOrder) -> ApplyResult:
    """Cancel or discontinue the case of ``order``: its status and history; no link changes."""
    if case is None:
        return ApplyResult(created=False, changed=False, status=order.status, found=False)
    accession = case.accession or ""
    if case.status == order.status:
        return ApplyResult(created=False, changed=False, status=case.status, accession=accession)
    conn.execute(
        update(cases).where(cases.c.id == case.id).values(status=order.status, updated_at=now())
    )
    record_event(
        conn,
        f"case_{order.status}",
        order.source,
        case_id=case.id,
        detail=f"order {order.status} by the LIS (was {case.status}); slides stay linked",
    )
    return ApplyResult(created=False, changed=True, status=order.status, accession=accession)


def _upsert_ordered_slide(
    conn: Connection,
    case_id: int,
    specimen_id: int,
    block_id: int,
    barcode: str,
    stain: str | None,
    accession: str,
) -> tuple[bool, str | None]:
    """Record one ordered barcode; a barcode already in another case is flagged, not moved."""
    values = {
        "barcode": barcode,
        "stain": stain,
        "case_id": case_id,
        "specimen_id": specimen_id,
        "block_id": block_id,
        "ordered": True,
    }
    glass_id, created = get_or_create(conn, glass_slides, {"key": f"barcode:{barcode}"}, values)
    if created:
        return True, None
    row = conn.execute(select(glass_slides).where(glass_slides.c.id == glass_id)).one()
    if row.case_id != case_id:
        other = conn.execute(select(cases.c.accession).where(cases.c.id == row.case_id)).scalar()
        return False, flag_conflict(
            conn,
            "barcode_claimed",
            barcode,
            f"case {accession} claims a slide barcode that belongs to case {other}; kept there",
        )
    wanted = {
        "specimen_id": specimen_id,
        "block_id": block_id,
        "ordered": True,
        "stain": stain or row.stain,
    }
    if all(getattr(row, k) == v for k, v in wanted.items()):
        return False, None
    conn.execute(update(glass_slides).where(glass_slides.c.id == glass_id).values(**wanted))
    if row.block_id is not None and row.block_id != block_id:
        record_event(
            conn,
            "reassign_block",
            "lis",
            glass_slide_id=glass_id,
            case_id=case_id,
            previous_case_id=case_id,
            detail=f"slide moved from block #{row.block_id} to block #{block_id}",
        )
    return True, None


def _upsert_patient(conn: Connection, patient: PatientIn) -> tuple[int, bool]:
    stamp = now()
    demographics = {
        "name": patient.name,
        "birth_date": patient.birth_date,
        "sex": patient.sex,
        "identifier_type": patient.identifier_type or None,
    }
    patient_id, created = get_or_create(
        conn,
        patients,
        {"identifier": patient.identifier, "issuer": patient.issuer},
        {**demographics, "created_at": stamp, "updated_at": stamp},
    )
    if created:
        return patient_id, True
    return patient_id, _update_demographics(conn, patient_id, demographics)


def _update_demographics(conn: Connection, patient_id: int, values: dict[str, Any]) -> bool:
    """Apply the non-empty demographic fields; say whether any differed."""
    row = conn.execute(select(patients).where(patients.c.id == patient_id)).one()
    changes = {k: v for k, v in values.items() if v is not None and getattr(row, k) != v}
    if not changes:
        return False
    conn.execute(
        update(patients).where(patients.c.id == patient_id).values(**changes, updated_at=now())
    )
    return True


def _merged_into(conn: Connection, patient_id: int, into: int) -> bool:
    merged = conn.execute(select(patients.c.merged_into).where(patients.c.id == patient_id))
    return merged.scalar() == into


def update_patient(conn: Connection, patient: PatientIn, source: str = "hl7v2") -> bool:
    """Apply a demographics update (ADT^A08, a corrected EHR Patient); return whether the
    patient exists. A change is written to the history of each of the patient's cases."""
    found = conn.execute(
        select(patients.c.id).where(
            patients.c.identifier == patient.identifier, patients.c.issuer == patient.issuer
        )
    ).scalar()
    if found is None:
        return False
    changed = _update_demographics(
        conn,
        int(found),
        {"name": patient.name, "birth_date": patient.birth_date, "sex": patient.sex},
    )
    if changed:
        for case_id in conn.execute(
            select(cases.c.id).where(cases.c.patient_id == found)
        ).scalars():
            record_event(
                conn, "patient_updated", source, case_id=case_id, detail="demographics corrected"
            )
    return True


def merge_patients(
    conn: Connection, surviving: PatientIn, merged_identifier: str, source: str = "hl7v2"
) -> bool:
    """Apply a merge (ADT^A40, or the EHR's Patient.link ``replaced-by``): the merged patient's
    cases move to the survivor, each move written to the link history."""
    merged_id = conn.execute(
        select(patients.c.id).where(
            patients.c.identifier == merged_identifier, patients.c.issuer == surviving.issuer
        )
    ).scalar()
    if merged_id is None:
        return False
    survivor_id, _ = _upsert_patient(conn, surviving)
    if survivor_id == merged_id:
        return True
    moved = conn.execute(select(cases.c.id).where(cases.c.patient_id == merged_id)).scalars().all()
    conn.execute(
        update(cases).where(cases.c.patient_id == merged_id).values(patient_id=survivor_id)
    )
    conn.execute(
        update(patients)
        .where(or_(patients.c.id == merged_id, patients.c.merged_into == merged_id))
        .values(merged_into=survivor_id, updated_at=now())
    )
    for case_id in moved:
        detail = "ADT^A40 merge" if source == "hl7v2" else f"{source}: patient replaced-by another"
        record_event(conn, "patient_merge", source, case_id=case_id, detail=detail)
    return True


def record_message(conn: Connection, source: str, raw: str, status: str, detail: str) -> None:
    """Keep one raw inbound message."""
    conn.execute(
        inbound_messages.insert().values(
            received_at=now(), source=source, raw=raw, status=status, detail=detail
        )
    )


_SLIDE_COLUMNS = (*RECORD_COLUMNS, scans.c.ev_study_uid, scans.c.ev_series_uid)
"""A case's scans: what their slide views and their full records (:func:`to_record`) need."""
_PATIENT_COLUMNS = tuple(
    patients.c[name].label(f"patient_{name}")
    for name in ("identifier", "issuer", "name", "birth_date", "sex", "identifier_type")
)
"""A case's patient, selected with the case (:func:`_case_view` reads them)."""
_CASE_BY_ACCESSION = (
    select(cases, *_PATIENT_COLUMNS)
    .select_from(cases.outerjoin(patients, patients.c.id == cases.c.patient_id))
    .where(cases.c.accession == bindparam("accession"))
    .order_by(cases.c.id)
)
"""A case with its patient. The case statements are built once: SQLAlchemy memoizes a kept
statement's cache key, which it otherwise derives from the whole structure at each call."""
_CASE_TREE = (
    select(
        specimens.c.id,
        specimens.c.label,
        specimens.c.description,
        blocks.c.id.label("block_id"),
        blocks.c.label.label("block_label"),
    )
    .select_from(specimens.outerjoin(blocks, blocks.c.specimen_id == specimens.c.id))
    .where(specimens.c.case_id == bindparam("case_id"))
    .order_by(specimens.c.label, specimens.c.id, blocks.c.label)
)
"""A case's specimens with their blocks."""
_CASE_SLIDES = (
    select(*_SLIDE_COLUMNS, glass_slides.c.specimen_id, glass_slides.c.block_id)
    .select_from(
        glass_slides.outerjoin(scans, scans.c.glass_slide_id == glass_slides.c.id)
        .outerjoin(cases, cases.c.id == glass_slides.c.case_id)
        .outerjoin(patients, patients.c.id == cases.c.patient_id)
        .outerjoin(specimens, specimens.c.id == glass_slides.c.specimen_id)
        .outerjoin(blocks, blocks.c.id == glass_slides.c.block_id)
    )
    .where(glass_slides.c.case_id == bindparam("case_id"))
    .where(or_(scans.c.id.is_(None), scans.c.root.in_(bindparam("roots", expanding=True))))
    .order_by(scans.c.relpath, glass_slides.c.barcode)
)
"""A case's glass slides with their scans under the roots and each scan's record columns (a
slide record's joins, from the glass); a glass slide without a scan is an expected barcode."""


def get_case(conn: Connection, roots: list[str], accession: str) -> CaseView | None:
    """Return the case as the LIS sent it with its scans; else as the files alone describe it."""
    found = get_case_linked(conn, roots, accession)
    return None if found is None else found[0]


def get_case_linked(
    conn: Connection, roots: list[str], accession: str
) -> tuple[CaseView, list[SlideRecord], bool] | None:
    """Return the case, its slides' records, and whether the LIS sent it (else the files alone
    describe it).

    Opening a case is the busiest read of a shift's start: three statements (case with its
    patient, specimens with their blocks, glass slides with their scans and records), each
    a round trip that a busy database server answers late.
    """
    accession = accession.strip().upper()
    case = conn.execute(_CASE_BY_ACCESSION, {"accession": accession}).first()
    if case is None:
        found = _evidence_case(conn, roots, accession)
        return None if found is None else (*found, False)
    return (*_case_view(conn, roots, case), True)


def has_case(conn: Connection, accession: str) -> bool:
    """Tell whether a case row (sent by the LIS) exists for ``accession``."""
    query = select(cases.c.id).where(cases.c.accession == accession.strip().upper()).limit(1)
    return conn.execute(query).first() is not None


def _case_view(
    conn: Connection, roots: list[str], case: AnyRow
) -> tuple[CaseView, list[SlideRecord]]:
    """The view of a case row (selected with :data:`_PATIENT_COLUMNS`) and its slides' records."""
    patient = None
    if case.patient_id is not None:
        patient = PatientIn(
            identifier=case.patient_identifier,
            issuer=case.patient_issuer,
            name=case.patient_name,
            birth_date=case.patient_birth_date,
            sex=case.patient_sex,
            identifier_type=case.patient_identifier_type or "",
        )
    tree = conn.execute(_CASE_TREE, {"case_id": case.id}).all()
    rows = conn.execute(_CASE_SLIDES, {"case_id": case.id, "roots": roots}).all()
    labels = {t.id: t.label for t in tree}
    block_labels = {t.block_id: t.block_label for t in tree if t.block_id is not None}
    by_block: dict[int, list[SlideView]] = defaultdict(list)
    slides: list[SlideView] = []
    records: list[SlideRecord] = []
    expected: list[str] = []
    for row in rows:
        if row.slide_id is None:
            if row.case_barcode:
                expected.append(row.case_barcode)
            continue
        view = SlideView(
            id=row.slide_id,
            name=row.name,
            specimen=labels.get(row.specimen_id),
            block=block_labels.get(row.block_id),
            stain=row.case_stain,
            barcode=row.case_barcode,
            status=row.status,
            format=row.format,
            width=row.width,
            height=row.height,
            mpp_x=row.mpp_x,
            study_uid=row.ev_study_uid,
            series_uid=row.ev_series_uid,
        )
        slides.append(view)
        records.append(to_record(row))
        if row.block_id is not None:
            by_block[row.block_id].append(view)
    specimen_rows: dict[int, list[AnyRow]] = {}
    for t in tree:
        specimen_rows.setdefault(t.id, []).append(t)
    specimen_views = tuple(
        SpecimenView(
            id=rows_of[0].label,
            description=rows_of[0].description,
            blocks=tuple(
                BlockView(b.block_label, tuple(by_block[b.block_id]))
                for b in rows_of
                if b.block_id is not None
            ),
        )
        for rows_of in specimen_rows.values()
    )
    found = CaseView(
        accession=case.accession,
        accession_issuer=case.issuer,
        patient=patient,
        specimens=specimen_views,
        slides=tuple(slides),
        expected_barcodes=tuple(sorted(expected)),
        status=case.status,
    )
    return found, records


def _evidence_case(
    conn: Connection, roots: list[str], accession: str
) -> tuple[CaseView, list[SlideRecord]] | None:
    """Build a provisional case from the scans whose own evidence names ``accession``."""
    rows = conn.execute(
        select(*_SLIDE_COLUMNS)
        .select_from(RECORD_JOINS)
        .where(
            and_(
                scans.c.ev_accession == accession,
                scans.c.glass_slide_id.is_(None),
                scans.c.root.in_(roots),
            )
        )
        .order_by(scans.c.relpath)
    ).all()
    if not rows:
        return None
    patient = next(
        (
            PatientIn(r.ev_patient_id, name=r.ev_patient_name, birth_date=r.ev_patient_birth_date)
            for r in rows
            if r.ev_patient_id
        ),
        None,
    )
    tree: dict[str, dict[str, list[SlideView]]] = defaultdict(lambda: defaultdict(list))
    slides: list[SlideView] = []
    for r in rows:
        specimen = r.ev_specimen or (r.ev_block[:1] if r.ev_block else None)
        view = SlideView(
            id=r.slide_id,
            name=r.name,
            specimen=specimen,
            block=r.ev_block,
            stain=r.ev_stain,
            barcode=r.ev_barcode,
            status=r.status,
            format=r.format,
            width=r.width,
            height=r.height,
            mpp_x=r.mpp_x,
            study_uid=r.ev_study_uid,
            series_uid=r.ev_series_uid,
        )
        slides.append(view)
        if specimen:
            blocks_of = tree[specimen]
            if r.ev_block:
                blocks_of[r.ev_block].append(view)
    specimen_views = tuple(
        SpecimenView(
            id=label,
            blocks=tuple(BlockView(b, tuple(v)) for b, v in sorted(tree[label].items())),
        )
        for label in sorted(tree)
    )
    case = CaseView(accession, "", patient, specimen_views, tuple(slides))
    return case, [to_record(r) for r in rows]


def cases_of_patient(conn: Connection, roots: list[str], identifier: str) -> list[CaseView]:
    """Return the patient's cases: the LIS's, then any that only scans name."""
    patient_ids = (
        conn.execute(
            select(patients.c.id).where(
                or_(
                    patients.c.identifier == identifier,
                    patients.c.merged_into.in_(
                        select(patients.c.id).where(patients.c.identifier == identifier)
                    ),
                )
            )
        )
        .scalars()
        .all()
    )
    views: list[CaseView] = []
    if patient_ids:
        case_rows = conn.execute(
            select(cases, *_PATIENT_COLUMNS)
            .select_from(cases.outerjoin(patients, patients.c.id == cases.c.patient_id))
            .where(cases.c.patient_id.in_(patient_ids), cases.c.accession.is_not(None))
            .order_by(cases.c.accession)
        ).all()
        views.extend(_case_view(conn, roots, c)[0] for c in case_rows)
    known = {v.accession for v in views}
    loose = (
        conn.execute(
            select(scans.c.ev_accession)
            .where(
                scans.c.ev_patient_id == identifier,
                scans.c.glass_slide_id.is_(None),
                scans.c.ev_accession.is_not(None),
                scans.c.root.in_(roots),
            )
            .distinct()
            .order_by(scans.c.ev_accession)
        )
        .scalars()
        .all()
    )
    for accession in loose:
        if accession not in known:
            found = _evidence_case(conn, roots, accession)
            if found is not None:
                views.append(found[0])
    return views
