"""The catalog on real files other projects test with: ``ok`` only when the pixels decode.

openslide-python's ``unopenable.tiff`` and ``unreadable.svs`` and libvips' ``ojpeg-tile.tif``
(old-style JPEG) have headers that open but tiles that no reader decodes; a DICOM series with a
truncated instance opens but fails on its pixels. Each must be listed as ``unreadable``, with a
reason that names neither the file nor its folder; the readable neighbours stay ``ok``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slideserver.catalog.base import SlideQuery
from slideserver.catalog.memory import MemoryCatalog
from slideserver.catalog.sql import SqlCatalog
from slideserver.readers.registry import default_registry
from tests.realworld import copy_slides, realworld_dir

READABLE = {
    "openslide-python/small.svs": "small.svs",
    "openslide-python/boxes.tiff": "boxes.tiff",
    "openslide-python/boxes_0.dcm": "boxes-dicom/boxes_0.dcm",
    "openslide-python/boxes_1.dcm": "boxes-dicom/boxes_1.dcm",
}
UNREADABLE = {
    "openslide-python/unopenable.tiff": "unopenable.tiff",
    "openslide-python/unreadable.svs": "unreadable.svs",
    "libvips/ojpeg-tile.tif": "ojpeg-tile.tif",
    "openslide-python/boxes_1.dcm": "truncated-dicom/boxes_1.dcm",
}
EXPECTED = {
    "small.svs": ("ok", None),
    "boxes.tiff": ("ok", None),
    "boxes-dicom": ("ok", None),
    "unopenable.tiff": ("unreadable", "cannot decode a tile"),
    "unreadable.svs": ("unreadable", "bogus marker length"),
    "ojpeg-tile.tif": ("unreadable", "cannot decode a tile"),
    "truncated-dicom": ("unreadable", "region of level 0"),
}
"""Slide name -> (status, a fragment of the reason, in lower case)."""


def write_material(root: Path) -> Path:
    """Copy the real files, and a DICOM series whose level-0 instance is cut short."""
    copy_slides({**READABLE, **UNREADABLE}, root)
    whole = (realworld_dir() / "slides" / "openslide-python" / "boxes_0.dcm").read_bytes()
    # The header and the start of the pixel data survive; the JPEG frame does not.
    (root / "truncated-dicom" / "boxes_0.dcm").write_bytes(whole[:5000])
    return root


@pytest.fixture
def material(tmp_path: Path) -> Path:
    return write_material(tmp_path / "slides")


@pytest.fixture
def catalog(material: Path, tmp_path: Path) -> Iterator[SqlCatalog]:
    cat = SqlCatalog(f"sqlite:///{tmp_path / 'catalog.db'}", [material], default_registry())
    yield cat
    cat.close()


def statuses(records: Any) -> dict[str, tuple[str, str | None]]:
    return {r.name: (r.status, r.error) for r in records}


@pytest.mark.parametrize(("name", "expected"), sorted(EXPECTED.items()))
def test_each_real_file_gets_the_status_its_pixels_earn(
    catalog: SqlCatalog, name: str, expected: tuple[str, str | None]
) -> None:
    catalog.scan()
    status, reason = statuses(catalog.search(SlideQuery(limit=100)).items)[name]
    want_status, fragment = expected
    assert status == want_status, reason
    if fragment is None:
        assert reason is None
    else:
        assert reason is not None and fragment in reason.lower()


def test_scan_reports_the_unreadable_count(catalog: SqlCatalog) -> None:
    report = catalog.scan()
    assert (report.found, report.unreadable) == (len(EXPECTED), 4)


def test_reasons_name_no_file_folder_or_path(catalog: SqlCatalog, material: Path) -> None:
    catalog.scan()
    for record in catalog.search(SlideQuery(status="unreadable", limit=100)).items:
        reason = record.error or ""
        for secret in (str(material), material.name, record.name, *UNREADABLE.values()):
            assert secret not in reason, (record.name, reason)
        assert ".dcm" not in reason and "/" not in reason


def test_the_memory_catalog_applies_the_same_check(material: Path) -> None:
    catalog = MemoryCatalog([material], default_registry())
    catalog.refresh()
    got = {
        name: status for name, (status, _) in statuses(catalog.search(SlideQuery()).items).items()
    }
    assert got == {name: status for name, (status, _) in EXPECTED.items()}
