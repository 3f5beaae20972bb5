"""DICOMweb over an Aperio SVS whose JPEG 2000 tiles code YCbCr samples (compression 33003).

Aperio turns RGB into YCbCr itself and codes the three components with the codestream's colour
transform off. DICOM has no WSI label for that (``YBR_FULL`` is outside the WSI IOD's values), but
the same coded data with the transform flag on is an exact ``YBR_ICT`` codestream: the frames are
the stored codestreams with that one byte set, and they decode to OpenSlide's pixels. A level whose
codestreams cannot be relabelled exactly (the reversible wavelet here) is offered uncompressed.
A DICOM file of such codestreams, labelled ``YBR_FULL`` (as wsidicomizer writes them), goes out
relabelled the same way.
The files are written by the test with tifffile and OpenJPEG (imagecodecs), as Aperio lays them out.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import openslide
import pydicom
import pytest
import tifffile
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian
from starlette.testclient import TestClient
from wsidicom import WsiDicom

from slideserver.api.app import create_app
from slideserver.codecs.jpeg2000 import main_header
from slideserver.samples.tiff import AperioInfo, aperio_description
from slideserver.settings import Settings
from tests.dicom_wsi import LEVELS, write_slide
from tests.dicom_wsi import WIDTH as DICOM_WIDTH
from tests.test_dicomweb_api import parts, value
from tests.test_dicomweb_jpeg2000 import base_level, gradient, stored_frame, stored_tile

WIDTH, HEIGHT, TILE = 1024, 768, 256
LOSSLESS_WIDTH = 768


def write_ycbcr_svs(path: Path, *, reversible: bool = False, width: int = WIDTH) -> Path:
    """Two levels of 256-pixel JPEG 2000 tiles of JFIF YCbCr samples, transform off (33003)."""
    rgb = gradient()[:, :width]
    ycbcr = np.asarray(Image.fromarray(rgb).convert("YCbCr"))
    info = AperioInfo(filename="j2k-ycc", barcode="J2K-2", mpp=0.5)
    options = {"level": 80, "mct": False, "reversible": reversible}
    if reversible:
        options.pop("level")
    with tifffile.TiffWriter(path) as tif:
        for index, step in enumerate((1, 4)):
            level = np.ascontiguousarray(ycbcr[::step, ::step])
            size = None if index == 0 else (level.shape[1], level.shape[0])
            tif.write(
                level,
                tile=(TILE, TILE),
                photometric="rgb",
                compression=33003,
                compressionargs=options,
                description=aperio_description(info, width, HEIGHT, level=size),
                metadata=None,
            )
    return path


@pytest.fixture(scope="module")
def svs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("j2k-ycc")
    (root / "lossless").mkdir()
    write_ycbcr_svs(root / "lossless" / "S24-09101_A1_HE.svs", reversible=True, width=768)
    return write_ycbcr_svs(root / "S24-09100_A1_HE.svs")


def write_ycbcr_dicom(folder: Path) -> list[np.ndarray[Any, np.dtype[np.uint8]]]:
    """The sample DICOM WSI series with its pyramid's frames JPEG 2000 coded from YCbCr samples
    with the transform off, labelled ``YBR_FULL`` (as wsidicomizer converts Aperio 33003);
    return level 0's frames as they were before coding."""
    write_slide(folder)
    originals = []
    for index, name in enumerate(LEVELS):
        path = folder / name
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array.reshape(-1, int(ds.Rows), int(ds.Columns), 3)
        if index == 0:
            originals = list(pixels)
        frames = [
            bytes(
                imagecodecs.jpeg2k_encode(
                    np.asarray(Image.fromarray(f).convert("YCbCr")),
                    level=80,
                    codecformat="J2K",
                    mct=False,
                    reversible=False,
                )
            )
            for f in pixels
        ]
        ds.PixelData = encapsulate(frames)
        ds.file_meta.TransferSyntaxUID = JPEG2000
        ds.PhotometricInterpretation = "YBR_FULL"
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_15444_1"
        ds.save_as(path, enforce_file_format=True)
    return originals


@pytest.fixture(scope="module")
def dicom_originals(svs: Path) -> list[np.ndarray[Any, np.dtype[np.uint8]]]:
    return write_ycbcr_dicom(svs.parent / "S24-09102_A1_HE")


@pytest.fixture(scope="module")
def client(svs: Path, dicom_originals: list[Any]) -> Iterator[TestClient]:
    db = svs.parent.parent / f"{svs.parent.name}.sqlite"
    app = create_app(Settings(roots=(svs.parent,), database_url=f"sqlite:///{db}"))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def openslide_level(path: Path) -> np.ndarray[Any, np.dtype[np.int_]]:
    with openslide.OpenSlide(path) as slide:
        region = slide.read_region((0, 0), 0, slide.level_dimensions[0]).convert("RGB")
    return np.asarray(region).astype(int)


def test_ycbcr_levels_are_offered_as_stored_jpeg2000_labelled_ybr_ict(client: TestClient) -> None:
    url, item = base_level(client, WIDTH)
    assert item["00083002"]["Value"] == [JPEG2000, ExplicitVRLittleEndian]
    (metadata,) = client.get(f"{url}/metadata").json()
    assert value(metadata, "00280004") == "YBR_ICT"  # Photometric Interpretation


def test_frames_are_the_stored_codestreams_with_only_the_transform_flag_set(
    client: TestClient, svs: Path
) -> None:
    url, _ = base_level(client, WIDTH)
    accept = f'multipart/related; type="image/jp2"; transfer-syntax={JPEG2000}'
    response = client.get(f"{url}/frames/1,6", headers={"Accept": accept})
    assert response.status_code == 200
    for (_, frame), index in zip(parts(response), (0, 5), strict=True):
        stored = stored_tile(svs, index)
        header = main_header(stored)
        assert header is not None and header.mct == 0
        assert len(frame) == len(stored)
        changed = [i for i, (a, b) in enumerate(zip(frame, stored, strict=True)) if a != b]
        assert changed == [header.mct_offset]
        assert frame[header.mct_offset] == 1


def test_pydicom_decodes_the_instance_to_openslides_pixels(client: TestClient, svs: Path) -> None:
    url, _ = base_level(client, WIDTH)
    ds = pydicom.dcmread(io.BytesIO(client.get(url).content))
    assert ds.file_meta.TransferSyntaxUID == JPEG2000
    assert ds.PhotometricInterpretation == "YBR_ICT"
    frames = ds.pixel_array  # (12, 256, 256, 3), TILED_FULL row-major
    columns = WIDTH // TILE
    mosaic = np.concatenate(
        [np.concatenate(list(frames[r * columns : (r + 1) * columns]), axis=1) for r in range(3)]
    )
    assert np.abs(mosaic.astype(int) - openslide_level(svs)).mean() < 1


def test_wsidicom_reads_the_series_to_openslides_pixels(
    client: TestClient, svs: Path, tmp_path: Path
) -> None:
    url, _ = base_level(client, WIDTH)
    series = url.rsplit("/instances/", 1)[0]
    for index, instance in enumerate(client.get(f"{series}/metadata").json()):
        sop = value(instance, "00080018")
        (tmp_path / f"{index}.dcm").write_bytes(client.get(f"{series}/instances/{sop}").content)
    with WsiDicom.open(tmp_path) as slide:
        region = np.asarray(slide.read_region((0, 0), 0, (WIDTH, HEIGHT)).convert("RGB"))
    assert np.abs(region.astype(int) - openslide_level(svs)).mean() < 1


def test_a_level_that_cannot_be_relabelled_exactly_is_offered_uncompressed(
    client: TestClient, svs: Path
) -> None:
    url, item = base_level(client, LOSSLESS_WIDTH)
    assert item["00083002"]["Value"] == [ExplicitVRLittleEndian]
    (metadata,) = client.get(f"{url}/metadata").json()
    assert value(metadata, "00280004") == "RGB"
    raw = ExplicitVRLittleEndian
    accept = f'multipart/related; type="application/octet-stream"; transfer-syntax={raw}'
    ((_, body),) = parts(client.get(f"{url}/frames/2", headers={"Accept": accept}))
    frame = np.frombuffer(body, np.uint8).reshape(TILE, TILE, 3).astype(int)
    lossless = openslide_level(svs.parent / "lossless" / "S24-09101_A1_HE.svs")
    assert np.abs(frame - lossless[:TILE, TILE : 2 * TILE]).mean() < 1


def test_ybr_full_jpeg2000_dicom_frames_go_out_relabelled_as_ict(
    client: TestClient, svs: Path, dicom_originals: list[np.ndarray[Any, np.dtype[np.uint8]]]
) -> None:
    url, item = base_level(client, DICOM_WIDTH)
    assert item["00083002"]["Value"] == [JPEG2000, ExplicitVRLittleEndian]
    accept = f'multipart/related; type="image/jp2"; transfer-syntax={JPEG2000}'
    ((_, frame),) = parts(client.get(f"{url}/frames/2", headers={"Accept": accept}))
    stored = stored_frame(svs.parent / "S24-09102_A1_HE" / LEVELS[0], 1)
    header = main_header(stored)
    assert header is not None and header.mct == 0
    assert frame == stored[: header.mct_offset] + b"\x01" + stored[header.mct_offset + 1 :]
    ds = pydicom.dcmread(io.BytesIO(client.get(url).content))
    assert ds.PhotometricInterpretation == "YBR_ICT"
    decoded = ds.pixel_array.astype(int)
    assert np.abs(decoded - np.stack(dicom_originals).astype(int)).mean() < 1.5
