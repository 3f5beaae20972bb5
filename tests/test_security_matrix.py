"""Every role against every route: allowed roles pass, others get 403, no credentials 401."""

from __future__ import annotations

from typing import Any

import pytest

from slideserver.api.policy import POLICY
from tests.helpers import SVS

ROLES = ("admin", "pathologist", "researcher", "lis")
ACCESSION = "S24-01234"
MRN = "MRN-0012345"


def _dicomweb_url(template: str) -> str:
    """A DICOMweb URL of ``template`` naming UIDs that exist nowhere (QIDO: a patient)."""
    url = template.replace("{frames}", "1")
    for name in ("{study}", "{series}", "{instance}"):
        url = url.replace(name, "1.2.3")
    return url + ("?PatientID=" + MRN if url == "/dicomweb/studies" else "")


# (method, URL with {sid} for the SVS slide's ID, body, route template)
REQUESTS: list[tuple[str, str, bytes | None, str]] = [
    ("GET", "/metrics", None, "/metrics"),
    ("GET", "/api/slides", None, "/api/slides"),
    ("GET", "/api/slides/{sid}", None, "/api/slides/{slide_id}"),
    ("GET", "/api/slides/{sid}/thumbnail?max=64", None, "/api/slides/{slide_id}/thumbnail"),
    (
        "GET",
        "/api/slides/{sid}/associated/thumbnail",
        None,
        "/api/slides/{slide_id}/associated/{name}",
    ),
    ("GET", "/dz/{sid}.dzi", None, "/dz/{slide_id}.dzi"),
    ("GET", "/dz/{sid}_files/0/0_0.jpeg", None, "/dz/{slide_id}_files/{level}/{col}_{row}.{fmt}"),
    ("GET", "/iiif/3/{sid}", None, "/iiif/3/{slide_id}"),
    ("GET", "/iiif/3/{sid}/info.json", None, "/iiif/3/{slide_id}/info.json"),
    (
        "GET",
        "/iiif/3/{sid}/full/64,/0/default.jpg",
        None,
        "/iiif/3/{slide_id}/{region}/{size}/{rotation}/{quality}.{fmt}",
    ),
    ("GET", f"/api/cases/{ACCESSION}", None, "/api/cases/{accession}"),
    ("GET", f"/launch?accession={ACCESSION}", None, "/launch"),
    ("GET", "/api/reconcile", None, "/api/reconcile"),
    ("POST", "/api/lis/cases", b"{}", "/api/lis/cases"),
    ("POST", "/api/lis/hl7v2", b"not hl7", "/api/lis/hl7v2"),
    ("POST", "/fhir", b"{}", "/fhir"),
    ("GET", f"/fhir/Patient/{MRN}", None, "/fhir/Patient/{id}"),
    ("GET", "/fhir/Specimen?container-id=S24-01234-A1", None, "/fhir/Specimen"),
    ("GET", f"/fhir/ImagingStudy?identifier={ACCESSION}", None, "/fhir/ImagingStudy"),
    ("GET", "/fhir/Endpoint/nothing", None, "/fhir/Endpoint/{id}"),
    ("GET", "/api/audit", None, "/api/audit"),
    ("GET", "/api/session", None, "/api/session"),
    ("POST", f"/api/ehr/lookup?accession={ACCESSION}", None, "/api/ehr/lookup"),  # issue 14
    *[
        ("GET", _dicomweb_url(template), None, template)
        for template in POLICY
        if template.startswith("/dicomweb/") and POLICY[template].read
    ],
    # issue 13: STOW-RS (no DICOM store in this app: allowed callers get 404)
    ("POST", "/dicomweb/studies", b"not multipart", "/dicomweb/studies"),
    ("POST", "/dicomweb/studies/1.2.3", b"not multipart", "/dicomweb/studies/{study}"),
    # sign-out reports (issue 14)
    ("GET", f"/api/cases/{ACCESSION}/reports", None, "/api/cases/{accession}/reports"),
    ("POST", f"/api/cases/{ACCESSION}/reports", b"{}", "/api/cases/{accession}/reports"),
    ("GET", "/api/reports/nothing", None, "/api/reports/{id}"),
    ("PUT", "/api/reports/nothing", b"{}", "/api/reports/{id}"),
    ("POST", "/api/reports/nothing/sign", None, "/api/reports/{id}/sign"),
    ("POST", "/api/reports/nothing/amend", b"{}", "/api/reports/{id}/amend"),
    ("GET", "/api/reports/nothing/pdf", None, "/api/reports/{id}/pdf"),
    ("POST", "/api/reports/nothing/deliveries/retry", None, "/api/reports/{id}/deliveries/retry"),
    # annotations (issue 16); a layer's own rules (annotations/access.py) come after these
    ("GET", "/api/slides/{sid}/annotations", None, "/api/slides/{slide_id}/annotations"),
    ("POST", "/api/slides/{sid}/annotations", b"{}", "/api/slides/{slide_id}/annotations"),
    (
        "POST",
        "/api/slides/{sid}/annotations/import?format=geojson",
        b"{}",
        "/api/slides/{slide_id}/annotations/import",
    ),
    (
        "GET",
        "/api/slides/{sid}/annotations/export?format=geojson",
        None,
        "/api/slides/{slide_id}/annotations/export",
    ),
    (
        "GET",
        "/api/slides/{sid}/annotations/density",
        None,
        "/api/slides/{slide_id}/annotations/density",
    ),
    (
        "GET",
        "/api/slides/{sid}/annotation-layers",
        None,
        "/api/slides/{slide_id}/annotation-layers",
    ),
    (
        "POST",
        "/api/slides/{sid}/annotation-layers",
        b"{}",
        "/api/slides/{slide_id}/annotation-layers",
    ),
    ("GET", "/api/annotations/nothing", None, "/api/annotations/{annotation_id}"),
    ("PUT", "/api/annotations/nothing", b"{}", "/api/annotations/{annotation_id}"),
    ("DELETE", "/api/annotations/nothing", None, "/api/annotations/{annotation_id}"),
    ("GET", "/api/annotations/nothing/history", None, "/api/annotations/{annotation_id}/history"),
    ("PUT", "/api/annotation-layers/nothing", b"{}", "/api/annotation-layers/{layer_id}"),
    ("DELETE", "/api/annotation-layers/nothing", None, "/api/annotation-layers/{layer_id}"),
]


def _svs_id(client: Any, token: str) -> str:
    items = client.get(
        "/api/slides", params={"limit": 1000}, headers={"Authorization": f"Bearer {token}"}
    ).json()["items"]
    svs_id: str = next(i["id"] for i in items if i["name"] == SVS)
    return svs_id


def _call(client: Any, method: str, url: str, body: bytes | None, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.request(method, url, content=body, headers=headers)


def test_the_matrix_covers_every_protected_route() -> None:
    covered = {template for *_, template in REQUESTS}
    protected = {path for path, rule in POLICY.items() if not rule.public}
    assert protected <= covered, protected - covered


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("method", "url", "body", "template"), REQUESTS)
def test_role_against_route(
    secure_env: Any, role: str, method: str, url: str, body: bytes | None, template: str
) -> None:
    client, tokens = secure_env
    url = url.replace("{sid}", _svs_id(client, tokens["admin"]))
    response = _call(client, method, url, body, tokens[role])
    allowed = role in POLICY[template].roles_for(method)
    if allowed:
        assert response.status_code not in (401, 403), (role, url, response.text[:200])
        assert response.status_code < 500, (role, url, response.text[:200])
    else:
        assert response.status_code == 403, (role, url, response.status_code)
        assert response.json()["error"] == "forbidden"


@pytest.mark.parametrize(("method", "url", "body", "template"), REQUESTS)
def test_no_credentials_get_401(
    secure_env: Any, method: str, url: str, body: bytes | None, template: str
) -> None:
    client, tokens = secure_env
    url = url.replace("{sid}", _svs_id(client, tokens["admin"]))
    response = _call(client, method, url, body, None)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("credential", ["garbage", "ss_not-a-real-token", "Basic abc"])
def test_bad_api_tokens_get_401(secure_env: Any, credential: str) -> None:
    client, _ = secure_env
    header = credential if credential.startswith("Basic") else f"Bearer {credential}"
    response = client.get("/api/slides", headers={"Authorization": header})
    assert response.status_code == 401


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_stays_open(secure_env: Any, path: str) -> None:
    client, _ = secure_env
    assert client.get(path).status_code == 200
    assert client.get(path, headers={"Authorization": "Bearer garbage"}).status_code == 200


def test_authenticated_images_are_privately_cached(secure_env: Any) -> None:
    client, tokens = secure_env
    sid = _svs_id(client, tokens["pathologist"])
    headers = {"Authorization": f"Bearer {tokens['pathologist']}"}
    response = client.get(f"/dz/{sid}_files/0/0_0.jpeg", headers=headers)
    assert response.status_code == 200
    assert response.headers["cache-control"].startswith("private")


def test_open_mode_images_stay_public(client: Any) -> None:
    from tests.helpers import slide_id

    sid = slide_id(client, SVS)
    response = client.get(f"/dz/{sid}_files/0/0_0.jpeg")
    assert response.headers["cache-control"].startswith("public")
