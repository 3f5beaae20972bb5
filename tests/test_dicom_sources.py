"""Slides held in a PACS: a real Orthanc (DICOMweb plugin) holds a DICOM WSI the test stored in
it; the app lists it into its catalog and serves its tiles from WADO-RS frames."""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from slideserver.api.app import create_app
from slideserver.dicom.sources import PacsSources, SourceError, parse_sources
from slideserver.settings import Settings
from tests.dicom_wsi import slide_files, write_slide
from tests.orthanc import OrthancServer, running_orthanc

WAIT = 30.0
USER, PASSWORD = "reader", "s3cret-pw"


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_slide(tmp_path_factory.mktemp("dicom") / "slide")


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory, slide: Path) -> Iterator[OrthancServer]:
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        for path in slide_files(slide):
            server.upload(path)
        yield server


@dataclass
class Env:
    client: TestClient
    pacs: PacsSources

    def slides(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.client.get("/api/slides").json()["items"]
        return items

    def wait_for(self, count: int) -> list[dict[str, Any]]:
        """The slides once ``count`` are listed (bounded: the first listing runs in the
        background when the app starts)."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and len(self.slides()) < count:
            time.sleep(0.1)
        return self.slides()

    def sync(self) -> None:
        catalog = self.client.app.state.slideserver.catalog  # type: ignore[attr-defined]
        self.pacs.sync(catalog.refresh)

    def tile(self, slide_id: str, level: int = 9) -> httpx.Response:
        response: httpx.Response = self.client.get(f"/dz/{slide_id}_files/{level}/0_0.jpeg")
        return response


def open_env(tmp_path: Path, sources: str, local: Path | None = None) -> Iterator[Env]:
    (tmp_path / "slides").mkdir(parents=True)
    if local is not None:
        shutil.copytree(local, tmp_path / "slides" / "local")
    settings = Settings(
        roots=(tmp_path / "slides",),
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        dicomweb_sources=sources,
        dicomweb_sources_dir=str(tmp_path / "pacs"),
    )
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Env(client, app.state.dicomweb_sources)


@pytest.fixture
def env(tmp_path: Path, orthanc: OrthancServer, slide: Path) -> Iterator[Env]:
    yield from open_env(tmp_path, orthanc.dicomweb_url, local=slide)


def pacs_slide(env: Env) -> dict[str, Any]:
    (remote,) = [s for s in env.wait_for(2) if s["path"].endswith(".dcmweb")]
    return remote


def test_the_catalog_lists_a_slide_held_in_the_pacs(env: Env) -> None:
    remote = pacs_slide(env)
    assert (remote["format"], remote["status"]) == ("dicom", "ok")
    assert (remote["width"], remote["height"]) == (512, 384)


def test_a_deep_zoom_tile_from_the_pacs_equals_the_local_file(env: Env) -> None:
    remote = pacs_slide(env)
    (local,) = [s for s in env.slides() if s["path"] == "local"]
    for level in (9, 8):
        from_pacs, from_disk = env.tile(remote["id"], level), env.tile(local["id"], level)
        assert from_pacs.status_code == from_disk.status_code == 200
        a = np.asarray(Image.open(io.BytesIO(from_pacs.content)).convert("RGB"), dtype=np.int16)
        b = np.asarray(Image.open(io.BytesIO(from_disk.content)).convert("RGB"), dtype=np.int16)
        assert a.shape == b.shape and float(np.abs(a - b).mean()) < 1.0


def test_pacs_tiles_are_cached_like_any_tile(env: Env) -> None:
    remote = pacs_slide(env)
    assert env.tile(remote["id"]).status_code == 200
    assert env.tile(remote["id"]).headers["x-tile-source"] == "cache"


def test_a_slide_deleted_from_the_pacs_leaves_the_catalog(
    tmp_path: Path, orthanc: OrthancServer
) -> None:
    other = write_slide(tmp_path / "other", accession="S24-7009", patient_id="MRN-7009")
    ids = [orthanc.upload(path) for path in slide_files(other)]
    for env in open_env(tmp_path / "app", orthanc.dicomweb_url):
        assert len(env.wait_for(2)) == 2
        for instance in ids:
            orthanc.delete(f"/instances/{instance}")
        env.sync()
        statuses = sorted(s["status"] for s in env.slides())
        assert statuses in (["ok"], ["missing", "ok"])


def test_a_pacs_with_basic_authentication_is_listed_with_its_credentials(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, slide: Path
) -> None:
    config = {"AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD}}
    with running_orthanc(tmp_path_factory.mktemp("locked"), extra_config=config) as locked:
        for path in slide_files(slide):
            locked.upload(path)
        url = locked.dicomweb_url.replace("http://", f"http://{USER}:{PASSWORD}@")
        for env in open_env(tmp_path / "with", url):
            (listed,) = env.wait_for(1)
            assert listed["status"] == "ok"
            assert env.tile(listed["id"]).status_code == 200
        for env in open_env(tmp_path / "without", locked.dicomweb_url):
            env.sync()  # the archive refuses: nothing is listed, nothing fails
            assert env.slides() == []


def test_sources_are_read_with_their_credentials() -> None:
    basic, bearer = parse_sources(
        "https://reader:pw@pacs.example/dicom-web/, https://other.example:8443/wado;bearer=T0K"
    )
    assert (basic.url, basic.username, basic.password) == (
        "https://pacs.example/dicom-web",
        "reader",
        "pw",
    )
    assert basic.session().auth == ("reader", "pw")
    assert bearer.url == "https://other.example:8443/wado" and bearer.bearer == "T0K"
    assert bearer.session().headers["Authorization"] == "Bearer T0K"
    assert "T0K" not in repr(bearer) and basic.name != bearer.name


@pytest.mark.parametrize("setting", ["ftp://pacs/dicom-web", "https://pacs/x;token=1", "pacs"])
def test_a_source_that_is_no_dicomweb_url_is_refused(setting: str) -> None:
    with pytest.raises(SourceError):
        parse_sources(setting)


def test_slides_of_an_archive_no_longer_configured_leave_the_listing(tmp_path: Path) -> None:
    stray = tmp_path / "pacs" / "old-archive-0a1b2c" / "1.2.3" / "1.2.3.4.dcmweb"
    stray.parent.mkdir(parents=True)
    stray.write_text('{"source": "old-archive-0a1b2c", "study": "1.2.3", "series": ["1.2.3.5"]}')
    scans: list[int] = []
    PacsSources([], tmp_path / "pacs").sync(lambda: scans.append(1))
    assert not stray.exists() and scans == [1]
