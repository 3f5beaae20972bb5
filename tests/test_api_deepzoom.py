"""Deep Zoom over HTTP: grid, passthrough, rendered levels against an independent reference."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import openslide
import pytest
import tifffile
from numpy.typing import NDArray
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image

from tests.helpers import ALL_SAMPLES, DICOM, GENERIC_TIFF, OME_TIFF, SVS, decode, slide_id

DZ_NS = "{http://schemas.microsoft.com/deepzoom/2008}"


def dzi(client: Any, sid: str) -> tuple[int, int, int, int]:
    """Return (tile size, overlap, width, height) from the descriptor."""
    root = ET.fromstring(client.get(f"/dz/{sid}.dzi").text)
    size = root.find(f"{DZ_NS}Size")
    assert size is not None
    return (
        int(root.attrib["TileSize"]),
        int(root.attrib["Overlap"]),
        int(size.attrib["Width"]),
        int(size.attrib["Height"]),
    )


def reference_tile(
    path: Path, name: str, z: int, col: int, row: int, tile: int, width: int, height: int
) -> NDArray[np.int16]:
    """Render a Deep Zoom tile with an independent library for the same grid."""
    if name in (SVS, GENERIC_TIFF):
        with openslide.OpenSlide(path) as osr:
            dz = DeepZoomGenerator(osr, tile_size=tile, overlap=0, limit_bounds=False)
            return np.asarray(dz.get_tile(z, (col, row)).convert("RGB"), dtype=np.int16)
    # OME-TIFF (tifffile) and DICOM (wsidicom): crop the finest level, resize like deepzoom.py.
    z_count = math.ceil(math.log2(max(width, height))) + 1
    down = 2 ** (z_count - 1 - z)
    z_w, z_h = math.ceil(width / down), math.ceil(height / down)
    z_x0, z_y0 = col * tile, row * tile
    z_x1, z_y1 = min(z_w, z_x0 + tile), min(z_h, z_y0 + tile)
    l0 = (z_x0 * down, z_y0 * down, min(z_x1 * down, width), min(z_y1 * down, height))
    if name == OME_TIFF:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            level = 0
            for i, lv in enumerate(series.levels):
                if width / lv.shape[1] <= down * 1.01:
                    level = i
            arr = series.levels[level].asarray()
            ds = width / arr.shape[1]
            crop = arr[
                int(l0[1] / ds) : math.ceil(l0[3] / ds), int(l0[0] / ds) : math.ceil(l0[2] / ds)
            ]
            image = Image.fromarray(crop[..., :3])
    else:
        from wsidicom import WsiDicom

        with WsiDicom.open(path) as slide:
            image = slide.read_region((l0[0], l0[1]), 0, (l0[2] - l0[0], l0[3] - l0[1]))
    image = image.convert("RGB").resize((z_x1 - z_x0, z_y1 - z_y0), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.int16)


def test_svs_grid_uses_native_tiles_without_overlap(client: Any) -> None:
    tile, overlap, width, height = dzi(client, slide_id(client, SVS))
    assert (tile, overlap) == (256, 0)
    assert (width, height) == (8192, 6144)


def test_full_resolution_tile_is_the_stored_jpeg(client: Any, samples_dir: dict[str, Path]) -> None:
    sid = slide_id(client, SVS)
    _, _, width, height = dzi(client, sid)
    top = math.ceil(math.log2(max(width, height)))
    response = client.get(f"/dz/{sid}_files/{top}/3_2.jpeg")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["x-tile-source"] == "passthrough"
    # The Adobe marker tells browsers the stream is RGB, as Aperio stores it.
    assert b"Adobe" in response.content[:400]
    with openslide.OpenSlide(samples_dir[SVS]) as osr:
        expected = np.asarray(osr.read_region((768, 512), 0, (256, 256)).convert("RGB"))
    assert np.array_equal(decode(response.content), expected.astype(np.int16))


def test_level_without_stored_copy_is_rendered(client: Any) -> None:
    sid = slide_id(client, SVS)
    response = client.get(f"/dz/{sid}_files/12/1_1.jpeg")
    assert response.status_code == 200
    assert response.headers["x-tile-source"] in ("render", "cache")


@pytest.mark.parametrize("name", ALL_SAMPLES)
@pytest.mark.parametrize("which", ["top", "top-1", "top-3", "edge", "tiny"])
def test_tiles_match_the_reference_for_the_same_grid(
    client: Any, samples_dir: dict[str, Path], name: str, which: str
) -> None:
    sid = slide_id(client, name)
    tile, overlap, width, height = dzi(client, sid)
    assert overlap == 0
    top = math.ceil(math.log2(max(width, height)))
    z = {"top": top, "top-1": top - 1, "top-3": top - 3, "edge": top - 1, "tiny": 6}[which]
    down = 2 ** (top - z)
    cols = math.ceil(math.ceil(width / down) / tile)
    rows = math.ceil(math.ceil(height / down) / tile)
    col, row = (cols - 1, rows - 1) if which == "edge" else (min(1, cols - 1), min(1, rows - 1))
    response = client.get(f"/dz/{sid}_files/{z}/{col}_{row}.jpeg")
    assert response.status_code == 200, response.text
    got = decode(response.content)
    expected = reference_tile(samples_dir[name], name, z, col, row, tile, width, height)
    assert got.shape == expected.shape
    diff = np.abs(got - expected)
    # JPEG re-encoding and resampling differ slightly; structure must not.
    assert diff.mean() < 6, (name, which, diff.mean())
    assert np.percentile(diff, 99) < 60, (name, which, np.percentile(diff, 99))


@pytest.mark.parametrize(("fmt", "media_type"), [("png", "image/png"), ("webp", "image/webp")])
def test_tiles_come_in_png_and_webp(client: Any, fmt: str, media_type: str) -> None:
    sid = slide_id(client, GENERIC_TIFF)
    response = client.get(f"/dz/{sid}_files/10/0_0.{fmt}")
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert decode(response.content).shape[2] == 3


def test_tile_carries_a_strong_etag_and_answers_304(client: Any) -> None:
    sid = slide_id(client, SVS)
    url = f"/dz/{sid}_files/11/1_1.jpeg"
    first = client.get(url)
    etag = first.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert "immutable" in first.headers["cache-control"]
    again = client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""


def test_repeated_rendered_tile_comes_from_the_cache(client: Any) -> None:
    sid = slide_id(client, OME_TIFF)
    url = f"/dz/{sid}_files/9/0_0.jpeg"
    first = client.get(url)
    second = client.get(url)
    assert second.headers["x-tile-source"] == "cache"
    assert first.content == second.content


def test_dicom_full_resolution_tile_passes_through(client: Any) -> None:
    sid = slide_id(client, DICOM)
    _, _, width, height = dzi(client, sid)
    top = math.ceil(math.log2(max(width, height)))
    response = client.get(f"/dz/{sid}_files/{top}/0_0.jpeg")
    assert response.status_code == 200
    assert response.headers["x-tile-source"] == "passthrough"


def test_stored_tiles_not_in_memory_are_read_by_a_worker_thread_alike(
    samples_dir: dict[str, Path], tmp_path: Path
) -> None:
    """The event loop answers page-cached tiles itself; the rest wait in a thread, same bytes."""
    import os
    import shutil

    from starlette.testclient import TestClient

    from slideserver.api.app import create_app
    from slideserver.settings import Settings

    shutil.copy(samples_dir[SVS], tmp_path / SVS)
    settings = Settings(roots=(tmp_path,), database_url=f"sqlite:///{tmp_path / 'c.db'}")
    with TestClient(create_app(settings)) as client:
        sid = slide_id(client, SVS)
        top = math.ceil(math.log2(max(dzi(client, sid)[2:])))
        warm = client.get(f"/dz/{sid}_files/{top}/0_0.jpeg")  # opens the slide
        fd = os.open(tmp_path / SVS, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        cold = client.get(f"/dz/{sid}_files/{top}/1_0.jpeg")
        cached = client.get(f"/dz/{sid}_files/{top}/2_0.jpeg")
        again = client.get(f"/dz/{sid}_files/{top}/1_0.jpeg")
    assert warm.headers["x-tile-source"] == cold.headers["x-tile-source"] == "passthrough"
    assert cached.headers["x-tile-source"] == "passthrough"
    assert again.headers["x-tile-source"] == "cache" and again.content == cold.content
    with openslide.OpenSlide(tmp_path / SVS) as osr:
        expected = np.asarray(osr.read_region((256, 0), 0, (256, 256)).convert("RGB"))
    assert np.array_equal(decode(cold.content), expected.astype(np.int16))
