"""JPEG stream surgery: merged and marked streams decode, with Pillow, exactly as tifffile does."""

from __future__ import annotations

import io
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile
from PIL import Image

from slideserver.codecs import jpeg
from tests._reader_fixtures import rgb_jpeg_tiles, tissue, write_aperio_like, write_generic_pyramid


def pillow_rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG"
        return np.asarray(im.convert("RGB"))


def stored_tiles(
    path: Path, page: int = 0
) -> tuple[tifffile.TiffPage, list[bytes], list[np.ndarray]]:
    """Return a page, its stored tiles, and tifffile's decode of each (the reference)."""
    with tifffile.TiffFile(path) as tif:
        p = tif.pages[page]
        assert isinstance(p, tifffile.TiffPage)
        fh = tif.filehandle
        tiles, decoded = [], []
        for index, (offset, count) in enumerate(zip(p.dataoffsets, p.databytecounts, strict=True)):
            fh.seek(offset)
            tiles.append(fh.read(count))
            arr, _, _ = p.decode(tiles[-1], index, jpegtables=p.jpegtables)
            decoded.append(np.asarray(arr)[0])
        return p, tiles, decoded


def test_segments_of_a_full_stream() -> None:
    data = bytes(imagecodecs.jpeg8_encode(tissue(64, 48), level=80))
    markers = [s.marker for s in jpeg.iter_header_segments(data)]
    assert markers[0] == 0xD8 and markers[-1] == 0xDA
    assert 0xE0 in markers  # JFIF
    assert jpeg.frame_header(data) == jpeg.FrameHeader(64, 48, 3, 8)
    assert jpeg.ends_with_eoi(data)
    assert jpeg.has_jfif_marker(data)
    assert jpeg.adobe_transform(data) is None


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\x00\x00",
        b"\xff\xd8\xff\xdb\x00",
        b"\xff\xd8\xff\xdb\x00\xff" + b"\x00" * 4,
        b"\xff\xd8",
    ],
)
def test_malformed_headers_raise_value_error(bad: bytes) -> None:
    with pytest.raises(ValueError):
        jpeg.frame_header(bad)


def test_merge_without_tables_is_identity() -> None:
    assert jpeg.merge_jpeg_tables(b"\xff\xd8abc", None) == b"\xff\xd8abc"
    assert jpeg.merge_jpeg_tables(b"\xff\xd8abc", b"") == b"\xff\xd8abc"
    with pytest.raises(ValueError):
        jpeg.merge_jpeg_tables(b"nope", b"\xff\xd8\xff\xd9")


def test_aperio_style_tile_needs_tables_and_marker(tmp_path: Path) -> None:
    """An abbreviated RGB-coded tile: tables merged + APP14 = Pillow sees tifffile's pixels."""
    page, tiles, reference = stored_tiles(write_aperio_like(tmp_path / "a.svs"))
    assert page.photometric == 2 and page.compression == 7 and page.jpegtables
    for index in (0, 3, len(tiles) - 1):
        tile = tiles[index]
        with pytest.raises(OSError):  # abbreviated: no tables, no image
            pillow_rgb(tile)
        merged = jpeg.merge_jpeg_tables(tile, page.jpegtables)
        assert jpeg.needs_adobe_rgb_marker(2, 7, 3, merged)
        marked = jpeg.add_adobe_rgb_marker(merged)
        assert jpeg.adobe_transform(marked) == 0
        assert not jpeg.needs_adobe_rgb_marker(2, 7, 3, marked)
        assert jpeg.add_adobe_rgb_marker(marked) == marked  # idempotent
        assert np.array_equal(pillow_rgb(marked), reference[index])
        # without the marker a stand-alone decoder takes the samples for YCbCr: wrong colours
        unmarked = pillow_rgb(merged)
        assert np.abs(unmarked.astype(int) - reference[index]).mean() > 20


def test_ycbcr_tiles_need_no_marker(tmp_path: Path) -> None:
    page, tiles, reference = stored_tiles(write_generic_pyramid(tmp_path / "g.tif"))
    assert page.photometric == 6
    for index, tile in enumerate(tiles[:4]):
        merged = jpeg.merge_jpeg_tables(tile, page.jpegtables)
        assert not jpeg.needs_adobe_rgb_marker(int(page.photometric), 7, 3, merged)
        assert np.array_equal(pillow_rgb(merged), reference[index])


def test_marker_decision() -> None:
    tables, tiles = rgb_jpeg_tiles(tissue(64, 64), 64)
    stream = jpeg.merge_jpeg_tables(tiles[0], tables)
    assert jpeg.needs_adobe_rgb_marker(2, 7, 3, stream)
    assert not jpeg.needs_adobe_rgb_marker(6, 7, 3, stream)  # YCbCr
    assert not jpeg.needs_adobe_rgb_marker(2, 8, 3, stream)  # not JPEG
    assert not jpeg.needs_adobe_rgb_marker(1, 7, 1, stream)  # grayscale
    jfif = bytes(imagecodecs.jpeg8_encode(tissue(16, 16), level=80))
    assert not jpeg.needs_adobe_rgb_marker(2, 7, 3, jfif)


def test_existing_ycbcr_app14_is_rewritten_not_duplicated() -> None:
    tables, tiles = rgb_jpeg_tiles(tissue(64, 64), 64)
    stream = jpeg.merge_jpeg_tables(tiles[0], tables)
    ycc = stream[:2] + jpeg.ADOBE_RGB_SEGMENT[:-1] + b"\x01" + stream[2:]
    assert jpeg.adobe_transform(ycc) == 1
    assert jpeg.needs_adobe_rgb_marker(2, 7, 3, ycc)
    fixed = jpeg.add_adobe_rgb_marker(ycc)
    assert len(fixed) == len(ycc) and jpeg.adobe_transform(fixed) == 0
    assert np.array_equal(pillow_rgb(fixed), pillow_rgb(jpeg.add_adobe_rgb_marker(stream)))


def test_truncated_stream_is_detected() -> None:
    tables, tiles = rgb_jpeg_tiles(tissue(64, 64), 64)
    stream = jpeg.merge_jpeg_tables(tiles[0], tables)
    assert jpeg.ends_with_eoi(stream)
    assert not jpeg.ends_with_eoi(stream[: len(stream) // 2])
    assert jpeg.ends_with_eoi(stream + b"\x00\x00")


# --- the per-level splice is byte for byte the per-tile header surgery -------------------------


def old_surgery(tile: bytes, tables: bytes | None, photometric: int, samples: int) -> bytes:
    """What the passthrough path did for every tile before the splice: walk, merge, mark."""
    merged = jpeg.merge_jpeg_tables(tile, tables)
    if jpeg.needs_adobe_rgb_marker(photometric, 7, samples, merged):
        merged = jpeg.add_adobe_rgb_marker(merged)
    return merged


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from slideserver.samples import write_samples

    written = write_samples(tmp_path_factory.mktemp("samples"))
    by_suffix = {
        suffix: next(p for p in written.values() if p.name.endswith(suffix))
        for suffix in (".svs", ".ome.tiff")
    }
    by_suffix[".tif"] = next(
        p for p in written.values() if p.suffix == ".tif" and not p.name.endswith(".ome.tif")
    )
    return by_suffix


@pytest.mark.parametrize("suffix", [".svs", ".tif", ".ome.tiff"])
def test_splice_equals_merge_and_mark(samples: dict[str, Path], suffix: str) -> None:
    checked = 0
    with tifffile.TiffFile(samples[suffix]) as tif:
        for series in tif.series:
            for level in series.levels:
                page = level.pages[0]
                assert isinstance(page, tifffile.TiffPage)  # a series' first page is never a frame
                if not (page.is_tiled and page.compression == 7):
                    continue
                photometric, spp = int(page.photometric), int(page.samplesperpixel)
                mark = photometric == 2 and spp == 3
                prefix = jpeg.splice_prefix(page.jpegtables, mark_rgb=mark)
                fh = tif.filehandle
                for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
                    if not count:
                        continue
                    fh.seek(offset)
                    tile = fh.read(count)
                    assert not (mark and jpeg.carries_colour_marker(tile))
                    old = old_surgery(tile, page.jpegtables, photometric, spp)
                    assert jpeg.splice(prefix, tile) == old
                    checked += 1
    assert checked > 10


def test_splice_prefix_keeps_what_the_tables_settle() -> None:
    tables, tiles = rgb_jpeg_tiles(tissue(64, 64), 64)
    assert jpeg.splice_prefix(None, mark_rgb=False) == jpeg.SOI
    assert jpeg.splice_prefix(None, mark_rgb=True) == jpeg.SOI + jpeg.ADOBE_RGB_SEGMENT
    plain = jpeg.splice_prefix(tables, mark_rgb=False)
    assert plain == tables[:-2]  # SOI + tables, no EOI
    marked = jpeg.splice_prefix(tables, mark_rgb=True)
    assert marked == jpeg.SOI + jpeg.ADOBE_RGB_SEGMENT + tables[2:-2]  # APP14 right after SOI
    # tables that already carry APP14 (transform 1) are rewritten, not given a second one
    ycc_tables = tables[:2] + jpeg.ADOBE_RGB_SEGMENT[:-1] + b"\x01" + tables[2:]
    fixed = jpeg.splice_prefix(ycc_tables, mark_rgb=True)
    assert len(fixed) == len(ycc_tables) - 2
    assert jpeg.splice(fixed, tiles[0]) == old_surgery(tiles[0], ycc_tables, 2, 3)
    with pytest.raises(ValueError):
        jpeg.splice_prefix(b"\xff\xd8\xff\xdb\x00", mark_rgb=True)
