"""TiffReader on small TIFFs written here: OME, SubIFD, Aperio-style, deflate."""

from __future__ import annotations

import io
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from slideserver.errors import (
    AssociatedImageNotFound,
    SlideTruncated,
    SlideUnreadable,
    TileNotFound,
    TileUnreadable,
)
from slideserver.models import SlideSource
from slideserver.readers.tiff.reader import TiffReader
from tests._reader_fixtures import (
    blocks_once_evicted,
    tissue,
    write_reader_files,
)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_reader_files(tmp_path_factory.mktemp("tiff"), deflate_subifds=True)


def level_arrays(path: Path) -> list[np.ndarray]:
    """The reference: tifffile's decode of every level of the main series."""
    with tifffile.TiffFile(path) as tif:
        series = next(s for s in tif.series if s.name.lower() not in {"label", "macro"})
        return [np.asarray(level.asarray()) for level in series.levels]


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def test_detect(files: dict[str, Path], tmp_path: Path) -> None:
    assert TiffReader.detect(SlideSource(files["ome"])) == "ome-tiff"
    assert TiffReader.detect(SlideSource(files["subifd"])) == "generic-tiff"
    assert TiffReader.detect(SlideSource(files["svs"])) == "aperio"
    (tmp_path / "x.tif").write_bytes(b"II*\x00garbage")
    Image.new("RGB", (10, 10)).save(tmp_path / "plain.tif")  # in strips: served too (#12)
    assert TiffReader.detect(SlideSource(tmp_path / "plain.tif")) == "generic-tiff"
    for source in (
        SlideSource(tmp_path / "x.tif"),
        SlideSource(tmp_path / "missing.tif"),
        SlideSource(tmp_path),
        SlideSource(tmp_path, files=(files["ome"],)),
    ):
        assert TiffReader.detect(source) is None


def test_ome_info(files: dict[str, Path]) -> None:
    with TiffReader(SlideSource(files["ome"])) as reader:
        info = reader.info
    assert info.format == "ome-tiff"
    assert [(lv.width, lv.height) for lv in info.levels] == [(1000, 800), (500, 400), (250, 200)]
    assert [lv.downsample for lv in info.levels] == [1.0, 2.0, 4.0]
    assert all((lv.tile_width, lv.tile_height) == (256, 256) for lv in info.levels)
    assert info.mpp_x == pytest.approx(0.25) and info.mpp_y == pytest.approx(0.25)  # 250 nm
    assert info.associated == ("label", "macro")
    assert info.properties["ome.PhysicalSizeXUnit"] == "nm"
    assert all(isinstance(v, str) for v in info.properties.values())


def test_subifd_and_svs_info(files: dict[str, Path]) -> None:
    with TiffReader(SlideSource(files["subifd"])) as reader:
        info = reader.info
    assert info.format == "generic-tiff"
    assert [lv.downsample for lv in info.levels] == [1.0, 2.0, 4.0]
    assert info.mpp_x == pytest.approx(0.25)  # 40000 px/cm
    with TiffReader(SlideSource(files["svs"])) as reader:
        info = reader.info
    assert (info.format, info.vendor, info.mpp_x, info.objective_power) == (
        "aperio",
        "aperio",
        0.499,
        20.0,
    )
    assert info.associated == ("label", "macro", "thumbnail")


@pytest.mark.parametrize("name", ["ome", "subifd", "flat", "deflate", "svs"])
def test_read_region_matches_tifffile(files: dict[str, Path], name: str) -> None:
    references = level_arrays(files[name])
    with TiffReader(SlideSource(files[name])) as reader:
        for level, ref in enumerate(references):
            ds = reader.info.levels[level].downsample
            h, w = ref.shape[:2]
            for l_x, l_y, l_w, l_h in [(0, 0, w, h), (37, 211, 300, 77), (w - 20, h - 10, 64, 48)]:
                got = np.asarray(
                    reader.read_region(round(l_x * ds), round(l_y * ds), level, l_w, l_h)
                )
                assert got.shape == (l_h, l_w, 3)
                expected = np.full((l_h, l_w, 3), 255, np.uint8)
                part = ref[l_y : l_y + l_h, l_x : l_x + l_w]
                expected[: part.shape[0], : part.shape[1]] = part
                assert np.array_equal(got, expected), (name, level, l_x, l_y)


def test_region_outside_is_white(files: dict[str, Path]) -> None:
    with TiffReader(SlideSource(files["ome"])) as reader:
        img = np.asarray(reader.read_region(-500, -500, 0, 100, 100))
        assert (img == 255).all()
        img = np.asarray(reader.read_region(5000, 0, 1, 10, 10))
        assert (img == 255).all()
        with pytest.raises(TileNotFound):
            reader.read_region(0, 0, 3, 10, 10)


@pytest.mark.parametrize("name", ["ome", "subifd", "flat", "svs"])
def test_encoded_tiles_decode_like_tifffile(files: dict[str, Path], name: str) -> None:
    references = level_arrays(files[name])
    with TiffReader(SlideSource(files[name])) as reader:
        for level, ref in enumerate(references):
            lv = reader.info.levels[level]
            assert lv.tile_width == 256
            cols, rows = -(-lv.width // 256), -(-lv.height // 256)
            for col, row in {(0, 0), (cols - 1, rows - 1), (cols // 2, rows // 2)}:
                tile = reader.read_encoded_tile(level, col, row)
                assert tile is not None and tile.media_type == "image/jpeg"
                assert (tile.width, tile.height) == (256, 256)
                pixels = decode(tile.data)
                assert pixels.shape == (256, 256, 3)
                part = ref[row * 256 : row * 256 + 256, col * 256 : col * 256 + 256]
                # interior of the tile equals tifffile's decode; padding is whatever was stored
                assert np.array_equal(pixels[: part.shape[0], : part.shape[1]], part)
            with pytest.raises(TileNotFound):
                reader.read_encoded_tile(level, cols, 0)
            with pytest.raises(TileNotFound):
                reader.read_encoded_tile(level, 0, -1)
        with pytest.raises(TileNotFound):
            reader.read_encoded_tile(len(references), 0, 0)


def test_associated_images(files: dict[str, Path]) -> None:
    with TiffReader(SlideSource(files["ome"])) as reader:
        label = reader.associated("label")
        assert label.mode == "RGB" and label.size == (160, 100)
        assert np.asarray(label).min() == 240
        assert reader.associated("macro").size == (300, 100)
        with pytest.raises(AssociatedImageNotFound):
            reader.associated("thumbnail")


def test_grayscale_uint16_and_alpha(tmp_path: Path) -> None:
    gray = (np.arange(300 * 200, dtype=np.uint32).reshape(200, 300) * 7 % 65536).astype(np.uint16)
    tifffile.imwrite(tmp_path / "g16.tif", gray, tile=(64, 64), compression="zlib")
    with TiffReader(SlideSource(tmp_path / "g16.tif")) as reader:
        got = np.asarray(reader.read_region(0, 0, 0, 300, 200))
    assert np.array_equal(got[..., 0], (gray >> 8).astype(np.uint8))
    assert np.array_equal(got[..., 0], got[..., 2])
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, 32:, 3] = 255  # left half transparent
    tifffile.imwrite(tmp_path / "a.tif", rgba, tile=(32, 32), extrasamples=["unassalpha"])
    with TiffReader(SlideSource(tmp_path / "a.tif")) as reader:
        got = np.asarray(reader.read_region(0, 0, 0, 64, 64))
    assert (got[:, :32] == 255).all() and (got[:, 32:] == (200, 0, 0)).all()


def test_concurrent_reads_agree(files: dict[str, Path]) -> None:
    with TiffReader(SlideSource(files["ome"])) as reader:
        expected = np.asarray(reader.read_region(0, 0, 0, 1000, 800))
        failures: list[str] = []

        def work(seed: int) -> None:
            rng = np.random.default_rng(seed)
            for _ in range(20):
                x, y = int(rng.integers(0, 900)), int(rng.integers(0, 700))
                got = np.asarray(reader.read_region(x, y, 0, 100, 100))
                if not np.array_equal(got, expected[y : y + 100, x : x + 100]):
                    failures.append(f"{x},{y}")
                tile = reader.read_encoded_tile(0, x // 256, y // 256)
                if tile is None or not tile.data.startswith(b"\xff\xd8"):
                    failures.append("tile")

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not failures


def corrupt_tile(src: Path, dst: Path, page: int = 0, index: int = 0) -> None:
    shutil.copy(src, dst)
    with tifffile.TiffFile(src) as tif:
        offset = tif.pages[page].dataoffsets[index]
        count = tif.pages[page].databytecounts[index]
    with dst.open("r+b") as f:
        f.seek(offset)
        f.write(b"\x00" * count)


def test_corrupt_tile_fails_only_its_reads(files: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.ome.tiff"
    corrupt_tile(files["ome"], bad)
    with TiffReader(SlideSource(bad)) as reader:
        with pytest.raises(TileUnreadable):
            reader.read_region(0, 0, 0, 100, 100)
        with pytest.raises(TileUnreadable):
            reader.read_encoded_tile(0, 0, 0)
        assert np.asarray(reader.read_region(300, 300, 0, 100, 100)).shape == (100, 100, 3)
        assert reader.read_encoded_tile(0, 1, 1) is not None


@pytest.mark.parametrize("fraction", [0.02, 0.5, 0.9, 0.99])
def test_a_truncated_file_is_refused_at_open(
    files: dict[str, Path], tmp_path: Path, fraction: float
) -> None:
    data = files["flat"].read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(SlideTruncated) as refused:
        TiffReader(SlideSource(cut))
    assert "'cut.tif' is truncated" in refused.value.detail
    assert str(tmp_path) not in refused.value.detail


def test_closed_reader_refuses(files: dict[str, Path]) -> None:
    reader = TiffReader(SlideSource(files["ome"]))
    reader.close()
    reader.close()
    with pytest.raises(SlideUnreadable):
        reader.read_region(0, 0, 0, 10, 10)


def test_tissue_helper_is_deterministic() -> None:
    assert np.array_equal(tissue(32, 16), tissue(32, 16))


def test_nowait_reads_of_cached_tiles_equal_blocking_reads(files: dict[str, Path]) -> None:
    with TiffReader(SlideSource(files["svs"])) as reader:
        blocking = reader.read_encoded_tile(0, 1, 1)
        assert blocking is not None
        assert reader.read_encoded_tile(0, 1, 1, nowait=True) == blocking


def test_nowait_reads_of_tiles_not_in_memory_would_block(
    files: dict[str, Path], tmp_path: Path
) -> None:
    copy = tmp_path / "cold.svs"
    shutil.copy(files["svs"], copy)
    with TiffReader(SlideSource(copy)) as reader:
        assert blocks_once_evicted(copy, lambda: reader.read_encoded_tile(0, 1, 1, nowait=True))
        assert reader.read_encoded_tile(0, 1, 1) is not None  # the worker thread's read
        assert reader.read_encoded_tile(0, 1, 1, nowait=True) is not None  # cached again
