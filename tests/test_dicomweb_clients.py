"""Real DICOMweb clients against a live server: dicomweb-client searches and retrieves, wsidicom
opens an Aperio SVS of ours through its web source and reads what our IIIF API serves, and
Orthanc retrieves one of our virtual instances into its own store."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import highdicom
import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.uid import JPEGBaseline8Bit
from wsidicom import WsiDicom, WsiDicomWebClient

from tests.live_server import live_server
from tests.orthanc import DICOMWEB_PLUGIN, running_orthanc
from tests.realworld import copy_slides

SVS = "CMU-1-Small-Region.svs"
"""A real Aperio slide (JPEG tiles, 2220 x 2967, 0.499 um/px) from libvips' test images."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = copy_slides({f"libvips/{SVS}": SVS}, tmp_path_factory.mktemp("dicomweb"))
    with live_server([root]) as base:
        yield base


@pytest.fixture(scope="module")
def client(server: str) -> DICOMwebClient:
    return DICOMwebClient(f"{server}/dicomweb")


def uids_of(client: DICOMwebClient) -> tuple[str, str]:
    (series,) = client.search_for_series(search_filters={"Modality": "SM"})
    return series["0020000D"]["Value"][0], series["0020000E"]["Value"][0]


def test_dicomweb_client_searches_studies_series_and_instances(client: DICOMwebClient) -> None:
    (study,) = client.search_for_studies()
    study_uid, series_uid = uids_of(client)
    assert study["0020000D"]["Value"][0] == study_uid
    instances = client.search_for_instances(study_uid, series_uid)
    assert instances and all(i["00080060"]["Value"] == ["SM"] for i in instances)


def test_dicomweb_client_retrieves_metadata_and_stored_frames(client: DICOMwebClient) -> None:
    study_uid, series_uid = uids_of(client)
    metadata = [
        pydicom.Dataset.from_json(m) for m in client.retrieve_series_metadata(study_uid, series_uid)
    ]
    base = next(ds for ds in metadata if ds.ImageType[2] == "VOLUME")
    frames = client.retrieve_instance_frames(
        study_uid,
        series_uid,
        base.SOPInstanceUID,
        frame_numbers=[1, 2],
        media_types=("image/jpeg",),
    )
    assert len(frames) == 2
    for frame in frames:
        with Image.open(io.BytesIO(frame)) as image:
            assert image.format == "JPEG" and image.size == (base.Columns, base.Rows)


def test_dicomweb_client_retrieves_a_part10_instance_highdicom_loads(
    client: DICOMwebClient,
) -> None:
    study_uid, series_uid = uids_of(client)
    (instance,) = [
        i
        for i in client.search_for_instances(study_uid, series_uid, fields=["ImageType"])
        if i["00080008"]["Value"][2] == "VOLUME"
    ]
    ds = client.retrieve_instance(study_uid, series_uid, instance["00080018"]["Value"][0])
    assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    image = highdicom.Image.from_dataset(ds)
    assert image.get_total_pixel_matrix().shape == (2967, 2220, 3)


def test_wsidicom_reads_the_svs_through_dicomweb_as_our_iiif_serves_it(
    server: str, client: DICOMwebClient
) -> None:
    study_uid, series_uid = uids_of(client)
    with WsiDicom.open_web(WsiDicomWebClient(client), study_uid, series_uid) as slide:
        assert (slide.size.width, slide.size.height) == (2220, 2967)
        assert slide.mpp.width == pytest.approx(0.499, abs=1e-3)
        region = slide.read_region((700, 1100), 0, (512, 384)).convert("RGB")
    slide_id = httpx.get(f"{server}/api/slides").json()["items"][0]["id"]
    served = httpx.get(f"{server}/iiif/3/{slide_id}/700,1100,512,384/max/0/default.png")
    assert served.status_code == 200
    with Image.open(io.BytesIO(served.content)) as iiif:
        ours = np.asarray(iiif.convert("RGB"), dtype=np.float64)
    theirs = np.asarray(region, dtype=np.float64)
    assert theirs.shape == ours.shape
    assert np.abs(theirs - ours).mean() < 1


def test_orthanc_retrieves_a_virtual_instance_that_parses(server: str, tmp_path: Path) -> None:
    series = httpx.get(f"{server}/dicomweb/series", timeout=60).json()
    study, uid = series[0]["0020000D"]["Value"][0], series[0]["0020000E"]["Value"][0]
    instances = httpx.get(f"{server}/dicomweb/studies/{study}/series/{uid}/instances").json()
    sop = next(i for i in instances if i["00080008"]["Value"][2] == "VOLUME")["00080018"]["Value"][
        0
    ]
    config = {
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "EnableWado": False,
            "Servers": {"slideserver": [f"{server}/dicomweb/"]},
        }
    }
    with running_orthanc(tmp_path / "orthanc", extra_config=config) as orthanc:
        assert DICOMWEB_PLUGIN.is_file()
        body = {"Resources": [{"Study": study, "Series": uid, "Instance": sop}]}
        orthanc.post("/dicom-web/servers/slideserver/retrieve", body, timeout=120)
        (stored,) = orthanc.instances()
        data = httpx.get(f"{orthanc.url}/instances/{stored}/file", timeout=60).content
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.SOPInstanceUID == sop and ds.StudyInstanceUID == study
    image = highdicom.Image.from_dataset(ds)
    assert image.get_total_pixel_matrix().shape == (2967, 2220, 3)


def test_dicomweb_client_retrieves_a_whole_series(client: DICOMwebClient) -> None:
    study_uid, series_uid = uids_of(client)
    instances = client.search_for_instances(study_uid, series_uid)
    datasets = client.retrieve_series(study_uid, series_uid)
    assert sorted(ds.SOPInstanceUID for ds in datasets) == sorted(
        i["00080018"]["Value"][0] for i in instances
    )
    for ds in datasets:
        assert ds.pixel_array.shape[-1] == 3


def test_dicomweb_client_retrieves_a_whole_study(client: DICOMwebClient) -> None:
    study_uid, series_uid = uids_of(client)
    instances = client.search_for_instances(study_uid)
    datasets = client.retrieve_study(study_uid)
    assert sorted(ds.SOPInstanceUID for ds in datasets) == sorted(
        i["00080018"]["Value"][0] for i in instances
    )
    assert {ds.SeriesInstanceUID for ds in datasets} == {series_uid}
