"""DICOMweb's study and series UIDs in indexed catalog columns, on SQLite and on PostgreSQL.

A catalog migrated from the previous schema gets the UIDs of the slides it holds; indexing fills
them for new slides and case orders; the columns hold what DICOMweb serves; and a QIDO search or
WADO look-up by UID builds the series of the slides it finds, not of every slide.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import insert, select, text
from starlette.testclient import TestClient

from slideserver.api.app import create_app
from slideserver.catalog.base import SlideQuery
from slideserver.catalog.cases import BlockIn, CaseOrder, PatientIn, SlideIn, SpecimenIn
from slideserver.catalog.dicom_uids import (
    case_study_uid,
    scan_columns,
    series_uid,
    study_uid,
)
from slideserver.catalog.discovery import slide_id_from_hash
from slideserver.catalog.migrations import alembic_config, upgrade
from slideserver.catalog.schema import cases, scans
from slideserver.catalog.sql import SqlCatalog
from slideserver.db.engine import make_engine, writer
from slideserver.readers.registry import default_registry
from slideserver.services.dicomweb import DicomWebService
from slideserver.settings import Settings
from tests.test_dicomweb_api import value

SCAN_UIDS = ("dicom_study_uid", "dicom_series_uid", "research_study_uid", "research_series_uid")
GHOSTS = 2000
"""Catalog rows of slides no search here should open."""
JANE = PatientIn("MRN-0012345", name="DOE^JANE")


def old_scan_row(index: int, ev_accession: str | None) -> dict[str, Any]:
    """A ``scans`` row as the previous schema (revision 0003) holds it."""
    stamp = datetime(2024, 1, 5, tzinfo=UTC)
    return {
        "slide_id": slide_id_from_hash(f"old-{index}"),
        "root": "/slides",
        "relpath": f"old/{index}.svs",
        "name": f"{index}.svs",
        "fingerprint": "f",
        "content_hash": f"old-{index}",
        "status": "ok",
        "scanned_at": stamp,
        "indexed_at": stamp,
        "ev_accession": ev_accession,
    }


def test_migrating_an_existing_catalog_fills_the_uids_of_its_slides_and_cases(
    empty_database_url: str,
) -> None:
    engine = make_engine(empty_database_url)
    try:
        with writer(engine).begin() as conn:
            command.upgrade(alembic_config(conn), "0003")
            conn.execute(
                text(
                    "INSERT INTO scans (slide_id, root, relpath, name, fingerprint, content_hash,"
                    " status, scanned_at, indexed_at, ev_accession) VALUES (:slide_id, :root,"
                    " :relpath, :name, :fingerprint, :content_hash, :status, :scanned_at,"
                    " :indexed_at, :ev_accession)"
                ),
                [old_scan_row(i, "S24-00042" if i % 3 == 0 else None) for i in range(2500)],
            )
            conn.execute(
                text(
                    "INSERT INTO cases (accession, issuer, source, status, placer_issuer,"
                    " filler_issuer, created_at, updated_at) VALUES (:accession, '', 'hl7v2',"
                    " :status, '', '', :at, :at)"
                ),
                [
                    {"accession": "S24-00042", "status": "active", "at": datetime.now(UTC)},
                    {"accession": None, "status": "pending", "at": datetime.now(UTC)},
                ],
            )
        upgrade(writer(engine))
        with engine.connect() as conn:
            rows = conn.execute(
                select(scans.c.slide_id, scans.c.ev_accession, *(scans.c[n] for n in SCAN_UIDS))
            ).all()
            numbered = conn.execute(select(cases.c.accession, cases.c.dicom_study_uid)).all()
    finally:
        engine.dispose()
    assert len(rows) == 2500
    for row in rows:
        assert {n: getattr(row, n) for n in SCAN_UIDS} == scan_columns(
            row.slide_id, row.ev_accession
        )
    assert sorted(numbered, key=str) == sorted(
        [("S24-00042", case_study_uid("S24-00042")), (None, None)], key=str
    )


def test_the_columns_keep_the_uids_dicomweb_always_gave() -> None:
    """The derivation moved into the catalog: a slide's UIDs are the ones served before."""
    slide = "k3PzQxkT4mGJX2oVbq8w"
    assert series_uid(slide) == "2.25." + str(
        uuid.uuid5(uuid.UUID("6f1c1f2e-6d0b-4bd5-9a53-3f4e0cf1c0de"), f"series:{slide}").int
    )
    assert study_uid(slide, "S24-00001") == case_study_uid("S24-00001")
    assert study_uid(slide, None) != study_uid(slide, None, research=True)


def order(accession: str, barcode: str) -> CaseOrder:
    block = BlockIn("A1", (SlideIn(barcode, "HE"),))
    return CaseOrder(accession, JANE, specimens=(SpecimenIn("A", "skin", (block,)),))


@pytest.fixture
def catalog(database_url: str, tiny_slides: Any, tiny_dicom: Any) -> Iterator[SqlCatalog]:
    tiny_slides("S24-00001_A1_HE.svs", barcode="S24-00001-A1")  # its case will be ordered
    tiny_slides("S24-00002_A1_HE.tif")  # its file names a case that is never ordered
    tiny_slides("scan 17.tif")  # names nothing
    tiny_dicom("S24-00003_C1_HE", patient_id="MRN9", accession="S24-00003", container_id="C1")
    cat = SqlCatalog(database_url, [tiny_slides.root], default_registry())
    cat.scan()
    cat.apply_order(order("S24-00001", "S24-00001-A1"))
    yield cat
    cat.close()


def found(catalog: SqlCatalog, **query: Any) -> list[str]:
    return sorted(r.name for r in catalog.search(SlideQuery(limit=100, **query)).items)


def one(catalog: SqlCatalog, name: str) -> Any:
    (record,) = [r for r in catalog.search(SlideQuery(limit=100)).items if r.name == name]
    return record


def test_a_slide_is_found_by_its_series_uid(catalog: SqlCatalog) -> None:
    slide = one(catalog, "scan 17.tif").id
    assert found(catalog, series_uids=(series_uid(slide),)) == ["scan 17.tif"]
    assert found(catalog, series_uids=(series_uid(slide), "1.2.3")) == ["scan 17.tif"]
    assert found(catalog, series_uids=("1.2.3",)) == []


def test_slides_are_found_by_the_study_of_their_numbered_case(catalog: SqlCatalog) -> None:
    assert found(catalog, study_uids=(case_study_uid("S24-00001"),)) == ["S24-00001_A1_HE.svs"]


def test_a_slide_is_found_by_the_study_its_file_names_while_no_order_came(
    catalog: SqlCatalog,
) -> None:
    assert found(catalog, study_uids=(case_study_uid("S24-00002"),)) == ["S24-00002_A1_HE.tif"]
    lonely = one(catalog, "scan 17.tif").id
    assert found(catalog, study_uids=(study_uid(lonely, None),)) == ["scan 17.tif"]


def test_a_dicom_slide_is_found_by_its_files_own_uids(catalog: SqlCatalog) -> None:
    record = one(catalog, "S24-00003_C1_HE")
    with catalog.engine.connect() as conn:
        study, series = conn.execute(
            select(scans.c.ev_study_uid, scans.c.ev_series_uid).where(scans.c.slide_id == record.id)
        ).one()
    assert study and series
    assert found(catalog, study_uids=(study,)) == ["S24-00003_C1_HE"]
    assert found(catalog, series_uids=(series,)) == ["S24-00003_C1_HE"]


def test_research_uids_find_a_slide_only_in_the_deidentified_view(catalog: SqlCatalog) -> None:
    slide = one(catalog, "scan 17.tif").id
    research = series_uid(slide, research=True)
    assert found(catalog, series_uids=(research,), deidentified_uids=True) == ["scan 17.tif"]
    assert found(catalog, series_uids=(research,)) == []
    assert found(catalog, series_uids=(series_uid(slide),), deidentified_uids=True) == []
    study = study_uid(slide, None, research=True)
    assert found(catalog, study_uids=(study,), deidentified_uids=True) == ["scan 17.tif"]


# -- QIDO-RS and WADO-RS over a catalog of many slides -------------------------------------------


@pytest.fixture
def crowded(database_url: str, tiny_slides: Any) -> Iterator[tuple[TestClient, list[str]]]:
    """An app over two real slides and 2,000 catalog rows of slides that are not there; the
    slide IDs whose series were built, request by request."""
    tiny_slides("S24-00001_A1_HE.tif")
    tiny_slides("S24-00001_A2_HE.tif")
    root = Path(tiny_slides.root).absolute()
    app = create_app(Settings(roots=(root,), database_url=database_url))
    built: list[str] = []
    original = DicomWebService.series_of

    async def counting(self: DicomWebService, slide_id: str, audience: Any) -> Any:
        built.append(slide_id)
        return await original(self, slide_id, audience)

    with pytest.MonkeyPatch.context() as patch, TestClient(app) as client:
        patch.setattr(DicomWebService, "series_of", counting)
        add_ghosts(database_url, root)
        yield client, built


def add_ghosts(database_url: str, root: Path) -> None:
    stamp = datetime.now(UTC)
    rows = []
    for index in range(GHOSTS):
        slide_id = slide_id_from_hash(f"ghost-{index}")
        accession = f"S24-{10000 + index // 4:05d}"
        rows.append(
            {
                "slide_id": slide_id,
                "root": str(root),
                "relpath": f"ghosts/{index}.svs",
                "name": f"{index}.svs",
                "fingerprint": "f",
                "content_hash": f"ghost-{index}",
                "status": "ok",
                "scanned_at": stamp,
                "indexed_at": stamp,
                "ev_accession": accession,
                **scan_columns(slide_id, accession),
            }
        )
    engine = make_engine(database_url)
    try:
        with writer(engine).begin() as conn:
            conn.execute(insert(scans), rows)
    finally:
        engine.dispose()


def the_series(client: TestClient) -> list[dict[str, Any]]:
    """The two real slides' series (a search by their case's accession number)."""
    found = client.get("/dicomweb/series", params={"AccessionNumber": "S24-00001"}).json()
    assert len(found) == 2
    return list(found)


def test_a_series_search_builds_only_the_series_it_finds(
    crowded: tuple[TestClient, list[str]],
) -> None:
    client, built = crowded
    target = the_series(client)[0]
    built.clear()
    series = value(target, "0020000E")
    answer = client.get("/dicomweb/series", params={"SeriesInstanceUID": series}).json()
    assert [value(s, "0020000E") for s in answer] == [series]
    assert len(set(built)) == 1


def test_a_study_search_builds_only_the_series_of_that_study(
    crowded: tuple[TestClient, list[str]],
) -> None:
    client, built = crowded
    study = value(the_series(client)[0], "0020000D")
    built.clear()
    answer = client.get("/dicomweb/studies", params={"StudyInstanceUID": study}).json()
    assert [value(s, "0020000D") for s in answer] == [study]
    assert len(set(built)) == 2
    built.clear()
    in_path = client.get(f"/dicomweb/studies/{study}/series").json()
    assert len(in_path) == 2 and len(set(built)) == 2


def test_metadata_of_a_series_not_seen_before_builds_only_that_series(
    crowded: tuple[TestClient, list[str]],
) -> None:
    client, built = crowded
    target = the_series(client)[1]
    study, series = value(target, "0020000D"), value(target, "0020000E")
    client.app.state.dicomweb._where.clear()  # type: ignore[attr-defined]
    built.clear()
    response = client.get(f"/dicomweb/studies/{study}/series/{series}/metadata")
    assert response.status_code == 200
    assert len(set(built)) == 1


def test_a_researcher_finds_a_series_and_its_study_by_their_research_uids(
    secure_env: Any,
) -> None:
    client, tokens = secure_env
    headers = {"Authorization": f"Bearer {tokens['researcher']}"}
    every = client.get("/dicomweb/series", headers=headers).json()
    assert len(every) > 1
    target = every[0]
    study, series = value(target, "0020000D"), value(target, "0020000E")
    by_series = client.get(
        "/dicomweb/series", headers=headers, params={"SeriesInstanceUID": series}
    ).json()
    assert [value(s, "0020000E") for s in by_series] == [series]
    in_study = client.get(f"/dicomweb/studies/{study}/series", headers=headers).json()
    assert [value(s, "0020000E") for s in in_study] == [series]
