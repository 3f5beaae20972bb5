"""Tiles without a stored copy: stored JPEGs decoded at reduced DCT scale, assembled, encoded.

The slide is a small Aperio-style SVS written by tifffile (RGB-coded JPEG tiles sharing one
JPEGTables, levels by 4, black padding in the edge tiles), read through the default registry.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
from numpy.typing import NDArray
from PIL import Image

from slideserver.errors import TileUnreadable
from slideserver.imaging.regions import (
    read_from_stored_tiles,
    read_scaled_array,
    read_scaled_region,
)
from slideserver.models import EncodedTile, SlideSource
from slideserver.readers.base import SlideReader
from slideserver.readers.registry import default_registry
from tests._reader_fixtures import write_aperio_like

WIDTH, HEIGHT, TILE = 1100, 900, 256


@pytest.fixture(scope="module")
def svs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_aperio_like(tmp_path_factory.mktemp("scaled") / "scaled.svs", WIDTH, HEIGHT, TILE)


@pytest.fixture
def reader(svs: Path) -> Iterator[SlideReader]:
    with default_registry().open(SlideSource(svs)) as opened:
        assert opened.read_encoded_tile(0, 0, 0) is not None, "the stored-tile path must apply"
        yield opened


def box_reduced(
    reader: SlideReader, l0_x: int, l0_y: int, size: int, scale: int
) -> NDArray[np.int16]:
    """The same region fully decoded from level 0, then box-reduced: the reference."""
    region = reader.read_region(l0_x, l0_y, 0, size * scale, size * scale)
    return np.asarray(region.reduce(scale), dtype=np.int16)


def reencode_tiles(reader: SlideReader, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``reader`` hand out its stored tiles re-encoded as ``mode`` (L or CMYK) JPEGs."""
    real = reader.read_encoded_tile

    def read(level: int, t_col: int, t_row: int) -> EncodedTile | None:
        tile = real(level, t_col, t_row)
        assert tile is not None
        buf = io.BytesIO()
        with Image.open(io.BytesIO(tile.data)) as image:
            image.convert(mode).save(buf, "JPEG", quality=95)
        return EncodedTile(buf.getvalue(), "image/jpeg", tile.width, tile.height)

    monkeypatch.setattr(reader, "read_encoded_tile", read)


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_dct_scaled_assembly_matches_full_decode_and_box_reduce(
    reader: SlideReader, scale: int
) -> None:
    # Always from level 0 (a 4x pyramid asks for 4x and 8x of its finer level only where a
    # level is missing, so the assembly is called directly): 512 x 512 level-0 pixels.
    size = 2 * TILE // scale
    got = read_from_stored_tiles(reader, 0, 256, 256, 2 * TILE, 2 * TILE, size, size)
    assert got is not None
    want = box_reduced(reader, 256, 256, size, scale)
    diff = np.abs(got.astype(np.int16) - want)
    assert got.shape == (size, size, 3) and got.dtype == np.uint8
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 4, (diff.mean(), diff.max())


def test_interior_tile_is_built_from_stored_tiles_only(
    reader: SlideReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_region_reads(*args: object) -> Image.Image:
        raise AssertionError("the general path ran")

    monkeypatch.setattr(reader, "read_region", no_region_reads)
    pixels = read_scaled_array(reader, 0, 0, 2 * TILE, 2 * TILE, TILE, TILE)
    assert pixels.shape == (TILE, TILE, 3)


def test_stored_tile_padding_beyond_the_level_edge_is_white(reader: SlideReader) -> None:
    # Level 0 is 1100 x 900: the last tile column holds 76 real pixels (38 at 2x) and black
    # padding; the last tile row 132 (66 at 2x). The region also runs past the slide.
    x0, y0 = 4 * TILE, 3 * TILE
    pixels = read_scaled_array(reader, x0, y0, 2 * TILE, 2 * TILE, TILE, TILE)
    valid_w, valid_h = (WIDTH - x0) // 2, (HEIGHT - y0) // 2
    assert (valid_w, valid_h) == (38, 66)
    assert (pixels[:, valid_w:] == 255).all()
    assert (pixels[valid_h:, :] == 255).all()
    want = box_reduced(reader, x0, y0, TILE, 2)[:valid_h, :valid_w]
    assert np.abs(pixels[:valid_h, :valid_w].astype(np.int16) - want).max() <= 8


def test_corrupt_stored_tile_raises_tile_unreadable(
    reader: SlideReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = reader.read_encoded_tile

    def truncated(level: int, t_col: int, t_row: int) -> EncodedTile | None:
        tile = real(level, t_col, t_row)
        assert tile is not None
        return EncodedTile(tile.data[: len(tile.data) // 2], tile.media_type)

    monkeypatch.setattr(reader, "read_encoded_tile", truncated)
    with pytest.raises(TileUnreadable):
        read_scaled_array(reader, 0, 0, 2 * TILE, 2 * TILE, TILE, TILE)


def test_grayscale_stored_tiles_assemble_as_rgb(
    reader: SlideReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    want = Image.fromarray(box_reduced(reader, 0, 0, TILE, 2).astype(np.uint8))
    want_grey = np.asarray(want.convert("L"), dtype=np.int16)
    reencode_tiles(reader, "L", monkeypatch)
    pixels = read_scaled_array(reader, 0, 0, 2 * TILE, 2 * TILE, TILE, TILE)
    assert pixels.shape == (TILE, TILE, 3)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    assert np.abs(pixels[..., 0].astype(np.int16) - want_grey).mean() < 2.0


def test_cmyk_stored_tiles_assemble_as_rgb(
    reader: SlideReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    want = box_reduced(reader, 256, 256, TILE, 2)
    reencode_tiles(reader, "CMYK", monkeypatch)
    pixels = read_scaled_array(reader, 256, 256, 2 * TILE, 2 * TILE, TILE, TILE)
    assert np.abs(pixels.astype(np.int16) - want).mean() < 3.0


def test_stream_turbojpeg_refuses_is_decoded_by_pillow(
    reader: SlideReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Junk before a marker is only a warning for libjpeg: Pillow decodes such a stream, and
    # simplejpeg (strict) refuses it; the tile must still come out as before.
    want = box_reduced(reader, 256, 256, TILE, 2)
    real = reader.read_encoded_tile

    def junk_before_sos(level: int, t_col: int, t_row: int) -> EncodedTile:
        tile = real(level, t_col, t_row)
        assert tile is not None
        sos = tile.data.index(b"\xff\xda")
        return EncodedTile(tile.data[:sos] + b"\0\0" + tile.data[sos:], tile.media_type)

    monkeypatch.setattr(reader, "read_encoded_tile", junk_before_sos)
    with pytest.raises(ValueError):
        simplejpeg.decode_jpeg(junk_before_sos(0, 1, 1).data, "RGB")
    pixels = read_scaled_array(reader, 256, 256, 2 * TILE, 2 * TILE, TILE, TILE)
    assert np.abs(pixels.astype(np.int16) - want).mean() < 1.0


def test_read_scaled_region_is_the_array_as_an_rgb_image(reader: SlideReader) -> None:
    image = read_scaled_region(reader, 256, 0, 2 * TILE, 2 * TILE, TILE, TILE)
    pixels = read_scaled_array(reader, 256, 0, 2 * TILE, 2 * TILE, TILE, TILE)
    assert image.mode == "RGB" and image.size == (TILE, TILE)
    assert np.array_equal(np.asarray(image), pixels)


def test_general_path_also_returns_an_rgb_array(reader: SlideReader) -> None:
    # A 3x reduction is no DCT scale: the region is read and resampled instead.
    pixels = read_scaled_array(reader, 0, 0, 300, 240, 100, 80)
    assert pixels.shape == (80, 100, 3) and pixels.dtype == np.uint8


def test_edge_tiles_of_a_stored_level_are_cropped_from_its_stored_tiles(
    reader: SlideReader,
) -> None:
    """The partial tile at the bottom-right corner, at full scale: stored pixels, no padding."""
    x, y = 4 * TILE, 3 * TILE  # the last column and row of 1100 x 900
    w, h = WIDTH - x, HEIGHT - y
    got = read_from_stored_tiles(reader, 0, x, y, w, h, w, h)
    assert got is not None and got.shape == (h, w, 3)
    want = np.asarray(reader.read_region(x, y, 0, w, h), dtype=np.int16)
    assert np.abs(got.astype(np.int16) - want).max() <= 1
