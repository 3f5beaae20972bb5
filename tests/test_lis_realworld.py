"""LIS conformance on messages other projects wrote (tests/fixtures/realworld, see SOURCES.md).

HL7 v2.5.1 OML^O21 examples and ORM^O01 samples from nHapi, FHIR R4 specification examples; where
a test needs a variant (a cancel's new order, PID-2 instead of PID-3), it edits one field of a
real message and says so.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from slideserver.catalog.schema import cases, patients
from slideserver.lis.fhir.outbound import imaging_study
from slideserver.lis.hl7v2 import parse_message
from slideserver.lis.policy import AccessionPolicy
from tests.fixtures.lis.support import read, realworld, sql_lis_client

CANCEL = "hl7/nhapi-ORM_O01-23-EVN-cancel.hl7"
OML = "hl7/nhapi-OML_O21-{}.hl7"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Any]:
    with sql_lis_client(tmp_path) as c:
        yield c


@pytest.fixture
def refusing_client(tmp_path: Path) -> Iterator[Any]:
    with sql_lis_client(tmp_path, lis_missing_accession="refuse") as c:
        yield c


def post_hl7(client: Any, message: str | bytes) -> tuple[int, str]:
    body = message.encode() if isinstance(message, str) else message
    response = client.post("/api/lis/hl7v2", content=body)
    return response.status_code, response.text


def count(client: Any, table: Any) -> int:
    engine = client.app.state.slideserver.catalog.engine
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def catalog(client: Any) -> Any:
    return client.app.state.slideserver.catalog


# --- 10: ORC-1 order control ---


def test_cancel_of_an_unknown_order_creates_no_case(client: Any) -> None:
    status, ack = post_hl7(client, realworld(CANCEL))
    assert status == 200 and "MSA|AA|1234567890|order not known; nothing cancelled" in ack
    assert count(client, cases) == 0


def test_cancel_after_new_order_cancels_that_case(client: Any) -> None:
    cancel = realworld(CANCEL)
    new = cancel.replace("ORC|CA|1410|3121||CA", "ORC|NW|1410|3121||")  # the order it cancels
    assert post_hl7(client, new)[0] == 200
    status, ack = post_hl7(client, cancel)
    assert status == 200 and "case cancelled; slides stay linked" in ack
    case = catalog(client).get_case("3121")
    assert case is not None and case.status == "cancelled"
    assert count(client, cases) == 1


def test_unsupported_order_control_is_an_error(client: Any) -> None:
    held = realworld(CANCEL).replace("ORC|CA|", "ORC|HD|")
    status, ack = post_hl7(client, held)
    assert status == 422
    assert "MSA|AE|" in ack and "103^Table value not found" in ack and "ORC^1^1" in ack


def test_status_change_updates_without_creating(client: Any) -> None:
    post_hl7(client, realworld(OML.format(2)))  # SC from the laboratory: creates case 555
    status, ack = post_hl7(client, realworld(OML.format(4)))  # SC: completed, same order
    assert status == 200 and "case updated" in ack
    assert count(client, cases) == 1


# --- 11 and 14: one order is one case; a missing accession is pending, never guessed ---


def test_placer_order_then_laboratory_status_change_is_one_case(client: Any) -> None:
    status, ack = post_hl7(client, realworld(OML.format(1)))
    assert status == 200 and "order pending its accession number" in ack
    assert catalog(client).get_case("12345678") is None  # the placer number is not the accession
    status, ack = post_hl7(client, realworld(OML.format(2)))
    assert status == 200 and "case updated" in ack
    assert count(client, cases) == 1
    case = catalog(client).get_case("555")
    assert case is not None and case.status == "active"
    assert catalog(client).conflicts() == []


def test_missing_accession_is_refused_when_configured(refusing_client: Any) -> None:
    status, ack = post_hl7(refusing_client, realworld(OML.format(1)))
    assert status == 422 and "MSA|AE|msgOP123|" in ack and "ORC^1^3" in ack
    assert count(refusing_client, cases) == 0


def test_a_placer_sender_numbers_its_own_cases() -> None:
    policy = AccessionPolicy.parse("filler,OP=placer")
    orders = parse_message(realworld(OML.format(1)), policy).content
    assert isinstance(orders, tuple)
    assert (orders[0].accession, orders[0].accession_issuer) == ("12345678", "gastric")


# --- 12: every ORC/OBR group is its own order ---


def test_two_orders_in_one_message_are_two_cases(tmp_path: Path) -> None:
    # the Chemistry system (OF) orders from the automation here: its numbers are in OBR-2
    with sql_lis_client(tmp_path, lis_accession_source="filler,OF=placer") as client:
        status, ack = post_hl7(client, realworld(OML.format(6)))
        assert status == 200, ack
        first, second = catalog(client).get_case("555_1"), catalog(client).get_case("555_2")
    assert first is not None and second is not None
    assert [s.id for s in first.specimens] == ["123456781"]
    assert [s.id for s in second.specimens] == ["123456782"]


def test_two_orders_without_filler_numbers_are_two_pending_orders(client: Any) -> None:
    status, ack = post_hl7(client, realworld(OML.format(6)))
    assert status == 200 and ack.count("order pending its accession number") == 2
    assert count(client, cases) == 2


def with_control_id(message: str) -> str:
    """Examples 5 and 7 leave MSH-10 (required) empty, which is answered AR; give them one."""
    return message.replace("|OML^O21||T|", "|OML^O21|MSG-7|T|", 1)


def test_a_message_without_control_id_is_rejected(client: Any) -> None:
    status, ack = post_hl7(client, realworld(OML.format(7)))
    assert status == 400 and "MSA|AR|" in ack and "MSH^1^10" in ack


def test_each_order_of_a_message_keeps_its_numbers() -> None:
    orders = parse_message(with_control_id(realworld(OML.format(7)))).content
    assert isinstance(orders, tuple)
    assert [(o.placer, o.filler, o.accession) for o in orders] == [
        ("id1", "81641", "81641"),
        ("id2", "81642", "81642"),
        ("id3", "81643", "81643"),
    ]
    assert [[s.id for s in o.specimens] for o in orders] == [
        ["123456781"],
        ["123456782"],
        ["123456783"],
    ]


# --- 13: PID-2 when PID-3 is empty ---


def test_patient_identifier_in_pid2_only_is_accepted(client: Any) -> None:
    message = with_control_id(realworld(OML.format(7)))
    message = message.replace("PID|||14^^^^HC-HCE|", "PID||14^^^^HC-HCE||")
    orders = parse_message(message).content
    assert isinstance(orders, tuple)
    assert (orders[0].patient.identifier, orders[0].patient.identifier_type) == ("14", "HC-HCE")
    assert post_hl7(client, message)[0] == 200


# --- 15: one validation for every interface ---


def test_nul_in_an_hl7_field_is_refused_like_in_json(client: Any) -> None:
    message = realworld(OML.format(1)).replace("EVERYMAN^ADAM", "EVERY\x00MAN^ADAM")
    status, ack = post_hl7(client, message)
    assert status == 422 and "PID^1^5" in ack and "control characters" in ack
    order = json.loads(read("json_order.json"))
    order["patient"]["name"] = "DOE\x00^JANE"
    refused = client.post("/api/lis/cases", json=order)
    assert refused.status_code == 422 and "patient.name" in refused.json()["detail"]


def test_invalid_utf8_is_refused_like_in_json(client: Any) -> None:
    message = realworld(OML.format(1)).encode().replace(b"EVERYMAN", b"EVERY\xffMAN")
    status, ack = post_hl7(client, message)
    assert status == 422 and "PID^1^5" in ack and "not valid" in ack
    body = read("json_order.json").encode().replace(b"DOE^JANE", b"DOE\xff^JANE")
    refused = client.post(
        "/api/lis/cases", content=body, headers={"content-type": "application/json"}
    )
    assert refused.status_code == 422 and "patient.name" in refused.json()["detail"]


def test_latin1_declared_in_msh18_is_decoded_as_latin1(client: Any) -> None:
    message = realworld(OML.format(1)).replace("|2.5.1|123", "|2.5.1||||||8859/1")
    body = message.replace("EVERYMAN", "EVERYM\u00c4N").encode("latin-1")
    assert post_hl7(client, body)[0] == 200


# --- 16: FHIR references, identifiers, contained resources, media types ---


def lipid_bundle(with_patient: bool) -> dict[str, Any]:
    """The specification's lipid ServiceRequest (and patient f001) in a transaction."""
    request = json.loads(realworld("fhir/servicerequest-example-lipid.json"))
    request["contained"][1]["accessionIdentifier"] = {  # the laboratory's number, on the serum
        "system": "http://acme.org/accessions",
        "value": "S15-0012",
    }
    entries = [
        {"fullUrl": "urn:uuid:sr", "resource": request, "request": {"method": "POST"}},
    ]
    if with_patient:
        patient = json.loads(realworld("fhir/patient-example-f001-pieter.json"))
        request["subject"] = {"reference": "Patient/f001"}
        entries.append(
            {
                "fullUrl": "http://example.org/fhir/Patient/f001",
                "resource": patient,
                "request": {"method": "PUT", "url": "Patient/f001"},
            }
        )
    for e in entries:
        e["request"].setdefault("url", e["resource"]["resourceType"])
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def post_fhir(client: Any, data: Any, media: str = "application/fhir+json") -> Any:
    return client.post("/fhir", content=json.dumps(data), headers={"content-type": media})


def test_unresolvable_subject_is_a_422_never_an_mrn(client: Any) -> None:
    response = post_fhir(client, lipid_bundle(with_patient=False))
    assert response.status_code == 422
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["Bundle.entry[0].resource.subject.reference"]
    assert count(client, patients) == 0


def test_subject_resolved_in_the_bundle_contained_specimen_and_accession(client: Any) -> None:
    response = post_fhir(client, lipid_bundle(with_patient=True))
    assert response.status_code == 200, response.text
    case = catalog(client).get_case("S15-0012")
    assert case is not None and case.patient is not None
    assert case.patient.identifier == "738472983"  # the Patient's identifier, not its id
    assert case.patient.issuer == "urn:oid:2.16.840.1.113883.2.4.6.3"
    assert [s.id for s in case.specimens] == ["20150107-0012"]
    read_back = client.get("/fhir/Patient/738472983").json()
    assert "type" not in read_back["identifier"][0]  # sent untyped, never made MR


@pytest.mark.parametrize("media", ["application/json", "application/fhir+json; fhirVersion=4.0"])
def test_fhir_json_media_types_are_accepted(client: Any, media: str) -> None:
    assert post_fhir(client, lipid_bundle(with_patient=True), media).status_code == 200


@pytest.mark.parametrize("media", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_other_media_types_are_415(client: Any, media: str) -> None:
    response = post_fhir(client, lipid_bundle(with_patient=True), media)
    assert response.status_code == 415
    assert response.json()["resourceType"] == "OperationOutcome"
    assert count(client, cases) == 0


# --- 17: ImagingStudy UIDs ---


def test_imaging_study_uses_the_files_uids_and_derives_only_for_others() -> None:
    from slideserver.catalog.cases import CaseView, SlideView

    dicom = SlideView(
        "d1", "x", None, None, None, None, "ok", "dicom", study_uid="1.2.3", series_uid="1.2.3.4"
    )
    other = SlideView("t1", "y.svs", None, None, None, None, "ok", "aperio")
    only_dicom = imaging_study(CaseView("S1", "", None, slides=(dicom,)))
    assert only_dicom.identifier is not None and only_dicom.series is not None
    assert only_dicom.identifier[1].value == "urn:oid:1.2.3"
    assert only_dicom.series[0].uid == "1.2.3.4"
    mixed = imaging_study(CaseView("S1", "", None, slides=(dicom, copy.copy(other))))
    assert mixed.identifier is not None and mixed.series is not None
    assert str(mixed.identifier[1].value).startswith("urn:oid:2.25.")
    assert mixed.series[0].uid == "1.2.3.4" and str(mixed.series[1].uid).startswith("2.25.")


# --- 18: the README's walk-through makes one coherent case ---


def test_readme_fixtures_in_readme_order_make_one_case_and_one_patient(client: Any) -> None:
    json_order = client.post(
        "/api/lis/cases",
        content=read("json_order.json"),
        headers={"content-type": "application/json"},
    )
    assert json_order.status_code == 201, json_order.text
    assert post_hl7(client, read("orm_o01.hl7"))[0] == 200
    assert post_fhir(client, json.loads(read("fhir_transaction.json"))).status_code == 200
    assert count(client, cases) == 1
    assert count(client, patients) == 1
    assert catalog(client).conflicts() == []
