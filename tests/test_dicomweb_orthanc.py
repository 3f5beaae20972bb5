"""Orthanc, as a DICOMweb client, retrieves one of our virtual instances (an Aperio SVS level)
into its own store; the stored instance parses with pydicom and highdicom."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import highdicom
import httpx
import pydicom
import pytest

from tests.live_server import live_server
from tests.orthanc import DICOMWEB_PLUGIN, running_orthanc
from tests.realworld import copy_slides

SVS = "CMU-1-Small-Region.svs"


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = copy_slides({f"libvips/{SVS}": SVS}, tmp_path_factory.mktemp("ours"))
    with live_server([root]) as base:
        yield base


@pytest.mark.slow
def test_orthanc_retrieves_a_virtual_instance_that_parses(ours: str, tmp_path: Path) -> None:
    series = httpx.get(f"{ours}/dicomweb/series", timeout=60).json()
    study, uid = series[0]["0020000D"]["Value"][0], series[0]["0020000E"]["Value"][0]
    instances = httpx.get(f"{ours}/dicomweb/studies/{study}/series/{uid}/instances").json()
    sop = next(i for i in instances if i["00080008"]["Value"][2] == "VOLUME")["00080018"]["Value"][
        0
    ]
    config = {
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "EnableWado": False,
            "Servers": {"slideserver": [f"{ours}/dicomweb/"]},
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
