"""One set of checks for every reader and every slide format, against an independent reference.

Cases: each sample slide (``slideserver.samples``) with the reader the registry picks, plus
TiffReader on the SVS and generic TIFF (its fallback role), plus small local TIFFs.

References: OpenSlide for what it reads (composited on white), tifffile's whole-level decode for
OME-TIFF and SubIFD pyramids, wsidicom for DICOM. Stored tiles are compared with the reference
library's decode of the same stored tile.

Pixel metric: ``max |a - b|`` and ``mean |a - b|`` over the RGB samples of a region. Regions must be
within JPEG tolerance: mean <= 1.0 and max <= 16 (decoders may round IDCT and upsampling
differently). Passthrough tiles must be identical (max 0) to the reference decode of the stored
tile. Areas outside the slide must be exactly white.
"""

from __future__ import annotations

import functools
import io
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openslide
import pytest
import tifffile
from PIL import Image

from slideserver.errors import SlideServerError, SlideUnreadable, TileUnreadable
from slideserver.models import SlideInfo, SlideSource
from slideserver.readers.base import SlideReader
from slideserver.readers.openslide import OpenSlideReader
from slideserver.readers.registry import ReaderRegistry
from slideserver.readers.tiff.reader import TiffReader
from tests._reader_fixtures import write_reader_files

MEAN_TOLERANCE = 1.0
MAX_TOLERANCE = 16

SVS = "S24-01234_A1_HE"
GENERIC = "S24-01234_A2_KI67"
OME = "S24-05678_B1_HE"
DICOM = "S24-05678_B2_PAS"


def dicom_reader() -> type[SlideReader] | None:
    try:
        from slideserver.readers.dicom import DicomReader
    except ImportError:
        return None
    return DicomReader


def reader_class(name: str) -> type[SlideReader]:
    if name == "openslide":
        return OpenSlideReader
    if name == "tiff":
        return TiffReader
    cls = dicom_reader()
    if cls is None:
        pytest.skip("slideserver.readers.dicom is missing: no DICOM reader to check")
    return cls


def all_readers() -> list[type[SlideReader]]:
    readers: list[type[SlideReader]] = [OpenSlideReader, TiffReader]
    cls = dicom_reader()
    if cls is not None:
        readers.append(cls)
    return readers


@dataclass(frozen=True)
class Case:
    id: str
    source: str
    """``local:<name>`` (written here) or ``sample:<name>`` (slideserver.samples)."""
    reader: str
    reference: str
    passthrough: bool
    """Whether stored tiles of every level must pass through."""


CASES = [
    Case("local-svs-openslide", "local:svs", "openslide", "openslide", True),
    Case("local-svs-tiff", "local:svs", "tiff", "openslide", True),
    Case("local-generic-openslide", "local:flat", "openslide", "openslide", True),
    Case("local-deflate-openslide", "local:deflate", "openslide", "openslide", False),
    Case("local-ome-tiff", "local:ome", "tiff", "tifffile", True),
    Case("local-subifd-tiff", "local:subifd", "tiff", "tifffile", True),
    Case("sample-svs-openslide", f"sample:{SVS}", "openslide", "openslide", True),
    Case("sample-svs-tiff", f"sample:{SVS}", "tiff", "openslide", True),
    Case("sample-generic-openslide", f"sample:{GENERIC}", "openslide", "openslide", True),
    Case("sample-generic-tiff", f"sample:{GENERIC}", "tiff", "openslide", True),
    Case("sample-ome-tiff", f"sample:{OME}", "tiff", "tifffile", True),
    Case("sample-dicom", f"sample:{DICOM}", "dicom", "wsidicom", False),
]


@pytest.fixture(scope="module")
def local_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_reader_files(tmp_path_factory.mktemp("conformance"))


def resolve(request: pytest.FixtureRequest, case: Case) -> Path:
    kind, name = case.source.split(":", 1)
    if kind == "local":
        files: dict[str, Path] = request.getfixturevalue("local_files")
        return files[name]
    try:
        from slideserver.samples import write_samples  # noqa: F401
    except ImportError:
        pytest.skip("slideserver.samples.write_samples is not available yet")
    samples: dict[str, Path] = request.getfixturevalue("samples_dir")
    # keyed by catalog name; tolerate keys that are file names (with their extension)
    for key, path in samples.items():
        if name in (key, path.name) or path.name.startswith(f"{name}."):
            return path
    pytest.skip(f"sample {name} was not written (its writer is unavailable)")


def source_of(path: Path) -> SlideSource:
    if path.is_dir():
        return SlideSource(path, files=tuple(sorted(path.glob("*.dcm"))))
    return SlideSource(path)


# --- references ---------------------------------------------------------------------------------


class Reference:
    """Pixels of one level, in that level's coordinates, by an independent library."""

    def region(self, level_size: tuple[int, int], l_x: int, l_y: int, w: int, h: int) -> Any:
        raise NotImplementedError

    def stored_tile(self, level_size: tuple[int, int], col: int, row: int) -> np.ndarray | None:
        """The library's decode of the stored tile; None when it cannot say."""
        return None

    def close(self) -> None:
        pass


def _white_canvas(w: int, h: int) -> np.ndarray:
    return np.full((h, w, 3), 255, np.uint8)


def _paste(canvas: np.ndarray, part: np.ndarray, x: int, y: int) -> np.ndarray:
    canvas[y : y + part.shape[0], x : x + part.shape[1]] = part
    return canvas


class TiffTiles(Reference):
    """tifffile: stored tiles decoded by the page's own decoder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tif = tifffile.TiffFile(path)
        pages: list[Any] = list(self.tif.pages)
        for series in self.tif.series:
            pages += [lvl.pages[0] for lvl in series.levels]
        self.pages: dict[tuple[int, int], Any] = {}
        for page in pages:
            key = (int(page.imagewidth), int(page.imagelength))
            if page.is_tiled and key not in self.pages:
                self.pages[key] = page

    def stored_tile(self, level_size: tuple[int, int], col: int, row: int) -> np.ndarray | None:
        page = self.pages.get(level_size)
        if page is None:
            return None
        cols = -(-page.imagewidth // page.tilewidth)
        index = row * cols + col
        fh = self.tif.filehandle
        fh.seek(page.dataoffsets[index])
        data = fh.read(page.databytecounts[index])
        arr, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
        tile: np.ndarray = np.asarray(arr)[0]
        return tile

    def close(self) -> None:
        self.tif.close()


class TifffileRef(TiffTiles):
    """tifffile's decode of whole levels of the main series (small slides only)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        main = next(s for s in self.tif.series if s.name.lower() not in {"label", "macro"})
        self.levels = {(int(lvl.shape[1]), int(lvl.shape[0])): lvl for lvl in main.levels}

    @functools.lru_cache(maxsize=8)  # noqa: B019 - one instance per test, freed with it
    def array(self, level_size: tuple[int, int]) -> np.ndarray:
        return np.asarray(self.levels[level_size].asarray())

    def region(self, level_size: tuple[int, int], l_x: int, l_y: int, w: int, h: int) -> Any:
        arr = self.array(level_size)
        x0, y0 = max(l_x, 0), max(l_y, 0)
        part = arr[y0 : l_y + h, x0 : l_x + w]
        return _paste(_white_canvas(w, h), part, x0 - l_x, y0 - l_y)


class OpenSlideRef(TiffTiles):
    """OpenSlide's read_region, composited on white; tifffile for stored tiles."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.slide = openslide.OpenSlide(str(path))
        self.levels = {
            (int(w), int(h)): (i, self.slide.level_downsamples[i])
            for i, (w, h) in enumerate(self.slide.level_dimensions)
        }

    def region(self, level_size: tuple[int, int], l_x: int, l_y: int, w: int, h: int) -> Any:
        level, ds = self.levels[level_size]
        rgba = self.slide.read_region((round(l_x * ds), round(l_y * ds)), level, (w, h))
        white = Image.new("RGB", rgba.size, (255, 255, 255))
        white.paste(rgba, mask=rgba.getchannel("A"))
        return np.asarray(white)

    def close(self) -> None:
        self.slide.close()
        super().close()


class WsidicomRef(Reference):
    """wsidicom's read_region and read_tile."""

    def __init__(self, path: Path) -> None:
        from wsidicom import WsiDicom

        self.wsi = WsiDicom.open(sorted(path.glob("*.dcm")))
        self.levels = {(lvl.size.width, lvl.size.height): lvl for lvl in self.wsi.levels}

    def region(self, level_size: tuple[int, int], l_x: int, l_y: int, w: int, h: int) -> Any:
        lvl = self.levels[level_size]
        x0, y0 = max(l_x, 0), max(l_y, 0)
        x1, y1 = min(l_x + w, level_size[0]), min(l_y + h, level_size[1])
        canvas = _white_canvas(w, h)
        if x1 <= x0 or y1 <= y0:
            return canvas
        img = self.wsi.read_region((x0, y0), lvl.level, (x1 - x0, y1 - y0)).convert("RGB")
        return _paste(canvas, np.asarray(img), x0 - l_x, y0 - l_y)

    def stored_tile(self, level_size: tuple[int, int], col: int, row: int) -> np.ndarray | None:
        lvl = self.levels[level_size]
        return np.asarray(self.wsi.read_tile(lvl.level, (col, row)).convert("RGB"))

    def close(self) -> None:
        self.wsi.close()


REFERENCES: dict[str, Callable[[Path], Reference]] = {
    "openslide": OpenSlideRef,
    "tifffile": TifffileRef,
    "wsidicom": WsidicomRef,
}


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def opened(request: pytest.FixtureRequest) -> Iterator[tuple[Case, SlideReader, Reference]]:
    case: Case = request.param
    cls = reader_class(case.reader)
    path = resolve(request, case)
    reader = cls(source_of(path))
    reference = REFERENCES[case.reference](path)
    try:
        yield case, reader, reference
    finally:
        reader.close()
        reference.close()


# --- checks -------------------------------------------------------------------------------------


def diff(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    d = np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16))
    return int(d.max()), float(d.mean())


def regions(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Top-left, interior, and straddling the right and bottom edges (l_x, l_y, w, h)."""
    return [
        (0, 0, min(256, width), min(200, height)),
        (width // 3, height // 2, 300, 150),
        (width - 100, height - 50, 200, 120),
    ]


def check_info(info: SlideInfo) -> None:
    assert info.format
    assert info.levels and info.levels[0].downsample == 1.0
    w0, h0 = info.width, info.height
    previous = None
    for lv in info.levels:
        assert lv.width > 0 and lv.height > 0
        if previous is not None:
            assert lv.width < previous.width and lv.height < previous.height
            assert lv.downsample > previous.downsample
        # the downsample reproduces the level size to within one pixel of rounding
        assert abs(w0 / lv.downsample - lv.width) <= 1 and abs(h0 / lv.downsample - lv.height) <= 1
        if lv.tile_width is not None:
            assert lv.tile_width > 0 and lv.tile_height is not None and lv.tile_height > 0
        previous = lv
    assert info.levels[0].tile_width is not None
    for mpp in (info.mpp_x, info.mpp_y):
        assert mpp is None or 0 < mpp < 50
    if info.mpp_x and info.mpp_y:
        assert info.mpp_x == pytest.approx(info.mpp_y, rel=0.05)
    assert set(info.associated) <= {"label", "macro", "thumbnail"}
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in info.properties.items())


def test_info(opened: tuple[Case, SlideReader, Reference]) -> None:
    case, reader, _ = opened
    check_info(reader.info)
    if case.source.startswith("sample:"):
        assert reader.info.mpp_x is not None
        if case.source != f"sample:{GENERIC}":  # the generic TIFF sample has no label
            assert {"label", "macro"} <= set(reader.info.associated)


def test_read_region_matches_reference(opened: tuple[Case, SlideReader, Reference]) -> None:
    _, reader, reference = opened
    for level, lv in enumerate(reader.info.levels):
        size = (lv.width, lv.height)
        for l_x, l_y, w, h in regions(lv.width, lv.height):
            l0_x, l0_y = round(l_x * lv.downsample), round(l_y * lv.downsample)
            got = np.asarray(reader.read_region(l0_x, l0_y, level, w, h))
            assert got.shape == (h, w, 3) and got.dtype == np.uint8
            expected = reference.region(size, l_x, l_y, w, h)
            worst, mean = diff(got, expected)
            assert mean <= MEAN_TOLERANCE and worst <= MAX_TOLERANCE, (level, l_x, l_y, worst, mean)
            # outside the slide: exactly white
            inside_w, inside_h = max(0, min(w, lv.width - l_x)), max(0, min(h, lv.height - l_y))
            assert (got[:, inside_w:] == 255).all() and (got[inside_h:, :] == 255).all()


def test_region_outside_is_white(opened: tuple[Case, SlideReader, Reference]) -> None:
    _, reader, _ = opened
    info = reader.info
    assert (np.asarray(reader.read_region(-4000, -4000, 0, 64, 64)) == 255).all()
    last = len(info.levels) - 1
    far = np.asarray(reader.read_region(info.width + 10, 0, last, 32, 32))
    assert (far == 255).all()


def test_encoded_tiles_decode_like_reference(opened: tuple[Case, SlideReader, Reference]) -> None:
    case, reader, reference = opened
    passed = 0
    for level, lv in enumerate(reader.info.levels):
        if lv.tile_width is None or lv.tile_height is None:
            continue
        cols, rows = -(-lv.width // lv.tile_width), -(-lv.height // lv.tile_height)
        for col, row in sorted({(0, 0), (cols // 2, rows // 2), (cols - 1, rows - 1)}):
            tile = reader.read_encoded_tile(level, col, row)
            if tile is None:
                assert not case.passthrough, (level, col, row)
                continue
            passed += 1
            assert tile.media_type == "image/jpeg"
            assert (tile.width, tile.height) == (lv.tile_width, lv.tile_height)
            with Image.open(io.BytesIO(tile.data)) as im:
                assert im.format == "JPEG" and im.size == (tile.width, tile.height)
                pixels = np.asarray(im.convert("RGB"))
            expected = reference.stored_tile((lv.width, lv.height), col, row)
            if expected is not None:
                eh, ew = (
                    min(expected.shape[0], pixels.shape[0]),
                    min(expected.shape[1], pixels.shape[1]),
                )
                assert np.array_equal(pixels[:eh, :ew], expected[:eh, :ew]), (level, col, row)
            # and the tile shows the slide: same pixels as the reference region
            w = min(lv.tile_width, lv.width - col * lv.tile_width)
            h = min(lv.tile_height, lv.height - row * lv.tile_height)
            region = reference.region(
                (lv.width, lv.height), col * lv.tile_width, row * lv.tile_height, w, h
            )
            worst, mean = diff(pixels[:h, :w], region)
            assert mean <= MEAN_TOLERANCE and worst <= MAX_TOLERANCE, (level, col, row, worst)
    if case.passthrough:
        assert passed > 0


def test_associated_images(opened: tuple[Case, SlideReader, Reference]) -> None:
    _, reader, _ = opened
    for name in reader.info.associated:
        image = reader.associated(name)
        assert image.mode == "RGB" and image.width > 0 and image.height > 0


# --- the registry -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reader", "fmt"),
    [
        (SVS, "openslide", "aperio"),
        (GENERIC, "openslide", "generic-tiff"),
        (OME, "tiff", "ome-tiff"),
        (DICOM, "dicom", "dicom"),
    ],
)
def test_registry_picks(request: pytest.FixtureRequest, name: str, reader: str, fmt: str) -> None:
    if reader == "dicom" and dicom_reader() is None:
        pytest.skip("slideserver.readers.dicom is missing")
    path = resolve(request, Case(name, f"sample:{name}", reader, "", False))
    found = ReaderRegistry(all_readers()).detect(source_of(path))
    assert found is not None
    assert (found[0].name, found[1]) == (reader, fmt)


# --- corrupt and truncated copies -----------------------------------------------------------------


def damaged_copies(path: Path, out: Path) -> Iterator[tuple[str, Path]]:
    """Truncated, zero-filled and garbage-headed copies of a slide file (or of a DICOM folder's
    largest file)."""
    rng = np.random.default_rng(7)
    for variant in ("truncate-50", "truncate-97", "zeros-middle", "garbage-header"):
        if path.is_dir():
            target = out / f"{variant}-{path.name}"
            shutil.copytree(path, target)
            victim = max(target.glob("*.dcm"), key=lambda p: p.stat().st_size)
        else:
            target = victim = out / f"{variant}-{path.name}"
            shutil.copy(path, target)
        data = bytearray(victim.read_bytes())
        n = len(data)
        if variant == "truncate-50":
            data = data[: n // 2]
        elif variant == "truncate-97":
            data = data[: n * 97 // 100]
        elif variant == "zeros-middle":
            data[n * 2 // 5 : n * 3 // 5] = bytes(n * 3 // 5 - n * 2 // 5)
        else:
            data[8:2048] = rng.integers(0, 256, 2040, dtype=np.uint8).tobytes()
        victim.write_bytes(bytes(data))
        yield variant, target


def exercise(reader: SlideReader) -> int:
    """Read a sample of everything; return how many reads failed with TileUnreadable."""
    failures = 0

    def attempt(fn: Callable[[], object]) -> None:
        nonlocal failures
        try:
            fn()
        except TileUnreadable:
            failures += 1

    info = reader.info
    for level, lv in enumerate(info.levels):
        tw, th = lv.tile_width or 256, lv.tile_height or 256
        cols, rows = -(-lv.width // tw), -(-lv.height // th)
        step = max(1, max(cols, rows) // 8)
        for row in range(0, rows, step):
            for col in range(0, cols, step):
                x, y = round(col * tw * lv.downsample), round(row * th * lv.downsample)
                attempt(functools.partial(reader.read_region, x, y, level, tw, th))
                attempt(functools.partial(reader.read_encoded_tile, level, col, row))
    for name in info.associated:
        attempt(functools.partial(reader.associated, name))
    return failures


@pytest.mark.parametrize("case", [c for c in CASES if c.id != "local-svs-tiff"], ids=lambda c: c.id)
def test_damaged_files_fail_cleanly(
    request: pytest.FixtureRequest, case: Case, tmp_path: Path
) -> None:
    cls = reader_class(case.reader)
    path = resolve(request, case)
    registry = ReaderRegistry(all_readers())
    for variant, damaged in damaged_copies(path, tmp_path):
        source = source_of(damaged)
        for candidate in registry.readers:
            assert candidate.detect(source) in (None,) or isinstance(candidate.detect(source), str)
        outcomes: list[str] = []
        for opener in (cls, registry.open):
            try:
                reader = opener(source)
            except SlideUnreadable:
                outcomes.append("unreadable at open")
                continue
            except SlideServerError as exc:  # pragma: no cover - the assertion explains
                pytest.fail(f"{variant}: {type(exc).__name__} at open, expected SlideUnreadable")
            try:
                failures = exercise(reader)
            except SlideServerError as exc:
                pytest.fail(f"{variant}: {type(exc).__name__} at read: {exc.detail}")
            finally:
                reader.close()
            outcomes.append(f"{failures} unreadable tiles")
        if variant == "truncate-50":
            assert outcomes != ["0 unreadable tiles"] * 2, (variant, outcomes)
