"""Researchers see no PHI on any route, error messages included; pathologists see the label."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from slideserver.samples import (
    SAMPLE_BIRTH_DATE,
    SAMPLE_MRN,
    SAMPLE_PATIENT_DISPLAY,
    SAMPLE_PATIENT_NAME,
)
from tests.helpers import DICOM, SVS
from tests.test_security_matrix import REQUESTS

PHI_STRINGS = (SAMPLE_PATIENT_NAME, SAMPLE_PATIENT_DISPLAY, SAMPLE_MRN, SAMPLE_BIRTH_DATE)
SHORT_PHI = ("DOE",)
"""Searched in text answers only: three bytes occur by chance in compressed pixels."""


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _ids(client: Any, token: str) -> dict[str, str]:
    """Return name -> ID of every sample slide, as an admin lists them."""
    items = client.get("/api/slides", headers=_auth(token)).json()["items"]
    return {i["name"]: i["id"] for i in items}


def assert_no_phi(response: Any, where: str) -> None:
    body = response.content
    texts = [body.decode("latin-1")] + [f"{k}: {v}" for k, v in response.headers.items()]
    for text in texts:
        for needle in PHI_STRINGS:
            assert needle.lower() not in text.lower(), (where, needle)
    if not response.headers.get("content-type", "").startswith("image/"):
        for needle in SHORT_PHI:
            assert needle not in body.decode("latin-1").upper(), (where, needle)


def researcher_urls(ids: dict[str, str]) -> list[str]:
    """Every GET a researcher could try, on every sample, with PHI-bearing search terms."""
    urls = [
        "/api/slides",
        "/api/slides?limit=1000",
        f"/api/slides?patient={SAMPLE_MRN}",
        f"/api/slides?q={SAMPLE_PATIENT_NAME}",
        "/api/slides?q=DOE",
        "/api/slides?accession=S24-05678",
        "/api/slides/nonexistent",
        f"/launch?patient={SAMPLE_MRN}",
        f"/fhir/ImagingStudy?patient={SAMPLE_MRN}",
    ]
    for sid in ids.values():
        urls += [
            f"/api/slides/{sid}",
            f"/api/slides/{sid}/associated/label",
            f"/api/slides/{sid}/associated/macro",
            f"/api/slides/{sid}/associated/thumbnail",
            f"/api/slides/{sid}/thumbnail?max=64",
            f"/dz/{sid}.dzi",
            f"/iiif/3/{sid}/info.json",
            f"/iiif/3/{sid}/full/64,/0/default.jpg",
            f"/dz/{sid}_files/99/0_0.jpeg",
        ]
    for method, url, _, _ in REQUESTS:
        if method == "GET" and "{sid}" not in url:
            urls.append(url)
    return urls


def test_researcher_sees_no_phi_anywhere(secure_env: Any) -> None:
    client, tokens = secure_env
    ids = _ids(client, tokens["admin"])
    for url in researcher_urls(ids):
        response = client.get(url, headers=_auth(tokens["researcher"]))
        assert response.status_code < 500, (url, response.status_code)
        assert_no_phi(response, url)


def test_researcher_writes_are_refused_without_echo(secure_env: Any) -> None:
    client, tokens = secure_env
    body = f'{{"accession": "S24-9", "patient": {{"id": "{SAMPLE_MRN}"}}}}'.encode()
    for url in ("/api/lis/cases", "/fhir", "/api/lis/hl7v2"):
        response = client.post(url, content=body, headers=_auth(tokens["researcher"]))
        assert response.status_code == 403
        assert_no_phi(response, url)


def test_pathologist_sees_the_phi_the_researcher_does_not(secure_env: Any) -> None:
    client, tokens = secure_env
    sid = _ids(client, tokens["admin"])[DICOM]
    detail = client.get(f"/api/slides/{sid}", headers=_auth(tokens["pathologist"]))
    assert SAMPLE_MRN in detail.text and SAMPLE_PATIENT_NAME in detail.text
    assert detail.json()["case"]["patient"]["id"] == SAMPLE_MRN


@pytest.mark.parametrize("name", ["label", "macro"])
def test_researcher_gets_404_for_label_and_macro_and_they_are_not_listed(
    secure_env: Any, name: str
) -> None:
    client, tokens = secure_env
    for sid in _ids(client, tokens["admin"]).values():
        response = client.get(
            f"/api/slides/{sid}/associated/{name}", headers=_auth(tokens["researcher"])
        )
        assert response.status_code == 404
        assert response.json()["error"] == "associated_image_not_found"
        detail = client.get(f"/api/slides/{sid}", headers=_auth(tokens["researcher"])).json()
        assert name not in detail["associated"]


def test_researcher_metadata_is_allow_listed(secure_env: Any) -> None:
    client, tokens = secure_env
    sid = _ids(client, tokens["admin"])[SVS]
    body = client.get(f"/api/slides/{sid}", headers=_auth(tokens["researcher"])).json()
    assert body["width"] == 8192 and body["mpp_x"] == 0.25 and body["objective_power"] == 40
    assert body["levels"] and body["name"] == sid
    for hidden in ("case", "path", "scan_date"):
        assert hidden not in body
    props = body["properties"]
    assert props["openslide.mpp-x"] == "0.25"
    for key in props:
        assert "Date" not in key and "Filename" not in key and "Barcode" not in key
        assert "ImageDescription" not in key and "User" not in key
        assert not key.startswith(("dicom.Patient", "dicom.Accession"))


def test_pathologist_gets_the_label(secure_env: Any) -> None:
    client, tokens = secure_env
    sid = _ids(client, tokens["admin"])[SVS]
    detail = client.get(f"/api/slides/{sid}", headers=_auth(tokens["pathologist"])).json()
    assert "label" in detail["associated"]
    response = client.get(
        f"/api/slides/{sid}/associated/label", headers=_auth(tokens["pathologist"])
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"


def test_researcher_with_collections_sees_only_those(samples_root: Path, tmp_path: Path) -> None:
    """A collection limits a token to slides under a root folder name or path prefix."""
    from starlette.testclient import TestClient

    from slideserver.api.app import create_app
    from tests.conftest import _security_settings, make_tokens

    settings = _security_settings(samples_root, tmp_path / "db.sqlite")
    tokens = make_tokens(
        settings,
        {
            "limited": ("researcher", "some-other-study"),
            "whole-root": ("researcher", samples_root.name),
            "admin": ("admin", ""),
        },
    )
    with TestClient(create_app(settings)) as client:  # type: ignore[arg-type]
        ids = _ids(client, tokens["admin"])
        limited = client.get("/api/slides", headers=_auth(tokens["limited"])).json()
        assert limited["items"] == []
        sid = ids[SVS]
        for url in (f"/api/slides/{sid}", f"/dz/{sid}.dzi", f"/dz/{sid}_files/0/0_0.jpeg"):
            response = client.get(url, headers=_auth(tokens["limited"]))
            assert response.status_code == 404, url
            assert client.get(url, headers=_auth(tokens["whole-root"])).status_code == 200
        whole = client.get("/api/slides", headers=_auth(tokens["whole-root"])).json()
        assert {i["id"] for i in whole["items"]} == set(ids.values())
