"""TIFFs in strips: a region reads and decodes only the strips it crosses, never whole planes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from slideserver.models import SlideSource
from slideserver.readers.tiff.reader import TiffReader
from slideserver.readers.tiff.segments import ImageLayout, SegmentFile

ROWS_PER_STRIP = 16
SHAPES = {"rgb": (2000, 3000, 3), "grey": (5000, 10000)}
COMPRESSIONS = ("none", "zlib", "jpeg")


def write_strips(path: Path, kind: str, compression: str) -> None:
    shape = SHAPES[kind]
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    base = ((xx // 7 + yy // 5) % 256).astype(np.uint8)
    data = np.stack([base, 255 - base, base // 2], axis=-1) if kind == "rgb" else base
    tifffile.imwrite(
        path,
        data,
        rowsperstrip=ROWS_PER_STRIP,
        compression=None if compression == "none" else compression,
        photometric="rgb" if kind == "rgb" else "minisblack",
        metadata=None,
    )


@pytest.fixture(scope="module")
def strip_files(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    folder = tmp_path_factory.mktemp("strips")
    files = {}
    for kind in SHAPES:
        for compression in COMPRESSIONS:
            path = folder / f"{kind}-{compression}.tif"
            write_strips(path, kind, compression)
            files[kind, compression] = path
    return files


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_a_tile_reads_only_the_strips_it_crosses_with_tifffiles_pixels(
    strip_files: dict[tuple[str, str], Path],
    kind: str,
    compression: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = strip_files[kind, compression]
    read: list[int] = []
    original = SegmentFile.segment

    def spy(self: SegmentFile, layout: ImageLayout, index: int, **kw: bool) -> bytes | None:
        read.append(index)
        return original(self, layout, index, **kw)

    monkeypatch.setattr(SegmentFile, "segment", spy)
    x, y, size = 1500, 1001, 254
    with TiffReader(SlideSource(path)) as reader:
        assert TiffReader.detect(SlideSource(path)) == "generic-tiff"
        assert reader.info.levels[0].tile_width is None  # strips: Deep Zoom uses 254/1
        read.clear()
        got = np.asarray(reader.read_region(x, y, 0, size, size))
    first, last = y // ROWS_PER_STRIP, (y + size - 1) // ROWS_PER_STRIP
    assert sorted(read) == list(range(first, last + 1))
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        assert len(page.dataoffsets) == -(-SHAPES[kind][0] // ROWS_PER_STRIP)
        expected = page.asarray()[y : y + size, x : x + size]
    if expected.ndim == 2:
        expected = np.repeat(expected[..., None], 3, axis=-1)
    assert np.array_equal(got, expected)


def test_the_bytes_read_are_those_of_the_crossed_strips(
    strip_files: dict[tuple[str, str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 254-pixel tile of a 10000 x 5000 grey image costs 16 strips (2.5 MB), not 50 MB."""
    path = strip_files["grey", "none"]
    total: list[int] = []
    original = SegmentFile.segment

    def spy(self: SegmentFile, layout: ImageLayout, index: int, **kw: bool) -> bytes | None:
        data = original(self, layout, index, **kw)
        total.append(len(data or b""))
        return data

    monkeypatch.setattr(SegmentFile, "segment", spy)
    with TiffReader(SlideSource(path)) as reader:
        total.clear()
        reader.read_region(8000, 4000, 0, 254, 254)
    assert sum(total) == 16 * ROWS_PER_STRIP * 10000  # rows 4000..4255
