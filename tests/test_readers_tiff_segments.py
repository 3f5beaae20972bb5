"""SegmentFile: positioned reads and decodes of the tiles or strips of one TIFF image."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from slideserver.errors import SlideUnreadable, TileUnreadable
from slideserver.models import SlideSource
from slideserver.readers.tiff.reader import TiffReader
from slideserver.readers.tiff.segments import ImageLayout, SegmentFile, image_layout
from tests._reader_fixtures import blocks_once_evicted, write_reader_files


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_reader_files(tmp_path_factory.mktemp("segments"), deflate_subifds=True)


def first_image(path: Path) -> tuple[ImageLayout, np.ndarray]:
    """The layout of a file's first page, and tifffile's decode of it (the reference)."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        return image_layout(page), np.asarray(page.asarray())


def stored_bytes(path: Path, layout: ImageLayout, index: int) -> bytes:
    with path.open("rb") as f:
        f.seek(layout.offsets[index])
        return f.read(layout.bytecounts[index])


def test_a_segment_is_its_stored_bytes(files: dict[str, Path]) -> None:
    layout, _ = first_image(files["svs"])
    segments = SegmentFile(files["svs"])
    try:
        for index in (0, 1, len(layout.offsets) - 1):
            assert segments.segment(layout, index) == stored_bytes(files["svs"], layout, index)
    finally:
        segments.close()


@pytest.mark.parametrize("name", ["ome", "flat", "deflate", "svs"])
def test_a_region_is_tifffiles_decode_on_white(files: dict[str, Path], name: str) -> None:
    layout, reference = first_image(files[name])
    segments = SegmentFile(files[name])
    try:
        got = segments.read(layout, layout.width - 100, 37, 300, 64)
    finally:
        segments.close()
    expected = np.full((64, 300, 3), 255, np.uint8)
    expected[:, :100] = reference[37:101, layout.width - 100 :, :3]
    assert np.array_equal(got, expected)


def test_a_region_decodes_only_the_segments_it_covers(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    original = SegmentFile.segment

    def spy(self: SegmentFile, layout: ImageLayout, index: int) -> bytes | None:
        seen.append(index)
        return original(self, layout, index)

    monkeypatch.setattr(SegmentFile, "segment", spy)
    with TiffReader(SlideSource(files["subifd"])) as reader:
        seen.clear()  # opening reads one sample tile per level (the passthrough plan)
        reader.read_region(300, 300, 0, 100, 100)  # inside tile (1, 1) only
        assert seen == [1 * 4 + 1]
        seen.clear()
        reader.read_region(250, 250, 0, 10, 10)  # straddles four tiles
        assert sorted(seen) == [0, 1, 4, 5]


def test_a_segment_cut_short_is_unreadable(files: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "cut.svs"
    shutil.copy(files["svs"], copy)
    layout, _ = first_image(copy)
    last = max(range(len(layout.offsets)), key=lambda i: layout.offsets[i])
    with copy.open("r+b") as f:
        f.truncate(layout.offsets[last] + layout.bytecounts[last] // 2)
    segments = SegmentFile(copy)
    try:
        with pytest.raises(TileUnreadable, match="truncated"):
            segments.segment(layout, last)
    finally:
        segments.close()


def test_a_closed_file_refuses_to_read(files: dict[str, Path]) -> None:
    layout, _ = first_image(files["svs"])
    segments = SegmentFile(files["svs"])
    segments.close()
    segments.close()
    with pytest.raises(SlideUnreadable):
        segments.segment(layout, 0)


def test_nowait_reads_the_page_cache_or_would_block(files: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "cold.svs"
    shutil.copy(files["svs"], copy)
    layout, _ = first_image(copy)
    segments = SegmentFile(copy)
    try:
        assert blocks_once_evicted(copy, lambda: segments.segment(layout, 1, nowait=True))
        blocking = segments.segment(layout, 1)  # a worker thread's read caches the pages
        assert segments.segment(layout, 1, nowait=True) == blocking
    finally:
        segments.close()
