"""The JSON order of POST /api/lis/cases: every field, clear errors, idempotent over HTTP."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slideserver.catalog.cases import CaseOrder, PatientIn
from slideserver.lis.json_orders import parse_case_order
from slideserver.lis.validate import OrderError
from tests.fixtures.lis import support
from tests.fixtures.lis.support import JANE, LAB, SAMPLE_SPECIMENS, read, sql_lis_client


def sample() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(read("json_order.json"))
    return data


def test_every_field() -> None:
    order = parse_case_order(sample())
    assert order == CaseOrder(
        accession="S24-01234",
        accession_issuer=LAB,
        patient=JANE,
        specimens=SAMPLE_SPECIMENS,
        source="json",
        message_id="lis-json-0001",
    )


def test_minimal_order_and_normalized_values() -> None:
    order = parse_case_order(
        {
            "accession": " S24-01234 ",
            "patient": {
                "identifier": "MRN-0012345",
                "sex": "female",
                "birth_date": "19610412",
                "name": "DOE^JANE^^",
            },
        }
    )
    assert order.accession == "S24-01234"
    assert order.accession_issuer == ""
    assert order.specimens == ()
    assert order.message_id is None
    assert order.patient == PatientIn(
        "MRN-0012345", name="DOE^JANE", birth_date="1961-04-12", sex="F"
    )


@pytest.mark.parametrize(
    ("mutate", "field", "words"),
    [
        (lambda d: d.pop("accession"), "accession", "required"),
        (lambda d: d.update(accession=12), "accession", "string"),
        (lambda d: d.update(accession="x" * 65), "accession", "longer than 64"),
        (lambda d: d.update(accession="S24\n1"), "accession", "control"),
        (lambda d: d.pop("patient"), "patient", "object"),
        (lambda d: d["patient"].pop("identifier"), "patient.identifier", "required"),
        (lambda d: d["patient"].update(birth_date="1961-02-30"), "patient.birth_date", "valid"),
        (lambda d: d["patient"].update(birth_date="April 1961"), "patient.birth_date", "date"),
        (lambda d: d["patient"].update(sex="X"), "patient.sex", "one of"),
        (lambda d: d["patient"].update(mrn="1"), "patient", "unknown field 'mrn'"),
        (lambda d: d.update(specimens={}), "specimens", "array"),
        (lambda d: d["specimens"][0].pop("id"), "specimens[0].id", "required"),
        (
            lambda d: d["specimens"][0]["blocks"][1].update(id=""),
            "specimens[0].blocks[1].id",
            "required",
        ),
        (
            lambda d: d["specimens"][0]["blocks"][0]["slides"][0].pop("barcode"),
            "specimens[0].blocks[0].slides[0].barcode",
            "required",
        ),
        (
            lambda d: d["specimens"][0]["blocks"][0]["slides"][0].update(stain=["HE"]),
            "specimens[0].blocks[0].slides[0].stain",
            "string",
        ),
        (
            lambda d: d["specimens"][0]["blocks"][1].update(id="A1"),
            "specimens[0].blocks",
            "'A1' appears more than once",
        ),
        (
            lambda d: d["specimens"][0]["blocks"][1]["slides"][0].update(barcode="S24-01234-A1-1"),
            "specimens",
            "barcode 'S24-01234-A1-1' appears more than once",
        ),
    ],
)
def test_errors_name_the_field(mutate: Any, field: str, words: str) -> None:
    data = copy.deepcopy(sample())
    mutate(data)
    with pytest.raises(OrderError) as caught:
        parse_case_order(data)
    assert caught.value.field == field
    assert words in str(caught.value)


def test_body_must_be_an_object() -> None:
    with pytest.raises(OrderError, match="body: must be an object, not an array"):
        parse_case_order([])


def test_birth_date_error_does_not_echo_the_value() -> None:
    data = sample()
    data["patient"]["birth_date"] = "1961-13-45"
    with pytest.raises(OrderError) as caught:
        parse_case_order(data)
    assert "1961-13-45" not in str(caught.value)


# --- over HTTP, against the real SQL catalog ---


@pytest.fixture(scope="module")
def lis_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with sql_lis_client(tmp_path_factory.mktemp("lis")) as client:
        yield client


def test_post_case_is_idempotent(lis_client: Any) -> None:
    first = lis_client.post("/api/lis/cases", json=sample())
    assert first.status_code == 201, first.text
    assert first.json()["created"] is True
    assert first.json()["changed"] is True
    assert first.headers["cache-control"] == "no-store"
    again = lis_client.post("/api/lis/cases", json=sample())
    assert again.status_code == 200
    assert again.json() == {**first.json(), "created": False, "changed": False}
    case = lis_client.app.state.slideserver.catalog.get_case("S24-01234")
    assert case.patient.identifier == "MRN-0012345"
    assert set(case.expected_barcodes) == {"S24-01234-A1-1", "S24-01234-A2-1"}


def test_post_case_refuses_other_media_types(lis_client: Any) -> None:
    refused = lis_client.post(
        "/api/lis/cases", content=json.dumps(sample()), headers={"content-type": "text/plain"}
    )
    assert refused.status_code == 415
    assert refused.json()["error"] == "unsupported_media_type"


def test_post_case_errors(lis_client: Any) -> None:
    broken = lis_client.post(
        "/api/lis/cases", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert broken.status_code == 400
    assert broken.json()["error"] == "bad_request"
    data = sample()
    data["accession"] = "S24-09876"
    del data["patient"]["identifier"]
    invalid = lis_client.post("/api/lis/cases", json=data)
    assert invalid.status_code == 422
    assert invalid.json() == {
        "error": "invalid_order",
        "detail": "patient.identifier: is required",
    }
    huge = lis_client.post("/api/lis/cases", content=b" " * (4 * 1024 * 1024 + 1))
    assert huge.status_code == 413
    assert lis_client.app.state.slideserver.catalog.get_case("S24-09876") is None


def test_without_link_store_answers_503_links_unavailable(tmp_path: Path) -> None:
    with support.lis_client(tmp_path, None, memory_catalog=True) as client:
        for method, path in (
            ("POST", "/api/lis/cases"),
            ("POST", "/api/lis/hl7v2"),
            ("POST", "/fhir"),
            ("GET", "/fhir/ImagingStudy?identifier=S24-01234"),
            ("GET", "/api/cases/S24-01234"),
            ("GET", "/api/reconcile"),
        ):
            response = client.request(method, path, content=b"{}")
            assert response.status_code == 503, path
            assert response.json()["error"] == "links_unavailable"
