"""The DICOM SCP: dcmtk's storescu and echoscu, and Orthanc, send to a real app on loopback.

The app runs its lifespan (``TestClient``), which binds the SCP on a free port; the senders are
real processes. A slide shows in the catalog once its pyramid is whole; waits are bounded.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from starlette.testclient import TestClient

from slideserver.api.app import create_app
from slideserver.dicom.scp import scp_refusal
from slideserver.settings import Settings
from tests.conftest import make_tokens
from tests.dicom_wsi import altered, slide_files, write_slide
from tests.orthanc import OrthancServer, running_orthanc
from tests.redis_server import free_port

AE_TITLE = "SLIDESERVER"
SCANNER = "SCANNER1"
WAIT = 30.0


@dataclass
class Env:
    client: TestClient
    admin: str
    port: int
    store: Path

    def slides(self) -> list[dict[str, Any]]:
        answer = self.client.get("/api/slides", headers={"Authorization": f"Bearer {self.admin}"})
        items: list[dict[str, Any]] = answer.json()["items"]
        return items

    def wait_for_slides(self, count: int) -> list[dict[str, Any]]:
        """The catalog's slides once ``count`` are listed (bounded wait: the SCP indexes when
        the association has ended, in its own thread)."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            items = self.slides()
            if len(items) >= count:
                return items
            time.sleep(0.1)
        return self.slides()

    def audit(self) -> list[dict[str, Any]]:
        headers = {"Authorization": f"Bearer {self.admin}"}
        rows: list[dict[str, Any]] = self.client.get(
            "/api/audit?limit=200", headers=headers
        ).json()["items"]
        return rows


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_slide(tmp_path_factory.mktemp("dicom") / "slide")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    (tmp_path / "slides").mkdir()
    settings = Settings(
        roots=(tmp_path / "slides",),
        auth="tokens",
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        dicom_store_dir=str(tmp_path / "store"),
        dicom_port=free_port(),
        dicom_ae_title=AE_TITLE,
        dicom_allowed_aes=f"{SCANNER},ORTHANC",
        dicom_quiet_seconds=3600,
    )
    tokens = make_tokens(settings, {"admin": ("admin", "")})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield Env(client, tokens["admin"], settings.dicom_port, tmp_path / "store")


def storescu(
    port: int, files: Sequence[Path], calling: str = SCANNER
) -> subprocess.CompletedProcess[str]:
    """Send ``files`` as a scanner would: only the contexts they need (-R), JPEG as stored (-xy)."""
    command = ["storescu", "-R", "-xy", "-aet", calling, "-aec", AE_TITLE, "127.0.0.1"]
    return subprocess.run(
        [*command, str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_slide_sent_with_storescu_appears_whole(env: Env, slide: Path) -> None:
    sent = storescu(env.port, slide_files(slide))
    assert sent.returncode == 0, sent.stderr
    (listed,) = env.wait_for_slides(1)
    assert (listed["format"], listed["status"], listed["width"]) == ("dicom", "ok", 512)
    label = env.client.get(
        f"/api/slides/{listed['id']}/associated/label",
        headers={"Authorization": f"Bearer {env.admin}"},
    )
    assert label.status_code == 200 and label.headers["content-type"].startswith("image/")


def test_a_half_sent_slide_is_not_shown(env: Env, slide: Path) -> None:
    level_0, _, label, overview = slide_files(slide)
    sent = storescu(env.port, [level_0, label, overview])
    assert sent.returncode == 0, sent.stderr
    env.client.app.state.dicom_intake.settle()  # type: ignore[attr-defined]
    assert env.slides() == []
    assert len(list((env.store / ".instances").iterdir())) == 3


def test_echoscu_is_answered(env: Env) -> None:
    echo = subprocess.run(
        ["echoscu", "-aet", SCANNER, "-aec", AE_TITLE, "127.0.0.1", str(env.port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert echo.returncode == 0, echo.stderr


def test_a_calling_ae_not_allowed_is_rejected(env: Env, slide: Path) -> None:
    sent = storescu(env.port, slide_files(slide)[:1], calling="INTRUDER")
    assert sent.returncode != 0
    assert "Association Rejected" in sent.stdout + sent.stderr
    assert list((env.store / ".instances").iterdir()) == []


def test_each_c_store_is_audited_with_the_patient(env: Env, slide: Path) -> None:
    assert storescu(env.port, slide_files(slide)[:1]).returncode == 0
    rows = [r for r in env.audit() if r["action"] == "DIMSE C-STORE"]
    assert sorted((r["kind"], r["status"]) for r in rows) == [("attempt", None), ("request", 200)]
    assert {(r["subject"], r["patient_id"], r["case_id"]) for r in rows} == {
        (f"dicom:{SCANNER}@127.0.0.1", "MRN-7001", "S24-7001")
    }


def test_an_scp_off_loopback_needs_allowed_calling_aes(tmp_path: Path) -> None:
    open_to_all = Settings(dicom_store_dir=str(tmp_path), dicom_port=11112, dicom_host="0.0.0.0")
    assert scp_refusal(open_to_all) is not None
    listed = Settings(
        dicom_store_dir=str(tmp_path), dicom_port=11112, dicom_host="0.0.0.0", dicom_allowed_aes="A"
    )
    assert scp_refusal(listed) is None
    assert scp_refusal(Settings(dicom_port=11112)) is not None  # nowhere to store


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


def test_orthanc_sends_a_slide_to_us(env: Env, slide: Path, orthanc: OrthancServer) -> None:
    ids = [orthanc.upload(path) for path in slide_files(slide)]
    orthanc.add_modality("SLIDESERVER", "127.0.0.1", env.port, AE_TITLE)
    assert orthanc.echo("SLIDESERVER")
    orthanc.send_to_modality("SLIDESERVER", ids)
    (listed,) = env.wait_for_slides(1)
    assert (listed["format"], listed["status"], listed["width"]) == ("dicom", "ok", 512)


def test_serve_binds_the_scp_from_its_flags(tmp_path: Path) -> None:
    from tests.live_server import live_server

    (tmp_path / "slides").mkdir()
    port = free_port()
    flags = ["--dicom-store-dir", str(tmp_path / "store"), "--dicom-port", str(port)]
    flags += ["--dicom-ae-title", "OURS", "--dicom-allowed-aes", SCANNER]
    db = ["--database-url", f"sqlite:///{tmp_path / 'db.sqlite'}"]
    with live_server([tmp_path / "slides"], *flags, *db, scrub_env=True):
        echo = subprocess.run(
            ["echoscu", "-aet", SCANNER, "-aec", "OURS", "127.0.0.1", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert echo.returncode == 0, echo.stderr


def test_an_instance_of_another_sop_class_is_refused_at_association(
    env: Env, slide: Path, tmp_path: Path
) -> None:
    def ct(ds: Dataset) -> None:
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID

    other = tmp_path / "ct.dcm"
    other.write_bytes(altered(slide_files(slide)[0].read_bytes(), ct))
    sent = storescu(env.port, [other])
    assert sent.returncode != 0
    assert list((env.store / ".instances").iterdir()) == []


def test_the_app_refuses_to_start_an_scp_open_to_any_ae_off_loopback(tmp_path: Path) -> None:
    settings = Settings(
        roots=(tmp_path,),
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        dicom_store_dir=str(tmp_path / "store"),
        dicom_port=free_port(),
        dicom_host="0.0.0.0",
    )
    with pytest.raises(ValueError, match="dicom_allowed_aes"), TestClient(create_app(settings)):
        pass
