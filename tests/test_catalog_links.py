"""The LinkStore side of the SQL catalog: orders, late binding both ways, conflicts, history."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pydicom
import pytest
from sqlalchemy import select

from slideserver.catalog.base import SlideQuery
from slideserver.catalog.cases import (
    ACTIVE,
    CANCELLED,
    PENDING,
    BlockIn,
    CaseOrder,
    PatientIn,
    SlideIn,
    SpecimenIn,
)
from slideserver.catalog.schema import link_events
from slideserver.catalog.sql import SqlCatalog
from slideserver.readers.registry import default_registry

JANE = PatientIn("MRN1", name="DOE^JANE", birth_date="1970-01-02", sex="F")


def order(accession: str = "S24-00001", patient: PatientIn = JANE, **kw: Any) -> CaseOrder:
    specimens = kw.pop(
        "specimens",
        (
            SpecimenIn(
                "A",
                "skin",
                (BlockIn("A1", (SlideIn("S24-00001-A1-HE", "HE"),)), BlockIn("A2")),
            ),
        ),
    )
    return CaseOrder(accession, patient, specimens=specimens, **kw)


@pytest.fixture
def catalog(database_url: str, tiny_slides: Any) -> Iterator[SqlCatalog]:
    cat = SqlCatalog(database_url, [tiny_slides.root], default_registry())
    yield cat
    cat.close()


def record(catalog: SqlCatalog, name: str) -> Any:
    items = catalog.search(SlideQuery(q=name)).items
    assert len(items) == 1
    return items[0]


def test_order_then_slide(catalog: SqlCatalog, tiny_slides: Any) -> None:
    result = catalog.apply_order(order())
    assert result.created and result.changed and result.linked_slides == ()
    tiny_slides("S24-00001_A1_HE.svs", barcode="S24-00001-A1-HE")
    report = catalog.scan()
    assert report.linked == 1
    case = record(catalog, "S24-00001_A1_HE.svs").extra["case"]
    assert case["linked"] is True and case["block"] == "A1" and case["specimen"] == "A"
    assert case["patient"] == {"id": "MRN1", "name": "DOE^JANE", "birth_date": "1970-01-02"}
    view = catalog.get_case("s24-00001")
    assert view is not None and view.patient == JANE
    assert [s.id for s in view.specimens] == ["A"] and view.specimens[0].description == "skin"
    assert [b.id for b in view.specimens[0].blocks] == ["A1", "A2"]
    assert [s.barcode for s in view.specimens[0].blocks[0].slides] == ["S24-00001-A1-HE"]
    assert view.expected_barcodes == ()


def test_slide_then_order_links_late(catalog: SqlCatalog, tiny_slides: Any) -> None:
    tiny_slides("S24-00001_A1_HE.tif")
    tiny_slides("S24-00001_B3_PAS.tif")
    catalog.scan()
    assert record(catalog, "A1_HE").extra["case"]["linked"] is False
    unlinked = catalog.get_case("S24-00001")
    assert unlinked is not None and unlinked.patient is None and len(unlinked.slides) == 2
    assert not catalog.has_case("S24-00001")
    result = catalog.apply_order(order())
    assert len(result.linked_slides) == 2 and catalog.has_case("S24-00001")
    view = catalog.get_case("S24-00001")
    assert view is not None
    blocks = {b.id: b for s in view.specimens for b in s.blocks}
    assert set(blocks) == {"A1", "A2", "B3"}  # B3 came from the file name
    # the file had no barcode: it took the one ordered HE slide of its block
    assert [s.barcode for s in blocks["A1"].slides] == ["S24-00001-A1-HE"]
    assert view.expected_barcodes == ()
    assert catalog.search(SlideQuery(patient="MRN1")).items
    history = catalog.link_history(record(catalog, "B3_PAS").id)
    assert [e.action for e in history] == ["link"]


def test_same_order_twice_changes_nothing(catalog: SqlCatalog, tiny_slides: Any) -> None:
    tiny_slides("S24-00001_A1_HE.tif")
    catalog.scan()
    first = catalog.apply_order(order())
    again = catalog.apply_order(order())
    assert first.changed and not again.changed and not again.created
    assert again.linked_slides == () and again.conflicts == ()


def test_expected_barcodes_until_scanned(catalog: SqlCatalog) -> None:
    catalog.apply_order(order())
    view = catalog.get_case("S24-00001")
    assert view is not None and view.expected_barcodes == ("S24-00001-A1-HE",)


def test_barcode_claimed_by_another_case_is_flagged(catalog: SqlCatalog) -> None:
    catalog.apply_order(order())
    other = order(
        "S24-00002",
        specimens=(SpecimenIn("A", blocks=(BlockIn("A1", (SlideIn("S24-00001-A1-HE"),)),)),),
    )
    result = catalog.apply_order(other)
    assert result.conflicts and "barcode_claimed" in result.conflicts[0]
    first = catalog.get_case("S24-00001")
    assert first is not None and first.expected_barcodes == ("S24-00001-A1-HE",)
    conflicts = catalog.conflicts()
    assert [c.kind for c in conflicts] == ["barcode_claimed"]
    catalog.apply_order(other)
    assert len(catalog.conflicts()) == 1  # flagged once


def test_dicom_patient_disagreeing_with_lis_is_not_linked(
    catalog: SqlCatalog, tiny_dicom: Any
) -> None:
    tiny_dicom(
        "S24-00001_A1_HE",
        patient_id="MRN-OTHER",
        accession="S24-00001",
        container_id="S24-00001-A1-HE",
    )
    catalog.scan()
    result = catalog.apply_order(order())
    assert result.linked_slides == ()
    assert any("patient_mismatch" in c for c in result.conflicts)
    assert all("MRN" not in c.detail and "DOE" not in c.detail for c in catalog.conflicts())


def test_dicom_matching_lis_links_by_container_id(catalog: SqlCatalog, tiny_dicom: Any) -> None:
    tiny_dicom(
        "scanner-output/series-1",
        patient_id="MRN1",
        accession="S24-00001",
        container_id="S24-00001-A1-HE",
    )
    catalog.apply_order(order())
    assert catalog.scan().linked == 1
    view = catalog.get_case("S24-00001")
    assert view is not None and [s.barcode for s in view.slides] == ["S24-00001-A1-HE"]


def test_case_patient_change_is_flagged_not_applied(catalog: SqlCatalog) -> None:
    catalog.apply_order(order())
    result = catalog.apply_order(order(patient=PatientIn("MRN2")))
    assert any("case_patient_changed" in c for c in result.conflicts)
    view = catalog.get_case("S24-00001")
    assert view is not None and view.patient is not None and view.patient.identifier == "MRN1"


def test_demographics_update_and_merge(catalog: SqlCatalog, tiny_slides: Any) -> None:
    catalog.apply_order(order())
    catalog.apply_order(
        order("S24-00002", patient=PatientIn("MRN-OLD", name="DOE^J"), specimens=())
    )
    assert catalog.update_patient(PatientIn("MRN1", name="DOE^JANE MARIE"))
    assert not catalog.update_patient(PatientIn("NOBODY", name="X"))
    view = catalog.get_case("S24-00001")
    assert view is not None and view.patient is not None
    assert view.patient.name == "DOE^JANE MARIE" and view.patient.birth_date == "1970-01-02"
    assert catalog.merge_patients(PatientIn("MRN1"), "MRN-OLD")
    assert not catalog.merge_patients(PatientIn("MRN1"), "NOBODY")
    assert [c.accession for c in catalog.cases_of_patient("MRN1")] == ["S24-00001", "S24-00002"]
    assert [c.accession for c in catalog.cases_of_patient("MRN-OLD")] == [
        "S24-00001",
        "S24-00002",
    ] or catalog.cases_of_patient("MRN-OLD") == []
    assert any(e.action == "patient_merge" for e in catalog.link_history())


def test_cases_of_patient_includes_dicom_only_cases(catalog: SqlCatalog, tiny_dicom: Any) -> None:
    tiny_dicom("d1", patient_id="MRN7", accession="S24-00007", container_id="S24-00007-A1")
    catalog.scan()
    views = catalog.cases_of_patient("MRN7")
    assert [v.accession for v in views] == ["S24-00007"]
    assert views[0].patient is not None and views[0].patient.identifier == "MRN7"


def test_record_message_keeps_raw_text(catalog: SqlCatalog) -> None:
    catalog.record_message("hl7v2", "MSH|^~\\&|LIS", "AA")
    catalog.record_message("json", "{", "error", "malformed JSON")
    from sqlalchemy import select

    from slideserver.catalog.schema import inbound_messages

    with catalog.engine.connect() as conn:
        rows = conn.execute(select(inbound_messages).order_by(inbound_messages.c.id)).all()
    assert [(r.source, r.status, r.detail) for r in rows] == [
        ("hl7v2", "AA", ""),
        ("json", "error", "malformed JSON"),
    ]


def test_renamed_file_is_relinked_with_history(catalog: SqlCatalog, tiny_slides: Any) -> None:
    catalog.apply_order(order())
    catalog.apply_order(order("S24-00002", specimens=()))
    path = tiny_slides("S24-00001_A2_HE.tif")
    catalog.scan()
    slide_id = record(catalog, "S24-00001_A2").id
    path.rename(path.with_name("S24-00002_A2_HE.tif"))
    catalog.scan()
    moved = catalog.get(slide_id)
    assert moved is not None and moved.extra["case"]["accession"] == "S24-00002"
    actions = [e.action for e in catalog.link_history(slide_id)]
    assert actions == ["relink", "move", "link"]


def test_cancel_keeps_the_slides_linked_and_records_it(
    catalog: SqlCatalog, tiny_slides: Any
) -> None:
    catalog.apply_order(order())
    tiny_slides("S24-00001_A1_HE.svs", barcode="S24-00001-A1-HE")
    assert catalog.scan().linked == 1
    result = catalog.apply_order(order(status=CANCELLED))
    assert (result.created, result.changed, result.status) == (False, True, CANCELLED)
    view = catalog.get_case("S24-00001")
    assert view is not None and view.status == CANCELLED
    assert [s.barcode for s in view.slides] == ["S24-00001-A1-HE"]
    with catalog.engine.connect() as conn:
        actions = conn.execute(select(link_events.c.action)).scalars().all()
    assert "case_cancelled" in actions
    assert not catalog.apply_order(order(status=CANCELLED)).changed


def test_cancel_of_an_unknown_order_creates_nothing(catalog: SqlCatalog) -> None:
    result = catalog.apply_order(order(status=CANCELLED))
    assert not result.found and not result.changed
    assert catalog.get_case("S24-00001") is None


def test_pending_order_gets_its_accession_from_a_later_message(catalog: SqlCatalog) -> None:
    pending = catalog.apply_order(order(accession="", placer="P-1", placer_issuer="HIS"))
    assert pending.created and pending.status == PENDING
    assert catalog.cases_of_patient("MRN1") == []
    numbered = catalog.apply_order(
        order(accession="F-9", placer="P-1", placer_issuer="HIS", filler="F-9")
    )
    assert not numbered.created and numbered.status == ACTIVE
    assert [c.accession for c in catalog.cases_of_patient("MRN1")] == ["F-9"]
    view = catalog.get_case("F-9")
    assert view is not None and [s.id for s in view.specimens] == ["A"]


def test_placer_and_filler_numbers_find_one_case(catalog: SqlCatalog) -> None:
    catalog.apply_order(order(accession="F-9", placer="P-1", filler="F-9"))
    again = catalog.apply_order(order(accession="", placer="P-1"))
    assert not again.created and again.accession == "F-9"
    assert len(catalog.cases_of_patient("MRN1")) == 1


def test_dicom_slide_carries_its_own_study_and_series_uids(
    catalog: SqlCatalog, tiny_dicom: Any
) -> None:
    folder = tiny_dicom(
        "scanner-output/series-1",
        patient_id="MRN1",
        accession="S24-00001",
        container_id="S24-00001-A1-HE",
    )
    header = pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True)
    catalog.apply_order(order())
    catalog.scan()
    view = catalog.get_case("S24-00001")
    assert view is not None
    assert (view.slides[0].study_uid, view.slides[0].series_uid) == (
        header.StudyInstanceUID,
        header.SeriesInstanceUID,
    )
