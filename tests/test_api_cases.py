"""Case, launch and reconcile routes, with the SQL catalog as the app's default."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from slideserver.api.app import create_app, default_catalog
from slideserver.catalog.cases import BlockIn, CaseOrder, PatientIn, SlideIn, SpecimenIn
from slideserver.catalog.sql import SqlCatalog
from slideserver.db.engine import default_database_url
from slideserver.readers.registry import default_registry
from slideserver.settings import Settings
from tests.helpers import assert_error

ORDER = CaseOrder(
    "S24-01234",
    PatientIn("MRN1", name="DOE^JANE", birth_date="1970-01-02"),
    specimens=(
        SpecimenIn(
            "A",
            "skin",
            (BlockIn("A1", (SlideIn("S24-01234-A1-HE", "HE"),)), BlockIn("A2")),
        ),
    ),
)


@pytest.fixture
def app_client(database_url: str, tiny_slides: Any) -> Iterator[TestClient]:
    tiny_slides("S24-01234_A1_HE.svs", barcode="S24-01234-A1-HE")
    tiny_slides("S24-01234_A2_KI67.tif")
    tiny_slides("S24-05678_B1_HE.tif")
    settings = Settings(roots=(tiny_slides.root,), database_url=database_url)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def catalog_of(client: TestClient) -> SqlCatalog:
    catalog = client.app.state.slideserver.catalog  # type: ignore[attr-defined]
    assert isinstance(catalog, SqlCatalog)
    return catalog


def test_case_from_lis_order(app_client: TestClient) -> None:
    catalog_of(app_client).apply_order(ORDER)
    body = app_client.get("/api/cases/S24-01234").json()
    assert set(body) >= {"accession", "patient", "specimens", "slides", "links"}
    assert body["accession"] == "S24-01234" and body["linked"] is True
    assert body["patient"]["id"] == "MRN1" and body["patient"]["name"] == "DOE^JANE"
    assert body["links"] == {"viewer": "/case/S24-01234"}
    assert [s["name"] for s in body["slides"]] == ["S24-01234_A1_HE.svs", "S24-01234_A2_KI67.tif"]
    specimen = body["specimens"][0]
    assert specimen["id"] == "A"
    blocks = {b["id"]: [s["name"] for s in b["slides"]] for b in specimen["blocks"]}
    assert blocks == {"A1": ["S24-01234_A1_HE.svs"], "A2": ["S24-01234_A2_KI67.tif"]}
    slide = body["slides"][0]
    assert slide["links"]["dzi"].startswith("/dz/") and slide["case"]["block"] == "A1"
    listed = app_client.get("/api/slides", params={"q": "A1_HE"}).json()["items"][0]
    assert listed["case"]["linked"] is True and listed["case"]["patient"]["id"] == "MRN1"


def test_case_from_file_names_only(app_client: TestClient) -> None:
    body = app_client.get("/api/cases/S24-05678").json()
    assert body["linked"] is False and body["patient"] is None
    assert [b["id"] for b in body["specimens"][0]["blocks"]] == ["B1"]
    assert [s["name"] for s in body["slides"]] == ["S24-05678_B1_HE.tif"]


def test_unknown_case_and_bad_accession(app_client: TestClient) -> None:
    assert_error(app_client.get("/api/cases/S99-99999"), 404, "case_not_found")
    assert_error(app_client.get("/api/cases/" + "X" * 100), 400)


def test_launch_redirects_to_the_viewer(app_client: TestClient) -> None:
    response = app_client.get("/launch", params={"accession": "s24-01234"}, follow_redirects=False)
    assert response.status_code == 302 and response.headers["location"] == "/case/S24-01234"
    response = app_client.get("/launch", params={"patient": "MRN 1/2"}, follow_redirects=False)
    assert response.status_code == 302 and response.headers["location"] == "/?patient=MRN+1%2F2"
    response = app_client.get("/launch", params={"accession": "../x"}, follow_redirects=False)
    assert response.headers["location"] == "/case/..%2FX"
    assert_error(app_client.get("/launch"), 400)


def test_reconcile_lists_conflicts(app_client: TestClient) -> None:
    catalog = catalog_of(app_client)
    catalog.apply_order(ORDER)
    catalog.apply_order(
        CaseOrder(
            "S24-09999",
            PatientIn("MRN2"),
            specimens=(SpecimenIn("A", blocks=(BlockIn("A1", (SlideIn("S24-01234-A1-HE"),)),)),),
        )
    )
    catalog.apply_order(CaseOrder("S24-01234", PatientIn("MRN3")))
    first = app_client.get("/api/reconcile", params={"limit": 1}).json()
    assert len(first["items"]) == 1 and first["next"]
    rest = app_client.get("/api/reconcile", params={"cursor": first["next"]}).json()
    kinds = [i["kind"] for i in first["items"] + rest["items"]]
    assert kinds == ["barcode_claimed", "case_patient_changed"]
    assert "MRN" not in str(first) + str(rest)
    assert_error(app_client.get("/api/reconcile", params={"status": "maybe"}), 400)


def test_default_catalog_is_sqlite_in_the_first_root(tmp_path: Path) -> None:
    settings = Settings(roots=(tmp_path,))
    assert default_database_url(settings) == f"sqlite:///{tmp_path / '.slideserver.db'}"
    url = "postgresql://u@h/db"
    assert default_database_url(Settings(roots=(tmp_path,), database_url=url)).startswith(
        "postgresql+psycopg://"
    )
    catalog = default_catalog(settings, default_registry())
    try:
        assert isinstance(catalog, SqlCatalog)
        assert (tmp_path / ".slideserver.db").exists()
    finally:
        catalog.close()


def test_read_only_root_falls_back_to_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("os.access", lambda *a: False)
    monkeypatch.chdir(tmp_path)
    url = default_database_url(Settings(roots=(Path("/nonexistent"),)))
    assert url == f"sqlite:///{tmp_path / '.slideserver.db'}"


def test_samples_link_by_name_and_dicom(samples_dir: dict[str, Path], tmp_path: Path) -> None:
    root = next(iter(samples_dir.values())).parent
    catalog = SqlCatalog(f"sqlite:///{tmp_path / 'c.db'}", [root], default_registry())
    try:
        catalog.scan()
        case = catalog.get_case("S24-05678")
        assert case is not None
        names = {s.name: s for s in case.slides}
        assert {"S24-05678_B1_HE.ome.tiff", "S24-05678_B2_PAS"} <= set(names)
        assert names["S24-05678_B2_PAS"].block == "B2" and names["S24-05678_B2_PAS"].stain
        assert case.patient is not None  # from the DICOM header
        other = catalog.get_case("S24-01234")
        assert other is not None and {s.block for s in other.slides} == {"A1", "A2"}
    finally:
        catalog.close()
