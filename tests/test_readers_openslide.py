"""OpenSlideReader on small files written here: metadata, pixels, passthrough, error recovery."""

from __future__ import annotations

import io
import shutil
import threading
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile
from PIL import Image

from slideserver.codecs import jpeg
from slideserver.errors import (
    AssociatedImageNotFound,
    SlideUnreadable,
    TileNotFound,
    TileUnreadable,
)
from slideserver.models import SlideSource
from slideserver.readers.openslide import OpenSlideReader
from tests._reader_fixtures import write_reader_files


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_reader_files(tmp_path_factory.mktemp("openslide"))


def reference(path: Path, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
    """OpenSlide's own pixels, composited on white."""
    with openslide.OpenSlide(str(path)) as slide:
        rgba = slide.read_region((x, y), level, (w, h))
    white = Image.new("RGB", rgba.size, (255, 255, 255))
    white.paste(rgba, mask=rgba.getchannel("A"))
    return np.asarray(white)


def test_detect(files: dict[str, Path], tmp_path: Path) -> None:
    assert OpenSlideReader.detect(SlideSource(files["svs"])) == "aperio"
    assert OpenSlideReader.detect(SlideSource(files["flat"])) == "generic-tiff"
    # OME-TIFF and SubIFD pyramids: OpenSlide would see one level only; TiffReader takes them
    assert OpenSlideReader.detect(SlideSource(files["ome"])) is None
    assert OpenSlideReader.detect(SlideSource(files["subifd"])) is None
    (tmp_path / "junk.svs").write_bytes(b"junk" * 100)
    for source in (
        SlideSource(tmp_path / "junk.svs"),
        SlideSource(tmp_path / "missing.svs"),
        SlideSource(tmp_path),
        SlideSource(tmp_path, files=(files["svs"],)),  # multi-file sources are DICOM's
    ):
        assert OpenSlideReader.detect(source) is None


def test_info(files: dict[str, Path]) -> None:
    with OpenSlideReader(SlideSource(files["svs"])) as reader:
        info = reader.info
    assert (info.format, info.vendor) == ("aperio", "aperio")
    assert [(lv.width, lv.height, lv.downsample) for lv in info.levels] == [
        (1100, 900, 1.0),
        (275, 225, 4.0),
    ]
    assert all((lv.tile_width, lv.tile_height) == (256, 256) for lv in info.levels)
    assert (info.mpp_x, info.mpp_y, info.objective_power) == (0.499, 0.499, 20.0)
    assert info.associated == ("label", "macro", "thumbnail")
    assert info.properties["openslide.vendor"] == "aperio"
    assert info.properties["aperio.AppMag"] == "20"
    assert all(isinstance(v, str) for v in info.properties.values())


def test_open_failure_is_slide_unreadable(tmp_path: Path, files: dict[str, Path]) -> None:
    with pytest.raises(SlideUnreadable):
        OpenSlideReader(SlideSource(tmp_path / "missing.svs"))
    bad = tmp_path / "bad.svs"
    data = files["svs"].read_bytes()
    bad.write_bytes(data[:200])
    with pytest.raises(SlideUnreadable):
        OpenSlideReader(SlideSource(bad))


@pytest.mark.parametrize("name", ["svs", "flat", "deflate"])
def test_read_region_is_openslide(files: dict[str, Path], name: str) -> None:
    with OpenSlideReader(SlideSource(files[name])) as reader:
        for level, lv in enumerate(reader.info.levels):
            ds = int(lv.downsample)
            for l_x, l_y, l_w, l_h in [(0, 0, lv.width, lv.height), (lv.width - 30, 17, 64, 40)]:
                got = np.asarray(reader.read_region(l_x * ds, l_y * ds, level, l_w, l_h))
                assert got.shape == (l_h, l_w, 3)
                assert np.array_equal(
                    got, reference(files[name], l_x * ds, l_y * ds, level, l_w, l_h)
                )
            edge = np.asarray(reader.read_region(lv.width * ds - 10 * ds, 0, level, 40, 20))
            assert (edge[:, 10:] == 255).all()  # beyond the right edge: white


def test_read_region_matches_tifffile(files: dict[str, Path]) -> None:
    """Two decoders of the same stored JPEG tiles agree (both libjpeg-turbo): identical."""
    with tifffile.TiffFile(files["svs"]) as tif:
        ref = tif.pages[0].asarray()
    with OpenSlideReader(SlideSource(files["svs"])) as reader:
        got = np.asarray(reader.read_region(0, 0, 0, 1100, 900))
    assert np.array_equal(got, ref)


def test_passthrough_tiles_decode_like_openslide(files: dict[str, Path]) -> None:
    with OpenSlideReader(SlideSource(files["svs"])) as reader:
        for level, lv in enumerate(reader.info.levels):
            ds = int(lv.downsample)
            full_cols, full_rows = lv.width // 256, lv.height // 256
            for col in range(full_cols):
                for row in range(full_rows):
                    tile = reader.read_encoded_tile(level, col, row)
                    assert tile is not None and tile.media_type == "image/jpeg"
                    assert jpeg.adobe_transform(tile.data) == 0
                    with Image.open(io.BytesIO(tile.data)) as im:
                        pixels = np.asarray(im.convert("RGB"))
                    expected = reader.read_region(col * 256 * ds, row * 256 * ds, level, 256, 256)
                    assert np.array_equal(pixels, np.asarray(expected))
            edge = reader.read_encoded_tile(level, -(-lv.width // 256) - 1, 0)
            assert edge is not None and (edge.width, edge.height) == (256, 256)
            with pytest.raises(TileNotFound):
                reader.read_encoded_tile(level, 99, 0)
        with pytest.raises(TileNotFound):
            reader.read_encoded_tile(5, 0, 0)


def test_no_passthrough_for_deflate(files: dict[str, Path]) -> None:
    with OpenSlideReader(SlideSource(files["deflate"])) as reader:
        assert reader.read_encoded_tile(0, 0, 0) is None


def test_associated(files: dict[str, Path]) -> None:
    with OpenSlideReader(SlideSource(files["svs"])) as reader:
        label = reader.associated("label")
        assert label.mode == "RGB" and label.size == (200, 120)
        assert reader.associated("macro").size == (400, 150)
        with pytest.raises(AssociatedImageNotFound):
            reader.associated("nope")


def corrupt_tile(src: Path, dst: Path, index: int) -> None:
    shutil.copy(src, dst)
    with tifffile.TiffFile(src) as tif:
        offset = tif.pages[0].dataoffsets[index]
        count = tif.pages[0].databytecounts[index]
    with dst.open("r+b") as f:
        f.seek(offset)
        f.write(b"\x00" * count)


def test_corrupt_tile_fails_only_its_own_request(files: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.svs"
    corrupt_tile(files["svs"], bad, index=0)
    with OpenSlideReader(SlideSource(bad)) as reader:
        good = np.asarray(reader.read_region(512, 512, 0, 100, 100))
        for _ in range(3):
            with pytest.raises(TileUnreadable):
                reader.read_region(0, 0, 0, 100, 100)
            # the handle went into OpenSlide's error state; the reader replaced it
            assert np.array_equal(np.asarray(reader.read_region(512, 512, 0, 100, 100)), good)
        with pytest.raises(TileUnreadable):
            reader.read_encoded_tile(0, 0, 0)
        assert reader.read_encoded_tile(0, 1, 1) is not None


def test_corrupt_tile_under_concurrency(files: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad2.svs"
    corrupt_tile(files["svs"], bad, index=0)
    with OpenSlideReader(SlideSource(bad)) as reader:
        good = np.asarray(reader.read_region(512, 256, 0, 200, 200))
        errors: list[str] = []

        def work(i: int) -> None:
            for _ in range(15):
                if i % 3 == 0:
                    try:
                        reader.read_region(0, 0, 0, 64, 64)
                        errors.append("corrupt tile read")
                    except TileUnreadable:
                        pass
                else:
                    try:
                        got = np.asarray(reader.read_region(512, 256, 0, 200, 200))
                    except Exception as exc:
                        errors.append(repr(exc))
                        continue
                    if not np.array_equal(got, good):
                        errors.append("wrong pixels")

        threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[:5]


def test_close(files: dict[str, Path]) -> None:
    reader = OpenSlideReader(SlideSource(files["svs"]))
    assert reader.read_encoded_tile(0, 0, 0) is not None
    reader.close()
    reader.close()
    with pytest.raises(SlideUnreadable):
        reader.read_region(0, 0, 0, 10, 10)
    with pytest.raises(SlideUnreadable):
        reader.read_encoded_tile(0, 0, 0)


def test_stored_tiles_are_built_at_open(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The passthrough path is ready when the reader is: no tifffile parse on the first tile."""
    from slideserver.readers import openslide as module
    from slideserver.readers.tiff.reader import TiffReader

    built: list[Path] = []
    from slideserver.readers.passthrough import StoredTiles as real

    def counting(path: Path, sizes: list[tuple[int, int]]) -> object:
        built.append(path)
        return real(path, sizes)

    monkeypatch.setattr(module, "StoredTiles", counting)
    with OpenSlideReader(SlideSource(files["svs"])) as reader:
        assert built == [files["svs"]]
        tile = reader.read_encoded_tile(0, 1, 1)
        assert built == [files["svs"]]
        with TiffReader(SlideSource(files["svs"])) as tiff_reader:
            same = tiff_reader.read_encoded_tile(0, 1, 1)
        assert tile is not None and same is not None and tile.data == same.data
