"""STOW-RS: ``POST /dicomweb/studies`` stores DICOM WSI instances, indexes and links them at once.

A real app (``auth=tokens``, SQLite catalog) with a DICOM store; bodies built as a DICOMweb
client builds them; answers checked against PS3.18 (status, ReferencedSOPSequence,
FailedSOPSequence with FailureReason).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from starlette.testclient import TestClient

from slideserver.api.app import create_app
from slideserver.dicom.instance import DATASET_MISMATCH, SOP_CLASS_NOT_SUPPORTED
from slideserver.dicom.stow import StowBodyRefused, StowMediaTypeRefused, split_parts
from slideserver.settings import Settings
from tests.conftest import make_tokens
from tests.dicom_wsi import altered, multipart, slide_files, write_slide
from tests.helpers import assert_error

REFERENCED = "00081199"
FAILED = "00081198"
FAILURE_REASON = "00081197"
SOP_INSTANCE = "00081155"
RETRIEVE_URL = "00081190"
ROLES = ("admin", "pathologist", "researcher", "lis")


@dataclass
class Env:
    client: TestClient
    tokens: dict[str, str]
    store: Path

    def stow(self, parts: list[bytes], role: str = "lis", path: str = "/dicomweb/studies") -> Any:
        body, content_type = multipart(parts)
        return self.client.post(path, content=body, headers=self.headers(role, content_type))

    def headers(self, role: str, content_type: str = "") -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def get(self, path: str, role: str = "admin") -> Any:
        return self.client.get(path, headers=self.headers(role))


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_slide(tmp_path_factory.mktemp("dicom") / "slide")


def open_env(tmp_path: Path, **settings: Any) -> Iterator[Env]:
    (tmp_path / "slides").mkdir()
    values: dict[str, Any] = {
        "roots": (tmp_path / "slides",),
        "auth": "tokens",
        "database_url": f"sqlite:///{tmp_path / 'db.sqlite'}",
        **settings,
    }
    ready = Settings(**values)
    tokens = make_tokens(ready, {role: (role, "") for role in ROLES})
    with TestClient(create_app(ready), raise_server_exceptions=False) as client:
        yield Env(client, tokens, tmp_path / "store")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from open_env(
        tmp_path, dicom_store_dir=str(tmp_path / "store"), dicom_stow_max_bytes=4 * 1024 * 1024
    )


def parts_of(slide: Path) -> list[bytes]:
    return [path.read_bytes() for path in slide_files(slide)]


def test_a_stored_slide_is_listed_at_once(env: Env, slide: Path) -> None:
    answer = env.stow(parts_of(slide))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/dicom+json")
    referenced = answer.json()[REFERENCED]["Value"]
    assert len(referenced) == 4 and FAILED not in answer.json()
    assert all("/dicomweb/studies/" in item[RETRIEVE_URL]["Value"][0] for item in referenced)
    items = env.get("/api/slides").json()["items"]
    assert [(s["format"], s["status"], s["width"]) for s in items] == [("dicom", "ok", 512)]


@pytest.fixture
def env_any_database(tmp_path: Path, database_url: str) -> Iterator[Env]:
    """An app with a DICOM store over each catalog database (SQLite, PostgreSQL)."""
    yield from open_env(
        tmp_path, database_url=database_url, dicom_store_dir=str(tmp_path / "store")
    )


def test_a_stored_slide_is_linked_to_its_case_by_accession_and_patient(
    env_any_database: Env, slide: Path
) -> None:
    env = env_any_database
    order = {"accession": "S24-7001", "patient": {"identifier": "MRN-7001", "name": "DOE^JANE"}}
    created = env.client.post("/api/lis/cases", json=order, headers=env.headers("lis"))
    assert created.status_code == 201, created.text
    assert env.stow(parts_of(slide)).status_code == 200
    case = env.get("/api/cases/S24-7001").json()
    assert [s["format"] for s in case["slides"]] == ["dicom"]
    listed = env.get("/api/slides").json()["items"][0]
    assert listed["case"]["linked"] is True and listed["case"]["patient"]["id"] == "MRN-7001"


def test_storing_the_same_instances_again_answers_200_and_adds_nothing(
    env: Env, slide: Path
) -> None:
    assert env.stow(parts_of(slide)).status_code == 200
    again = env.stow(parts_of(slide))
    assert again.status_code == 200 and len(again.json()[REFERENCED]["Value"]) == 4
    assert len(env.get("/api/slides").json()["items"]) == 1
    assert len(list((env.store / ".instances").iterdir())) == 4


def test_some_refused_answers_202_with_each_failure_reason(env: Env, slide: Path) -> None:
    def ct(ds: Dataset) -> None:
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID

    good = parts_of(slide)
    answer = env.stow([*good, altered(good[2], ct)])
    assert answer.status_code == 202, answer.text
    failed = answer.json()[FAILED]["Value"]
    assert [item[FAILURE_REASON]["Value"] for item in failed] == [[SOP_CLASS_NOT_SUPPORTED]]
    assert len(answer.json()[REFERENCED]["Value"]) == 4


def test_the_same_uid_with_other_content_is_refused_409(env: Env, slide: Path) -> None:
    level = parts_of(slide)[0]
    assert env.stow([level]).status_code == 200

    def renamed(ds: Dataset) -> None:
        ds.PatientName = "OTHER^PATIENT"

    answer = env.stow([altered(level, renamed)])
    assert answer.status_code == 409
    (failed,) = answer.json()[FAILED]["Value"]
    assert failed[FAILURE_REASON]["Value"] == [0x0111] and SOP_INSTANCE in failed


def test_an_instance_of_another_study_than_the_path_names_is_refused(env: Env, slide: Path) -> None:
    answer = env.stow(parts_of(slide)[:1], path="/dicomweb/studies/1.2.3.4")
    assert answer.status_code == 409
    assert answer.json()[FAILED]["Value"][0][FAILURE_REASON]["Value"] == [DATASET_MISMATCH]
    assert answer.json()[RETRIEVE_URL]["Value"][0].endswith("/dicomweb/studies/1.2.3.4")


def test_a_cut_body_answers_400_and_stores_nothing(env: Env, slide: Path) -> None:
    body, content_type = multipart(parts_of(slide))
    cut = body[: len(body) // 2]
    answer = env.client.post(
        "/dicomweb/studies", content=cut, headers=env.headers("lis", content_type)
    )
    assert_error(answer, 400)
    assert list((env.store / ".instances").iterdir()) == []


def test_a_body_that_is_not_multipart_dicom_answers_415(env: Env, slide: Path) -> None:
    answer = env.client.post(
        "/dicomweb/studies",
        content=parts_of(slide)[0],
        headers=env.headers("lis", "application/dicom"),
    )
    assert_error(answer, 415, "unsupported_media_type")


def test_a_body_over_the_cap_answers_413(env: Env) -> None:
    answer = env.stow([b"\x00" * (5 * 1024 * 1024)])
    assert_error(answer, 413, "too_large")


@pytest.mark.parametrize("role", ["pathologist", "researcher"])
def test_people_who_only_read_may_not_store(env: Env, slide: Path, role: str) -> None:
    assert_error(env.stow(parts_of(slide)[:1], role=role), 403)
    assert list((env.store / ".instances").iterdir()) == []


def test_admins_may_store(env: Env, slide: Path) -> None:
    assert env.stow(parts_of(slide), role="admin").status_code == 200


def test_the_audit_row_names_the_patient_and_the_case(env: Env, slide: Path) -> None:
    assert env.stow(parts_of(slide)).status_code == 200
    rows = env.get("/api/audit?limit=100").json()["items"]
    stow = [r for r in rows if r["action"] == "POST /dicomweb/studies" and r["kind"] == "request"]
    assert [(r["patient_id"], r["case_id"], r["status"]) for r in stow] == [
        ("MRN-7001", "S24-7001", 200)
    ]


def test_without_a_store_stow_answers_404(tmp_path: Path, slide: Path) -> None:
    for no_store in open_env(tmp_path):
        assert_error(no_store.stow(parts_of(slide)[:1]), 404, "dicom_store_off")


def test_real_world_instances_from_other_projects_are_stored(env: Env) -> None:
    from tests.realworld import realworld_dir

    folder = realworld_dir() / "slides"
    names = ["openslide-python/boxes_0.dcm", "openslide-python/boxes_1.dcm"]
    names += ["highdicom/sm_image.dcm", "highdicom/sm_image_grayscale.dcm"]
    answer = env.stow([(folder / name).read_bytes() for name in names])
    assert answer.status_code == 200, answer.text
    assert len(answer.json()[REFERENCED]["Value"]) == 4
    listed = env.get("/api/slides").json()["items"]  # boxes is whole (one level, one tile)
    assert [(s["status"], s["width"]) for s in listed] == [("ok", 16)]


def test_dicomweb_client_stores_a_slide_into_a_running_server(tmp_path: Path, slide: Path) -> None:
    import pydicom
    from dicomweb_client import DICOMwebClient

    from tests.live_server import live_server

    (tmp_path / "slides").mkdir()
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    tokens = make_tokens(Settings(auth="tokens", database_url=db), {"lis": ("lis", "")})
    flags = ["--auth", "tokens", "--database-url", db]
    flags += ["--dicom-store-dir", str(tmp_path / "store")]
    with live_server([tmp_path / "slides"], *flags, scrub_env=True) as base:
        client = DICOMwebClient(
            f"{base}/dicomweb", headers={"Authorization": f"Bearer {tokens['lis']}"}
        )
        answer = client.store_instances([pydicom.dcmread(p) for p in slide_files(slide)])
        assert len(answer.ReferencedSOPSequence) == 4 and "FailedSOPSequence" not in answer


CONTENT_TYPE = 'multipart/related; type="application/dicom"; boundary=XyZ'


def test_parts_are_split_byte_for_byte_around_preamble_and_epilogue() -> None:
    first, second = b"data --XyZ inside\r\n\x00\xff\r\n", b"\r\n\r\nX--XyZ"
    body = b"preamble\r\n--XyZ  \r\nContent-Type: application/dicom\r\n\r\n" + first
    body += b"\r\n--XyZ\r\nContent-Type: application/dicom\r\n\r\n" + second
    body += b"\r\n--XyZ--\r\nepilogue"
    assert split_parts(CONTENT_TYPE, body) == [first, second]


@pytest.mark.parametrize(
    "part_headers",
    [
        b"Content-Type: text/plain\r\n",
        b"",
        b"Content-Type: application/dicom\r\nContent-Transfer-Encoding: base64\r\n",
    ],
)
def test_a_part_that_is_not_binary_dicom_is_refused(part_headers: bytes) -> None:
    body = b"--XyZ\r\n" + part_headers + b"\r\nDATA\r\n--XyZ--"
    with pytest.raises(StowMediaTypeRefused):
        split_parts(CONTENT_TYPE, body)


@pytest.mark.parametrize(
    "body", [b"", b"no delimiter", b"--XyZ\r\nContent-Type: application/dicom\r\n\r\nDATA"]
)
def test_a_body_without_its_delimiters_is_refused(body: bytes) -> None:
    with pytest.raises(StowBodyRefused):
        split_parts(CONTENT_TYPE, body)
