"""DICOMweb over an Aperio SVS with JPEG 2000 tiles (compression 33005, RGB components).

Its levels are offered as stored (JPEG 2000, ``1.2.840.10008.1.2.4.91``): frames are the
stored codestreams byte for byte, whole instances encapsulate them, and uncompressed frames
are still there on request. The file is written by the test with tifffile and OpenJPEG
(imagecodecs), as Aperio lays it out; OpenSlide reads it. A DICOM WSI whose frames are JPEG 2000
(the sample series, transcoded by the test) goes out as stored too, through wsidicom.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pydicom
import pytest
import tifffile
from dicomweb_client.api import DICOMwebClient
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian
from starlette.testclient import TestClient
from wsidicom import WsiDicom, WsiDicomWebClient

from slideserver.api.app import create_app
from slideserver.samples.tiff import AperioInfo, aperio_description
from slideserver.settings import Settings
from tests.dicom_wsi import LEVELS, write_slide
from tests.dicom_wsi import WIDTH as DICOM_WIDTH
from tests.live_server import live_server
from tests.test_dicomweb_api import parts, value

WIDTH, HEIGHT, TILE = 1024, 768, 256


def gradient() -> np.ndarray[Any, np.dtype[np.uint8]]:
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    return np.stack([x * 255 // WIDTH, y * 255 // HEIGHT, (x + y) % 256], -1).astype(np.uint8)


def write_jpeg2000_svs(path: Path) -> Path:
    """Two levels of 256-pixel JPEG 2000 tiles (33005), Aperio's descriptions."""
    pixels = gradient()
    info = AperioInfo(filename="j2k", barcode="J2K-1", mpp=0.5)
    with tifffile.TiffWriter(path) as tif:
        for index, step in enumerate((1, 4)):
            level = np.ascontiguousarray(pixels[::step, ::step])
            size = None if index == 0 else (level.shape[1], level.shape[0])
            tif.write(
                level,
                tile=(TILE, TILE),
                photometric="rgb",
                compression=33005,
                compressionargs={"level": 80},
                description=aperio_description(info, WIDTH, HEIGHT, level=size),
                metadata=None,
            )
    return path


def stored_tile(path: Path, index: int) -> bytes:
    """The bytes of level-0 tile ``index`` as the file stores them."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        tif.filehandle.seek(page.dataoffsets[index])
        return bytes(tif.filehandle.read(page.databytecounts[index]))


@pytest.fixture(scope="module")
def svs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("j2k")
    return write_jpeg2000_svs(root / "S24-09000_A1_HE.svs")


def write_jpeg2000_dicom(folder: Path) -> Path:
    """The sample DICOM WSI series with its pyramid's frames JPEG 2000 coded (YBR_ICT)."""
    write_slide(folder)
    for name in LEVELS:
        path = folder / name
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array.reshape(-1, int(ds.Rows), int(ds.Columns), 3)
        frames = [
            bytes(imagecodecs.jpeg2k_encode(f, codecformat="J2K", mct=True, reversible=False))
            for f in pixels
        ]
        ds.PixelData = encapsulate(frames)
        ds.file_meta.TransferSyntaxUID = JPEG2000
        ds.PhotometricInterpretation = "YBR_ICT"
        ds.LossyImageCompressionMethod = "ISO_15444_1"
        ds.save_as(path, enforce_file_format=True)
    return folder


def stored_frame(path: Path, index: int) -> bytes:
    """Frame ``index`` of a DICOM file as it encapsulates it."""
    ds = pydicom.dcmread(path)
    return next(itertools.islice(generate_frames(ds.PixelData), index, None))


@pytest.fixture(scope="module")
def dicom(svs: Path) -> Path:
    return write_jpeg2000_dicom(svs.parent / "S24-09001_A1_HE")


@pytest.fixture(scope="module")
def client(svs: Path, dicom: Path) -> Iterator[TestClient]:
    db = svs.parent.parent / f"{svs.parent.name}.sqlite"
    app = create_app(Settings(roots=(svs.parent,), database_url=f"sqlite:///{db}"))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def base_level(client: TestClient, width: int = WIDTH) -> tuple[str, dict[str, Any]]:
    """The URL of the level-0 instance of the slide ``width`` wide, and its QIDO result."""
    instances = client.get("/dicomweb/instances", params={"includefield": "all"}).json()
    (item,) = [i for i in instances if value(i, "00480006") == width]  # TotalPixelMatrixColumns
    study, series, sop = (value(item, t) for t in ("0020000D", "0020000E", "00080018"))
    return f"/dicomweb/studies/{study}/series/{series}/instances/{sop}", item


def test_jpeg2000_levels_are_offered_as_stored(client: TestClient) -> None:
    _, item = base_level(client)
    assert item["00083002"]["Value"] == [JPEG2000, ExplicitVRLittleEndian]


def test_jpeg2000_frames_are_the_stored_codestreams_byte_for_byte(
    client: TestClient, svs: Path
) -> None:
    url, _ = base_level(client)
    accept = f'multipart/related; type="image/jp2"; transfer-syntax={JPEG2000}'
    response = client.get(f"{url}/frames/1,2", headers={"Accept": accept})
    assert response.status_code == 200
    got = parts(response)
    assert [c.replace('"', "") for c, _ in got] == [f"image/jp2; transfer-syntax={JPEG2000}"] * 2
    assert [body for _, body in got] == [stored_tile(svs, 0), stored_tile(svs, 1)]


def test_frames_as_stored_without_a_transfer_syntax_are_jpeg2000(
    client: TestClient, svs: Path
) -> None:
    url, _ = base_level(client)
    response = client.get(f"{url}/frames/3")
    assert response.status_code == 200
    ((content_type, body),) = parts(response)
    assert content_type.replace('"', "") == f"image/jp2; transfer-syntax={JPEG2000}"
    assert body == stored_tile(svs, 2)


def test_frames_in_any_syntax_are_the_stored_codestreams(client: TestClient, svs: Path) -> None:
    url, _ = base_level(client)
    accept = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
    response = client.get(f"{url}/frames/2", headers={"Accept": accept})
    assert response.status_code == 200
    ((content_type, body),) = parts(response)
    assert content_type.replace('"', "") == (
        f"application/octet-stream; transfer-syntax={JPEG2000}"
    )
    assert body == stored_tile(svs, 1)


def test_uncompressed_frames_of_a_jpeg2000_level_on_request(client: TestClient) -> None:
    url, _ = base_level(client)
    raw = ExplicitVRLittleEndian
    accept = f'multipart/related; type="application/octet-stream"; transfer-syntax={raw}'
    ((_, body),) = parts(client.get(f"{url}/frames/1", headers={"Accept": accept}))
    frame = np.frombuffer(body, np.uint8).reshape(TILE, TILE, 3)
    assert np.abs(frame.astype(int) - gradient()[:TILE, :TILE]).mean() < 2


def test_a_jpeg2000_instance_is_a_part10_file_pydicom_decodes(client: TestClient) -> None:
    url, _ = base_level(client)
    response = client.get(url)
    assert response.status_code == 200
    ds = pydicom.dcmread(io.BytesIO(response.content))
    assert ds.file_meta.TransferSyntaxUID == JPEG2000
    assert ds.PhotometricInterpretation == "YBR_ICT"
    assert ds.LossyImageCompressionMethod == "ISO_15444_1"
    frames = ds.pixel_array
    assert frames.shape == (12, TILE, TILE, 3)
    top_left = frames[0]
    assert np.abs(top_left.astype(int) - gradient()[:TILE, :TILE]).mean() < 2


def test_jpeg2000_frames_of_a_dicom_slide_go_out_as_stored(client: TestClient, dicom: Path) -> None:
    url, item = base_level(client, DICOM_WIDTH)
    assert item["00083002"]["Value"] == [JPEG2000, ExplicitVRLittleEndian]
    accept = f'multipart/related; type="image/jp2"; transfer-syntax={JPEG2000}'
    response = client.get(f"{url}/frames/1,4", headers={"Accept": accept})
    assert response.status_code == 200
    bodies = [body for _, body in parts(response)]
    assert bodies == [stored_frame(dicom / LEVELS[0], 0), stored_frame(dicom / LEVELS[0], 3)]


def test_a_jpeg2000_dicom_instance_keeps_its_photometric_interpretation(
    client: TestClient,
) -> None:
    url, _ = base_level(client, DICOM_WIDTH)
    ds = pydicom.dcmread(io.BytesIO(client.get(url).content))
    assert ds.file_meta.TransferSyntaxUID == JPEG2000
    assert ds.PhotometricInterpretation == "YBR_ICT"
    assert ds.pixel_array.shape == (4, 256, 256, 3)


def test_wsidicom_reads_the_jpeg2000_svs_through_dicomweb(svs: Path, tmp_path: Path) -> None:
    root = tmp_path / "slides"
    root.mkdir()
    write_jpeg2000_svs(root / svs.name)
    db = ["--database-url", f"sqlite:///{tmp_path / 'db.sqlite'}"]
    with live_server([root], *db, scrub_env=True) as base:
        client = DICOMwebClient(f"{base}/dicomweb")
        (series,) = client.search_for_series()
        study_uid, series_uid = (series[t]["Value"][0] for t in ("0020000D", "0020000E"))
        slide = WsiDicom.open_web(WsiDicomWebClient(client), study_uid, series_uid)
        assert slide.levels[0].default_instance.image_data.transfer_syntax == JPEG2000
        region = np.asarray(slide.read_region((0, 0), 0, (512, 512)).convert("RGB"))
    assert np.abs(region.astype(int) - gradient()[:512, :512]).mean() < 2
