"""Real TIFFs other projects test with, served with the pixels of the library that reads them.

OpenSlide reads large_image's files (Orientation 0 and 6, grey+alpha): slideserver serves them
with OpenSlide's pixels, stored tiles included. tifffile reads qupath's strip TIFF and OME-TIFFs
(RGB, palette channels) and libvips' int8 z-series: slideserver serves tifffile's pixels,
fluorescence channels composited (each channel's palette, or its colour over its data range).
An Akoya/PerkinElmer ``.qptiff`` (none is public: written here) is found and served too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openslide
import pytest
import tifffile

from slideserver.catalog.base import SlideQuery
from slideserver.catalog.sql import SqlCatalog
from slideserver.models import SlideSource
from slideserver.readers.base import SlideReader
from slideserver.readers.openslide import OpenSlideReader
from slideserver.readers.registry import default_registry
from slideserver.readers.tiff.reader import TiffReader
from tests.helpers import decode, slide_id
from tests.realworld import copy_slides

OPENSLIDE_FILES = {
    "large_image/small_la.tiff": "small_la.tiff",
    "large_image/test_orient0.tif": "test_orient0.tif",
    "large_image/test_orient6.tif": "test_orient6.tif",
}
TIFFFILE_FILES = {
    "qupath/cells.tif": "cells.tif",
    "qupath/cells.ome.tif": "cells.ome.tif",
    "qupath/cells-2c.ome.tif": "cells-2c.ome.tif",
    "libvips/multi-channel-z-series.ome.tif": "multi-channel-z-series.ome.tif",
}
QPTIFF = "generated.qptiff"
QPI_CHANNELS = (("DAPI", (0, 0, 255)), ("FITC", (0, 255, 0)), ("Cy5", (255, 0, 0)))


def qpi_description(kind: str, name: str = "", colour: tuple[int, int, int] | None = None) -> str:
    colour_xml = f"<Color>{','.join(map(str, colour))}</Color>" if colour else ""
    return (
        '<?xml version="1.0" encoding="utf-8"?><PerkinElmer-QPI-ImageDescription>'
        f"<DescriptionVersion>2</DescriptionVersion><ImageType>{kind}</ImageType>"
        f"<Name>{name}</Name>{colour_xml}</PerkinElmer-QPI-ImageDescription>"
    )


def qpi_channels() -> np.ndarray:
    """The full-resolution channels (C, Y, X) of the written QPI file."""
    return np.random.default_rng(12).integers(3, 180, (3, 600, 800)).astype(np.uint8)


def write_qptiff(path: Path) -> None:
    """A QPI-like file: channel pages of each level in the main IFD chain, PerkinElmer XML.

    Order as Akoya writes it: full-resolution channels, thumbnail, reduced levels, overview
    (macro), label.
    """
    channels = qpi_channels()
    opts: dict[str, Any] = {"software": "PerkinElmer-QPI", "metadata": None}
    with tifffile.TiffWriter(path) as writer:

        def level(kind: str, factor: int) -> None:
            for (name, colour), plane in zip(QPI_CHANNELS, channels, strict=True):
                writer.write(
                    plane[::factor, ::factor],
                    tile=(256, 256),
                    compression="zlib",
                    description=qpi_description(kind, name, colour),
                    **opts,
                )

        def flat(kind: str, shape: tuple[int, int], value: int) -> None:
            writer.write(
                np.full((*shape, 3), value, np.uint8),
                photometric="rgb",
                description=qpi_description(kind),
                **opts,
            )

        level("FullResolution", 1)
        flat("Thumbnail", (60, 80), 90)
        level("ReducedResolution", 2)
        level("ReducedResolution", 4)
        flat("Overview", (50, 150), 180)
        flat("Label", (40, 40), 60)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = copy_slides({**OPENSLIDE_FILES, **TIFFFILE_FILES}, tmp_path_factory.mktemp("tiff"))
    write_qptiff(folder / QPTIFF)
    return folder


@pytest.fixture(scope="module")
def catalog(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqlCatalog]:
    db = tmp_path_factory.mktemp("db") / "catalog.db"
    cat = SqlCatalog(f"sqlite:///{db}", [root], default_registry())
    cat.scan()
    yield cat
    cat.close()


def open_reader(path: Path) -> SlideReader:
    return default_registry().open(SlideSource(path))


def composite(planes: list[np.ndarray], colours: list[tuple[int, int, int]]) -> np.ndarray:
    """The expected rendering: each plane over its own data range, in its colour, added up."""
    acc = np.zeros((*planes[0].shape, 3), np.float64)
    for plane, colour in zip(planes, colours, strict=True):
        low, high = float(plane.min()), float(plane.max())
        level = np.clip((plane.astype(np.float64) - low) / (high - low), 0.0, 1.0)
        acc += level[..., None] * np.asarray(colour, np.float64)
    return np.clip(np.floor(acc + 0.5), 0, 255).astype(np.uint8)


def tifffile_rgb(path: Path) -> np.ndarray:
    """tifffile's whole decode of level 0, as the RGB it stands for (references for tifffile)."""
    name = path.name
    with tifffile.TiffFile(path) as tif:
        data = tif.series[0].asarray()
        if name == "cells.ome.tif":  # planar RGB: (S, Y, X)
            return np.moveaxis(data, 0, -1)
        if name == "cells-2c.ome.tif":  # two palette channels, each its own palette
            out = np.zeros((*data.shape[1:], 3), np.uint32)
            for page, plane in zip(tif.pages, data, strict=True):
                lut = page.aspage().colormap
                assert lut is not None  # palette pages carry one
                table = np.asarray(lut >> 8 if lut.max() > 255 else lut)
                out += tifffile.tifffile.apply_colormap(plane, table)
            return np.clip(out, 0, 255).astype(np.uint8)
        if name == "multi-channel-z-series.ome.tif":  # (C, Z, Y, X) int8: first Z plane
            planes = [data[c, 0] for c in range(data.shape[0])]
            return composite(planes, [(0, 0, 255), (0, 255, 0), (255, 0, 0)])
        return np.asarray(data)


def openslide_rgb(path: Path, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
    with openslide.OpenSlide(path) as osr:
        ds = osr.level_downsamples[level]
        rgba = osr.read_region((int(x * ds), int(y * ds)), level, (w, h))
    white = np.full((h, w, 3), 255.0)
    arr = np.asarray(rgba, np.float64)
    alpha = arr[..., 3:] / 255.0
    return np.asarray(np.floor(arr[..., :3] * alpha + white * (1 - alpha) + 0.5), np.uint8)


def regions(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """The whole level, an inner box, and a box hanging over the bottom-right corner."""
    return [
        (0, 0, width, height),
        (width // 3, height // 4, max(1, width // 2), max(1, height // 2)),
        (width // 2, height // 2, width, height),
    ]


@pytest.mark.parametrize(
    "name", sorted([*OPENSLIDE_FILES.values(), *TIFFFILE_FILES.values(), QPTIFF])
)
def test_each_real_file_is_listed_ok(catalog: SqlCatalog, name: str) -> None:
    records = {r.name: r for r in catalog.search(SlideQuery(limit=100)).items}
    assert records[name].status == "ok", records[name].error


@pytest.mark.parametrize("name", sorted(OPENSLIDE_FILES.values()))
def test_files_openslide_reads_have_its_pixels_at_every_level(root: Path, name: str) -> None:
    path = root / name
    with open_reader(path) as reader:
        assert isinstance(reader, OpenSlideReader)
        for index, level in enumerate(reader.info.levels):
            for x, y, w, h in regions(level.width, level.height):
                ds = level.downsample
                got = np.asarray(reader.read_region(round(x * ds), round(y * ds), index, w, h))
                assert np.array_equal(got, openslide_rgb(path, index, x, y, w, h)), (index, x, y)


def test_grey_with_an_undeclared_extra_sample_is_grey(root: Path) -> None:
    """small_la.tiff: two samples, no ExtraSamples tag: grey 0 and 255, as OpenSlide shows."""
    with open_reader(root / "small_la.tiff") as reader:
        got = np.asarray(reader.read_region(0, 0, 0, 2, 1))
    assert got.tolist() == [[[0, 0, 0], [255, 255, 255]]]


def test_orientation_six_tiles_are_rendered_not_passed_through(root: Path) -> None:
    """libtiff (inside OpenSlide) mirrors each tile of test_orient6.tif; the stored tiles are not
    mirrored, so they must not go out as they are."""
    with open_reader(root / "test_orient6.tif") as reader:
        assert all(
            reader.read_encoded_tile(i, 0, 0) is None for i in range(len(reader.info.levels))
        )


def test_invalid_orientation_warns_no_more(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tifffile")
    with open_reader(root / "test_orient0.tif") as reader:
        reader.read_region(0, 0, 0, 16, 16)
    assert not [r for r in caplog.records if "ORIENTATION" in r.getMessage()]


def test_other_tifffile_warnings_still_get_through(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tifffile")
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage")
    TiffReader.detect(SlideSource(tmp_path / "bad.tif"))
    assert [r for r in caplog.records if r.name == "tifffile"]


@pytest.mark.parametrize("name", sorted(TIFFFILE_FILES.values()))
def test_files_tifffile_reads_have_its_pixels(root: Path, name: str) -> None:
    path = root / name
    reference = tifffile_rgb(path)
    with open_reader(path) as reader:
        assert isinstance(reader, TiffReader)
        level = reader.info.levels[0]
        assert (level.width, level.height) == (reference.shape[1], reference.shape[0])
        for x, y, w, h in regions(level.width, level.height):
            got = np.asarray(reader.read_region(x, y, 0, w, h))
            expected = np.full((h, w, 3), 255, np.uint8)
            part = reference[y : y + h, x : x + w]
            expected[: part.shape[0], : part.shape[1]] = part
            assert np.array_equal(got, expected), (x, y, w, h)


def test_palette_channels_take_their_palette_colours(root: Path) -> None:
    """cells-2c.ome.tif: channel 0's palette is a green ramp, channel 1's a blue one."""
    data = tifffile.imread(root / "cells-2c.ome.tif")
    with open_reader(root / "cells-2c.ome.tif") as reader:
        got = np.asarray(reader.read_region(0, 0, 0, 93, 131))
    assert not got[..., 0].any()
    assert np.array_equal(got[..., 1], data[0]) and np.array_equal(got[..., 2], data[1])


def test_a_qptiff_is_a_pyramid_of_composited_channels(root: Path) -> None:
    channels = qpi_channels()
    colours = [colour for _, colour in QPI_CHANNELS]
    with open_reader(root / QPTIFF) as reader:
        info = reader.info
        assert (info.format, info.vendor) == ("qptiff", "perkinelmer")
        assert [(lv.width, lv.height) for lv in info.levels] == [(800, 600), (400, 300), (200, 150)]
        assert info.associated == ("label", "macro", "thumbnail")
        assert info.properties["slideserver.channel[0].name"] == "DAPI"
        smallest = [c[::4, ::4] for c in channels]  # windows come from the smallest level
        for index, factor in enumerate((1, 2, 4)):
            planes = [c[::factor, ::factor] for c in channels]
            acc = np.zeros((*planes[0].shape, 3), np.float64)
            for plane, small, colour in zip(planes, smallest, colours, strict=True):
                low, high = float(small.min()), float(small.max())
                value = np.clip((plane - low) / (high - low), 0, 1)
                acc += value[..., None] * np.asarray(colour, np.float64)
            expected = np.clip(np.floor(acc + 0.5), 0, 255).astype(np.uint8)
            level = info.levels[index]
            got = np.asarray(reader.read_region(0, 0, index, level.width, level.height), np.uint8)
            assert np.array_equal(got, expected), index
        assert np.asarray(reader.associated("label")).max() == 60


@pytest.fixture(scope="module")
def client(root: Path) -> Iterator[Any]:
    from starlette.testclient import TestClient

    from slideserver.api.app import create_app
    from slideserver.settings import Settings

    with TestClient(create_app(Settings(roots=(root,))), raise_server_exceptions=False) as c:
        yield c


def test_a_strip_tiff_is_served_as_deep_zoom_tiles(client: Any, root: Path) -> None:
    sid = slide_id(client, "cells.tif")
    response = client.get(f"/dz/{sid}_files/8/0_0.png")  # 2**8 >= 131: the full-size level
    assert response.status_code == 200, response.text
    assert np.array_equal(decode(response.content), tifffile.imread(root / "cells.tif"))


def test_a_strip_tiff_is_served_as_iiif_regions(client: Any, root: Path) -> None:
    sid = slide_id(client, "cells.tif")
    response = client.get(f"/iiif/3/{sid}/10,20,30,40/max/0/default.png")
    assert response.status_code == 200, response.text
    expected = tifffile.imread(root / "cells.tif")[20:60, 10:40]
    assert np.array_equal(decode(response.content), expected)
