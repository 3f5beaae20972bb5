"""Who saw this patient's slides: audit rows of slide reads name the patient, case and resource.

A slide read names only the slide in its URL; its row takes the case (accession) and patient
(MRN) the slide was linked to when it was read, so ``GET /api/audit?patient=MRN`` answers the
question from the audit table alone, and relinking the slide later changes no old row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.helpers import SVS
from tests.test_security_audit import _app, _auth

CASE = "S24-01234"
MRN = "MRN-0077777"
LABEL = "GET /api/slides/{slide_id}/associated/{name}"


def _linked_svs(client: Any, tokens: dict[str, str]) -> str:
    """Link the SVS sample's case to patient MRN through the LIS; return the slide's ID."""
    order = {"accession": CASE, "patient": {"identifier": MRN}}
    response = client.post("/api/lis/cases", json=order, headers=_auth(tokens["lis"]))
    assert response.status_code in (200, 201), response.text
    linked: list[str] = response.json()["linked_slides"]
    items = client.get("/api/slides", headers=_auth(tokens["admin"])).json()["items"]
    sid = next(str(i["id"]) for i in items if i["name"] == SVS)
    assert sid in linked
    return sid


def _audit(client: Any, tokens: dict[str, str], **params: str) -> list[dict[str, Any]]:
    response = client.get(
        "/api/audit", params={"limit": "1000", **params}, headers=_auth(tokens["admin"])
    )
    assert response.status_code == 200, response.text
    return [r for r in response.json()["items"] if r["subject"] != "token:admin"]


def test_a_label_read_is_found_by_the_patient_with_its_case_and_resource(
    samples_root: Path, tmp_path: Path
) -> None:
    from starlette.testclient import TestClient

    app, tokens, _ = _app(samples_root, tmp_path / "db.sqlite")
    with TestClient(app) as client:
        sid = _linked_svs(client, tokens)
        label = client.get(
            f"/api/slides/{sid}/associated/label", headers=_auth(tokens["pathologist"])
        )
        assert label.status_code == 200
        rows = _audit(client, tokens, patient=MRN)
        by_accession = _audit(client, tokens, accession=CASE, resource="associated/label")
    reads = [r for r in rows if r["action"] == LABEL]
    assert len(reads) == 1
    row = reads[0]
    assert row["subject"] == "token:pathologist" and row["kind"] == "request"
    assert (row["slide_id"], row["case_id"], row["patient_id"]) == (sid, CASE, MRN)
    assert row["resource"] == "associated/label" and row["status"] == 200
    assert [r["id"] for r in by_accession] == [row["id"]]


def test_a_slide_detail_row_names_no_resource(samples_root: Path, tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    app, tokens, _ = _app(samples_root, tmp_path / "db.sqlite")
    with TestClient(app) as client:
        sid = _linked_svs(client, tokens)
        client.get(f"/api/slides/{sid}", headers=_auth(tokens["pathologist"]))
        rows = _audit(client, tokens, slide=sid, kind="request")
    assert [(r["resource"], r["patient_id"], r["case_id"]) for r in rows] == [(None, MRN, CASE)]


def test_tile_summaries_carry_the_patient_and_case(samples_root: Path, tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    app, tokens, _ = _app(samples_root, tmp_path / "db.sqlite")
    with TestClient(app) as client:
        sid = _linked_svs(client, tokens)
        for col in range(2):
            client.get(f"/dz/{sid}_files/9/{col}_0.jpeg", headers=_auth(tokens["researcher"]))
        client.get(f"/iiif/3/{sid}/full/64,/0/default.jpg", headers=_auth(tokens["researcher"]))
        rows = _audit(client, tokens, kind="tiles", patient=MRN)
    assert [(r["subject"], r["slide_id"], r["case_id"], r["count"]) for r in rows] == [
        ("token:researcher", sid, CASE, 3)
    ]


def test_relinking_a_slide_later_changes_no_old_row(samples_root: Path, tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    app, tokens, _ = _app(samples_root, tmp_path / "db.sqlite")
    security = app.state.security
    with TestClient(app) as client:
        sid = _linked_svs(client, tokens)
        pathologist = _auth(tokens["pathologist"])
        client.get(f"/api/slides/{sid}/associated/label", headers=pathologist)
        first = _audit(client, tokens, patient=MRN, resource="associated/label")
        # The catalog now links the slide to another patient's case (as an LIS correction
        # would); the lookup's short cache is emptied as its time-out would.
        security.subjects_of = lambda slide_id: ("S24-05555", "MRN-0055555")
        security.forget_subjects()
        client.get(f"/api/slides/{sid}/associated/label", headers=pathologist)
        old = _audit(client, tokens, patient=MRN, resource="associated/label")
        new = _audit(client, tokens, patient="MRN-0055555", resource="associated/label")
    assert len(first) == 1 and old == first
    assert [(r["slide_id"], r["case_id"]) for r in new] == [(sid, "S24-05555")]


def test_lis_writes_name_the_orders_case_and_patient(samples_root: Path, tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    app, tokens, _ = _app(samples_root, tmp_path / "db.sqlite")
    order = {"accession": "S24-09999", "patient": {"identifier": "MRN-0099999"}}
    with TestClient(app) as client:
        response = client.post("/api/lis/cases", json=order, headers=_auth(tokens["lis"]))
        assert response.status_code in (200, 201), response.text
        rows = _audit(client, tokens, patient="MRN-0099999")

    assert [(r["kind"], r["action"], r["case_id"]) for r in rows] == [
        ("request", "POST /api/lis/cases", "S24-09999")
    ]


def test_hl7v2_writes_name_the_orders_case_and_patient(samples_root: Path, tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    app, tokens, _ = _app(samples_root, tmp_path / "db.sqlite")
    message = (Path(__file__).parent / "fixtures" / "lis" / "orm_o01.hl7").read_bytes()
    with TestClient(app) as client:
        response = client.post(
            "/api/lis/hl7v2",
            content=message,
            headers={**_auth(tokens["lis"]), "Content-Type": "x-application/hl7-v2+er7"},
        )
        assert response.status_code == 200, response.text
        rows = _audit(client, tokens, patient="MRN-0012345")

    assert [(r["kind"], r["action"], r["case_id"]) for r in rows] == [
        ("request", "POST /api/lis/hl7v2", "S24-01234")
    ]
