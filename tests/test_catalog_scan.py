"""Incremental scans and searches of the SQL catalog, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from slideserver.catalog import scanner
from slideserver.catalog.base import SlideQuery
from slideserver.catalog.discovery import content_hash, slide_id_from_hash
from slideserver.catalog.schema import scans
from slideserver.catalog.sql import SqlCatalog
from slideserver.errors import BadRequest
from slideserver.models import SlideSource
from slideserver.readers.base import SlideReader
from slideserver.readers.registry import default_registry


@pytest.fixture
def catalog(database_url: str, tiny_slides: Any) -> Iterator[SqlCatalog]:
    cat = SqlCatalog(database_url, [tiny_slides.root], default_registry())
    yield cat
    cat.close()


def names(catalog: SqlCatalog, **query: Any) -> list[str]:
    return [r.name for r in catalog.search(SlideQuery(limit=1000, **query)).items]


def by_name(catalog: SqlCatalog, name: str) -> Any:
    hits = [r for r in catalog.search(SlideQuery(q=name, limit=10)).items if r.name == name]
    assert len(hits) == 1, hits
    return hits[0]


def test_first_scan_describes_every_slide(catalog: SqlCatalog, tiny_slides: Any) -> None:
    tiny_slides("S24-00001_A1_HE.tif")
    tiny_slides("sub/S24-00001_A2_KI67.tif")
    report = catalog.scan()
    assert (report.found, report.added, report.unchanged) == (2, 2, 0)
    record = by_name(catalog, "S24-00001_A2_KI67.tif")
    assert record.relpath == "sub/S24-00001_A2_KI67.tif"
    assert record.status == "ok" and record.width == 512 and record.format == "generic-tiff"
    assert catalog.get(record.id) == record
    assert catalog.get("nope") is None


def test_rescan_opens_nothing_unchanged(
    catalog: SqlCatalog, tiny_slides: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(5):
        tiny_slides(f"S24-00001_A{i}_HE.tif")
    catalog.scan()
    hashed: list[SlideSource] = []
    opened: list[SlideSource] = []
    registry = catalog.scanner.registry
    open_slide = registry.open

    def hashing(source: SlideSource) -> str:
        hashed.append(source)
        return content_hash(source)

    def opening(source: SlideSource) -> SlideReader:
        opened.append(source)
        return open_slide(source)

    monkeypatch.setattr(scanner, "content_hash", hashing)
    monkeypatch.setattr(registry, "open", opening)
    report = catalog.scan()
    assert (report.unchanged, report.touched, hashed, opened) == (5, 0, [], [])
    assert catalog.refresh() == 0


def test_changed_file_is_described_again(catalog: SqlCatalog, tiny_slides: Any) -> None:
    path = tiny_slides("a.tif", tag="one")
    catalog.scan()
    first = by_name(catalog, "a.tif")
    tiny_slides("a.tif", tag="two, longer than one")
    report = catalog.scan()
    assert report.changed == 1
    second = by_name(catalog, "a.tif")
    assert second.content_hash != first.content_hash and second.id != first.id
    os.utime(path, ns=(1, 1))  # touched, same bytes: same identity
    assert catalog.scan().changed == 1
    assert by_name(catalog, "a.tif").id == second.id


def test_removed_file_is_missing_and_keeps_its_row(catalog: SqlCatalog, tiny_slides: Any) -> None:
    path = tiny_slides("gone.tif")
    catalog.scan()
    slide_id = by_name(catalog, "gone.tif").id
    path.unlink()
    report = catalog.scan()
    assert report.missing == 1
    record = catalog.get(slide_id)
    assert record is not None and record.status == "missing"
    assert names(catalog, status="missing") == ["gone.tif"]
    assert catalog.scan().missing == 0  # stays missing, counted once


def test_moved_file_keeps_its_slide_id(catalog: SqlCatalog, tiny_slides: Any) -> None:
    path = tiny_slides("old/S24-00001_A1_HE.tif")
    catalog.scan()
    slide_id = by_name(catalog, "S24-00001_A1_HE.tif").id
    target = tiny_slides.root / "new" / "renamed.tif"
    target.parent.mkdir()
    path.rename(target)
    report = catalog.scan()
    assert (report.moved, report.added, report.missing) == (1, 0, 0)
    record = catalog.get(slide_id)
    assert record is not None and record.relpath == "new/renamed.tif" and record.status == "ok"
    assert catalog.link_history(slide_id)[0].action == "move"


def test_moved_after_marked_missing_still_keeps_its_id(
    catalog: SqlCatalog, tiny_slides: Any
) -> None:
    path = tiny_slides("x.tif")
    catalog.scan()
    slide_id = by_name(catalog, "x.tif").id
    data = path.read_bytes()
    path.unlink()
    catalog.scan()
    (tiny_slides.root / "y.tif").write_bytes(data)
    assert catalog.scan().moved == 1
    assert catalog.get(slide_id).relpath == "y.tif"  # type: ignore[union-attr]


def test_copies_get_distinct_ids(catalog: SqlCatalog, tiny_slides: Any) -> None:
    path = tiny_slides("one.tif", tag="same")
    (tiny_slides.root / "two.tif").write_bytes(path.read_bytes())
    catalog.scan()
    ids = {r.id for r in catalog.search(SlideQuery()).items}
    assert len(ids) == 2


# Slide identity (README, "Using the API"): an ID comes from the content when a file is first
# indexed, then stays with that file through moves and renames; a copy is a slide of its own;
# new content at the same path is a new ID.


def test_byte_identical_copies_are_two_slides(catalog: SqlCatalog, tiny_slides: Any) -> None:
    path = tiny_slides("a/S24-00001_A1_HE.tif", tag="same")
    (tiny_slides.root / "b").mkdir()
    (tiny_slides.root / "b" / "copy.tif").write_bytes(path.read_bytes())
    catalog.scan()
    first, copy = by_name(catalog, "S24-00001_A1_HE.tif"), by_name(catalog, "copy.tif")
    assert first.content_hash == copy.content_hash
    assert first.id == slide_id_from_hash(first.content_hash)  # first in path order
    assert copy.id == slide_id_from_hash(f"{copy.content_hash}:b/copy.tif")
    assert first.status == copy.status == "ok"


def test_the_memory_catalog_keeps_copies_apart_too(tiny_slides: Any) -> None:
    from slideserver.catalog.memory import MemoryCatalog

    path = tiny_slides("one.tif", tag="same")
    (tiny_slides.root / "two.tif").write_bytes(path.read_bytes())
    catalog = MemoryCatalog([tiny_slides.root], default_registry())
    catalog.refresh()
    items = catalog.search(SlideQuery()).items
    assert sorted(r.name for r in items) == ["one.tif", "two.tif"]
    assert len({r.id for r in items}) == 2


def test_a_copy_keeps_its_own_id_when_the_original_goes(
    catalog: SqlCatalog, tiny_slides: Any
) -> None:
    path = tiny_slides("one.tif", tag="same")
    catalog.scan()
    original = by_name(catalog, "one.tif").id
    (tiny_slides.root / "two.tif").write_bytes(path.read_bytes())
    catalog.scan()
    copy = by_name(catalog, "two.tif").id
    path.unlink()
    report = catalog.scan()
    assert (report.missing, report.moved) == (1, 0)
    assert catalog.get(original).status == "missing"  # type: ignore[union-attr]
    assert catalog.get(copy).relpath == "two.tif"  # type: ignore[union-attr]


def test_renamed_file_in_the_same_folder_keeps_its_id(
    catalog: SqlCatalog, tiny_slides: Any
) -> None:
    path = tiny_slides("before.tif")
    catalog.scan()
    slide_id = by_name(catalog, "before.tif").id
    path.rename(tiny_slides.root / "after.tif")
    assert catalog.scan().moved == 1
    assert catalog.get(slide_id).relpath == "after.tif"  # type: ignore[union-attr]


def test_new_content_at_the_same_path_is_a_new_id_and_the_old_one_is_gone(
    catalog: SqlCatalog, tiny_slides: Any
) -> None:
    tiny_slides("same-name.tif", tag="first scan")
    catalog.scan()
    old = by_name(catalog, "same-name.tif")
    tiny_slides("same-name.tif", tag="rescanned glass")
    assert catalog.scan().changed == 1
    new = by_name(catalog, "same-name.tif")
    assert new.id == slide_id_from_hash(new.content_hash) != old.id
    assert catalog.get(old.id) is None


def test_unreadable_file_is_recorded_and_scan_goes_on(
    catalog: SqlCatalog, tiny_slides: Any
) -> None:
    tiny_slides("good.tif")
    (tiny_slides.root / "broken.svs").write_bytes(b"II*\x00 not a tiff at all" * 10)
    report = catalog.scan()
    assert report.unreadable == 1 and report.found == 2
    broken = by_name(catalog, "broken.svs")
    assert broken.status == "unreadable" and broken.error
    assert names(catalog, status="ok") == ["good.tif"]


def test_search_filters(catalog: SqlCatalog, tiny_slides: Any, tiny_dicom: Any) -> None:
    tiny_slides("S24-00001_A1_HE.tif")
    tiny_slides("S24-00001_B1_PAS.tif")
    tiny_slides("S24-00002_A1_HE.svs", barcode="S24-00002-A1")
    tiny_dicom(
        "S24-00003_C1_HE", patient_id="MRN9", accession="S24-00003", container_id="S24-00003-C1"
    )
    catalog.scan()
    assert names(catalog, q="b1_") == ["S24-00001_B1_PAS.tif"]
    assert names(catalog, q="%") == []  # LIKE wildcards are literal
    assert names(catalog, accession="s24-00001") == [
        "S24-00001_A1_HE.tif",
        "S24-00001_B1_PAS.tif",
    ]
    assert names(catalog, stain="he") == [
        "S24-00001_A1_HE.tif",
        "S24-00002_A1_HE.svs",
        "S24-00003_C1_HE",
    ]
    assert names(catalog, specimen="B") == ["S24-00001_B1_PAS.tif"]
    assert names(catalog, patient="MRN9") == ["S24-00003_C1_HE"]
    assert names(catalog, format="dicom") == ["S24-00003_C1_HE"]
    assert names(catalog, vendor="aperio") == ["S24-00002_A1_HE.svs"]
    # the Aperio file says 2024-01-05, DICOM 2024-01-05 09:30; the others have today's mtime
    assert names(catalog, scanned_to="2024-01-05") == ["S24-00002_A1_HE.svs", "S24-00003_C1_HE"]
    assert names(catalog, scanned_from="2024-01-05T09:00:00", scanned_to="2024-01-06") == [
        "S24-00003_C1_HE"
    ]
    assert len(names(catalog, scanned_from="2025-01-01")) == 2
    with pytest.raises(BadRequest):
        catalog.search(SlideQuery(scanned_from="yesterday"))


def test_case_links_in_records(catalog: SqlCatalog, tiny_slides: Any, tiny_dicom: Any) -> None:
    tiny_slides("S24-00001_A1_HE.tif")
    tiny_slides("plain.tif")
    tiny_dicom(
        "S24-00003_C1_HE", patient_id="MRN9", accession="S24-00003", container_id="S24-00003-C1"
    )
    catalog.scan()
    case = by_name(catalog, "S24-00001_A1_HE.tif").extra["case"]
    assert case == {
        "accession": "S24-00001",
        "specimen": "A",
        "block": "A1",
        "stain": "HE",
        "barcode": None,
        "linked": False,
        "patient": None,
    }
    dicom = by_name(catalog, "S24-00003_C1_HE").extra["case"]
    assert dicom["patient"] == {"id": "MRN9", "name": "DOE^JANE", "birth_date": None}
    assert dicom["barcode"] == "S24-00003-C1" and dicom["block"] == "C1"
    assert "case" not in by_name(catalog, "plain.tif").extra


@pytest.mark.parametrize("sort", ["path", "-path", "name", "scanned", "-scanned", "indexed"])
def test_cursor_pages_are_stable_and_complete(
    catalog: SqlCatalog, tiny_slides: Any, sort: str
) -> None:
    for i in range(23):
        tiny_slides(f"d{i % 3}/s{i:02d}.tif")
    catalog.scan()
    original = {r.id for r in catalog.search(SlideQuery(limit=1000)).items}
    seen: list[str] = []
    cursor = ""
    pages = 0
    while True:
        page = catalog.search(SlideQuery(limit=5, cursor=cursor, sort=sort))
        seen.extend(r.id for r in page.items)
        pages += 1
        if page.next is None:
            break
        tiny_slides(f"d0/zz-new-{pages}.tif")  # new files during paging do not shift pages
        catalog.scan()
        cursor = page.next
    assert len(seen) == len(set(seen)) and original <= set(seen)
    everything = [r.id for r in catalog.search(SlideQuery(limit=1000, sort=sort)).items]
    assert seen == [i for i in everything if i in set(seen)]  # in order, none lost


def test_bad_cursor_and_sort_are_rejected(catalog: SqlCatalog, tiny_slides: Any) -> None:
    for i in range(3):
        tiny_slides(f"s{i}.tif")
    catalog.scan()
    page = catalog.search(SlideQuery(limit=1))
    with pytest.raises(BadRequest):
        catalog.search(SlideQuery(cursor="garbage!"))
    with pytest.raises(BadRequest):
        catalog.search(SlideQuery(cursor=page.next or "", sort="name"))
    with pytest.raises(BadRequest):
        catalog.search(SlideQuery(sort="size"))


def test_concurrent_scans_neither_duplicate_nor_lose(database_url: str, tiny_slides: Any) -> None:
    for i in range(60):
        tiny_slides(f"S24-{i:05d}_A1_HE.tif")
    (tiny_slides.root / "copy.tif").write_bytes(
        (tiny_slides.root / "S24-00000_A1_HE.tif").read_bytes()
    )
    catalogs = [SqlCatalog(database_url, [tiny_slides.root], default_registry()) for _ in range(3)]
    errors: list[BaseException] = []

    def run(cat: SqlCatalog) -> None:
        try:
            cat.scan()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in catalogs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == []
        with catalogs[0].engine.connect() as conn:
            count = conn.execute(select(func.count()).select_from(scans)).scalar()
            ids = conn.execute(select(func.count(scans.c.slide_id.distinct()))).scalar()
        assert count == ids == 61
        assert catalogs[0].scan().touched == 0
    finally:
        for c in catalogs:
            c.close()


def test_catalog_reopens_with_the_same_ids(database_url: str, tiny_slides: Any) -> None:
    tiny_slides("a.tif")
    first = SqlCatalog(database_url, [tiny_slides.root], default_registry())
    first.scan()
    slide_id = by_name(first, "a.tif").id
    first.close()
    again = SqlCatalog(database_url, [tiny_slides.root], default_registry())
    try:
        assert again.refresh() == 0
        assert again.get(slide_id) is not None
        again.ping()
    finally:
        again.close()


def test_slides_outside_the_configured_roots_are_not_served(
    database_url: str, tiny_slides: Any, tmp_path: Path
) -> None:
    tiny_slides("a.tif")
    first = SqlCatalog(database_url, [tiny_slides.root], default_registry())
    first.scan()
    first.close()
    other_root = tmp_path / "other"
    other_root.mkdir()
    other = SqlCatalog(database_url, [other_root], default_registry())
    try:
        other.scan()
        assert other.search(SlideQuery()).items == []
    finally:
        other.close()
