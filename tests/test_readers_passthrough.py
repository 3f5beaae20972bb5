"""Stored JPEG tiles sent as they are: StoredTiles, the per-level splice, and DICOM frames."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from PIL import Image

from slideserver.codecs import jpeg
from slideserver.errors import TileNotFound, TileUnreadable
from slideserver.models import SlideSource
from slideserver.readers.passthrough import StoredTiles, browser_ready_frame
from slideserver.readers.tiff.metadata import all_pages
from slideserver.readers.tiff.reader import TiffReader
from slideserver.readers.tiff.segments import SegmentFile
from tests._reader_fixtures import write_reader_files


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_reader_files(tmp_path_factory.mktemp("passthrough"), deflate_subifds=True)


@pytest.fixture
def header_walks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Count the JPEG header walks (the per-tile work a planned splice skips), by stream size."""
    walks: list[int] = []
    real = jpeg.iter_header_segments

    def counting(stream: bytes) -> Iterator[jpeg.Segment]:
        walks.append(len(stream))
        return real(stream)

    monkeypatch.setattr(jpeg, "iter_header_segments", counting)
    yield walks


def surgery(tile: bytes, tables: bytes | None, photometric: int, samples: int) -> bytes:
    """The per-tile header walk the splice replaces: merge the tables, mark RGB where needed."""
    merged = jpeg.merge_jpeg_tables(tile, tables)
    if jpeg.needs_adobe_rgb_marker(photometric, 7, samples, merged):
        merged = jpeg.add_adobe_rgb_marker(merged)
    return merged


def stored_tile(path: Path, size: tuple[int, int], index: int) -> tuple[bytes, Any]:
    with tifffile.TiffFile(path) as tif:
        pages = [p for p in all_pages(tif) if p.is_tiled]
        page = next(p for p in pages if (p.imagewidth, p.imagelength) == size)
        tif.filehandle.seek(page.dataoffsets[index])
        data = tif.filehandle.read(page.databytecounts[index])
        return data, (page.jpegtables, int(page.photometric), int(page.samplesperpixel))


# --- StoredTiles ---------------------------------------------------------------------------------


def test_stored_tiles_by_level_size(files: dict[str, Path]) -> None:
    stored = StoredTiles(files["svs"], [(1100, 900), (275, 225), (12, 34)])
    try:
        assert stored.tile_size(0) == (256, 256) and stored.tile_size(2) is None
        assert stored.read(2, 0, 0) is None  # no TIFF image of that size
        tile = stored.read(1, 1, 0)
        assert tile is not None and jpeg.adobe_transform(tile.data) == 0
        with pytest.raises(TileNotFound):
            stored.read(0, 5, 0)
        with pytest.raises(TileNotFound):
            stored.read(3, 0, 0)
    finally:
        stored.close()
    sub = StoredTiles(files["subifd"], [(1000, 700), (500, 350), (250, 175)])
    assert [sub.tile_size(i) for i in range(3)] == [(256, 256)] * 3  # SubIFD levels found
    sub.close()


def test_svs_passthrough_is_marked_rgb(files: dict[str, Path]) -> None:
    with TiffReader(SlideSource(files["svs"])) as reader:
        tile = reader.read_encoded_tile(0, 1, 1)
    assert tile is not None
    assert jpeg.adobe_transform(tile.data) == 0
    assert jpeg.frame_header(tile.data).width == 256


def test_deflate_levels_have_no_passthrough(files: dict[str, Path]) -> None:
    with TiffReader(SlideSource(files["deflate"])) as reader:
        assert reader.read_encoded_tile(0, 0, 0) is None
        with pytest.raises(TileNotFound):
            reader.read_encoded_tile(9, 0, 0)


# --- the splice ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ome", "subifd", "flat", "svs"])
def test_encoded_tiles_are_the_merged_and_marked_stream(files: dict[str, Path], name: str) -> None:
    with TiffReader(SlideSource(files[name])) as reader:
        for level, lv in enumerate(reader.info.levels):
            cols, rows = -(-lv.width // 256), -(-lv.height // 256)
            for index in range(cols * rows):
                tile = reader.read_encoded_tile(level, index % cols, index // cols)
                assert tile is not None
                data, (tables, photometric, spp) = stored_tile(
                    files[name], (lv.width, lv.height), index
                )
                assert tile.data == surgery(data, tables, photometric, spp)


@pytest.mark.parametrize("name", ["ome", "subifd", "flat", "svs"])
def test_tiles_of_a_planned_level_are_spliced_without_a_header_walk(
    files: dict[str, Path], name: str, header_walks: list[int]
) -> None:
    with TiffReader(SlideSource(files[name])) as reader:
        header_walks.clear()  # opening plans every level from a sample tile
        for level, lv in enumerate(reader.info.levels):
            cols, rows = -(-lv.width // 256), -(-lv.height // 256)
            for index in range(cols * rows):
                assert reader.read_encoded_tile(level, index % cols, index // cols) is not None
    assert header_walks == []


def test_tiles_with_their_own_app14_take_the_header_walk(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, header_walks: list[int]
) -> None:
    """A level whose sample tile carries APP14 is never spliced: every tile is walked."""
    ycc = jpeg.ADOBE_RGB_SEGMENT[:-1] + b"\x01"
    real = SegmentFile.segment

    def with_app14(self: Any, layout: Any, index: int, **kwargs: Any) -> bytes | None:
        data = real(self, layout, index, **kwargs)
        return None if data is None else data[:2] + ycc + data[2:]

    monkeypatch.setattr(SegmentFile, "segment", with_app14)
    with TiffReader(SlideSource(files["svs"])) as reader:
        header_walks.clear()
        tile = reader.read_encoded_tile(0, 1, 1)
        assert header_walks  # the full walk, not the splice
    assert tile is not None
    data, (tables, photometric, spp) = stored_tile(files["svs"], (1100, 900), 6)
    assert tile.data == surgery(data[:2] + ycc + data[2:], tables, photometric, spp)
    assert jpeg.adobe_transform(tile.data) == 0 and tile.data.count(b"Adobe") == 1


def test_truncated_tile_fails_on_the_splice_path(
    files: dict[str, Path], tmp_path: Path, header_walks: list[int]
) -> None:
    bad = tmp_path / "cut.svs"
    shutil.copy(files["svs"], bad)
    with tifffile.TiffFile(bad) as tif:
        offset, count = tif.pages[0].dataoffsets[6], tif.pages[0].databytecounts[6]
    with bad.open("r+b") as f:
        f.seek(offset + count // 2)
        f.write(b"\x00" * (count - count // 2))  # second half lost: header intact, no EOI
    with TiffReader(SlideSource(bad)) as reader:
        header_walks.clear()  # the level was planned at open, from tile 0
        assert reader.read_encoded_tile(0, 0, 0) is not None
        with pytest.raises(TileUnreadable):
            reader.read_encoded_tile(0, 1, 1)
        assert header_walks == []  # refused by the splice's own end check
        padded = reader.read_encoded_tile(0, 2, 1)
        assert padded is not None


# --- DICOM frames --------------------------------------------------------------------------------


def _rgb_coded_jpeg(pixels: np.ndarray) -> bytes:
    """JPEG-code pixels without the YCbCr transform and without any marker saying so."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", keep_rgb=True, quality=95)
    data = buffer.getvalue()
    assert jpeg.adobe_transform(data) == 0
    segment_end = data.index(b"Adobe") - 4 + 2 + 14
    return data[:2] + data[segment_end:]  # as an RGB DICOM frame may come: APP14 stripped


def test_rgb_frame_gets_the_adobe_marker_browsers_need() -> None:
    pixels = (np.random.default_rng(1).random((16, 16, 3)) * 255).astype(np.uint8)
    frame = _rgb_coded_jpeg(pixels)
    fixed = browser_ready_frame(frame, rgb=True, width=16, height=16)
    assert fixed is not None
    decoded = np.asarray(Image.open(io.BytesIO(fixed)).convert("RGB"), dtype=int)
    assert np.abs(decoded - pixels.astype(int)).mean() < 4


def test_frame_contradicting_its_photometric_interpretation_is_not_passed_through() -> None:
    pixels = np.full((16, 16, 3), 128, np.uint8)
    rgb_marked = io.BytesIO()
    Image.fromarray(pixels).save(rgb_marked, "JPEG", keep_rgb=True)
    assert browser_ready_frame(rgb_marked.getvalue(), rgb=False, width=16, height=16) is None
    ycbcr = io.BytesIO()
    Image.fromarray(pixels).save(ycbcr, "JPEG")  # JFIF: YCbCr
    assert browser_ready_frame(ycbcr.getvalue(), rgb=True, width=16, height=16) is None
    assert browser_ready_frame(ycbcr.getvalue(), rgb=False, width=32, height=16) is None
