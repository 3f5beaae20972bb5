"""FHIR R4 (fhir.resources.R4B models): transaction Bundles in, validated resources out."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.endpoint import Endpoint
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.specimen import Specimen

from slideserver.catalog.cases import (
    ApplyResult,
    BlockView,
    CaseOrder,
    CaseView,
    PatientIn,
    SlideView,
    SpecimenView,
)
from slideserver.lis import fhir
from tests.fixtures.lis.support import (
    EPIC,
    HOSP,
    JANE,
    JANE_MR,
    LAB,
    SAMPLE_SPECIMENS,
    read,
    slide_root,
    sql_lis_client,
)

JANE_FHIR = JANE_MR
ORDER = CaseOrder(
    accession="S24-01234",
    accession_issuer=LAB,
    patient=JANE_FHIR,
    specimens=SAMPLE_SPECIMENS,
    source="fhir",
    message_id="lis-msg-0001",
    placer="ORD-778812",
    placer_issuer=EPIC,
)


def bundle() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(read("fhir_transaction.json"))
    return data


def slide(sid: str, block: str, stain: str, barcode: str | None, status: str = "ok") -> SlideView:
    return SlideView(sid, f"S24-01234_{block}_{stain}.svs", "A", block, stain, barcode, status)


def case_view() -> CaseView:
    """What a store answers once the order is applied and two slides are scanned."""
    a1 = slide("s1_abc", "A1", "HE", "S24-01234-A1-1")
    a2 = slide("s2", "A2", "KI67", "S24-01234-A2-1", status="missing")
    return CaseView(
        accession="S24-01234",
        accession_issuer="LAB",
        patient=JANE,
        specimens=(
            SpecimenView(
                "A", "Left breast, core biopsy", (BlockView("A1", (a1,)), BlockView("A2", (a2,)))
            ),
        ),
        slides=(a1, a2),
        expected_barcodes=("S24-01234-A3-1",),
    )


def revalidate(resource: Any, cls: Any) -> Any:
    """Serialize and parse again: what a client receives validates on its own."""
    return cls.model_validate(json.loads(fhir.to_json(resource)))


# --- in ---


def test_transaction_every_field() -> None:
    transaction = fhir.parse_transaction(bundle())
    assert transaction.order == ORDER
    assert transaction.entries[0] == ("Patient", "Patient/MRN-0012345")
    assert [t for t, _ in transaction.entries] == ["Patient", "ServiceRequest"] + ["Specimen"] * 5


def test_transaction_without_patient_entry_uses_the_subject_identifier() -> None:
    data = bundle()
    del data["entry"][0]
    data["entry"][0]["resource"]["subject"] = {
        "identifier": {"system": "urn:oid:1.2.3.4.5.6.7", "value": "MRN-0012345"}
    }
    order = fhir.parse_transaction(data).order
    assert order.patient == PatientIn("MRN-0012345", "urn:oid:1.2.3.4.5.6.7")


def entry(data: dict[str, Any], n: int) -> dict[str, Any]:
    resource: dict[str, Any] = data["entry"][n]["resource"]
    return resource


@pytest.mark.parametrize(
    ("mutate", "status", "words", "expression"),
    [
        (lambda d: d.update(resourceType="Patient"), 400, "must be a Bundle", "Bundle"),
        (lambda d: d.update(type="batch"), 422, "'transaction'", "Bundle.type"),
        (
            lambda d: entry(d, 0).update(birthDate="1961-13-45"),
            400,
            "entry[0].resource.birthDate",
            "Bundle",
        ),
        (lambda d: d["entry"].pop(1), 422, "one ServiceRequest is required, found 0", None),
        (
            lambda d: (entry(d, 1)["identifier"].pop(1), entry(d, 2).pop("accessionIdentifier")),
            422,
            "v2-0203#ACSN",
            "Bundle.entry[1].resource.identifier",
        ),
        (
            lambda d: entry(d, 0)["identifier"][0].pop("value"),
            422,
            "MRN",
            "Bundle.entry[0].resource.identifier",
        ),
        (
            lambda d: d["entry"].append(
                {
                    "resource": {"resourceType": "Practitioner"},
                    "request": {"method": "POST", "url": "x"},
                }
            ),
            422,
            "Practitioner is not supported",
            "Bundle.entry[7].resource",
        ),
        (
            lambda d: entry(d, 3)["parent"][0].update(reference="urn:uuid:nowhere"),
            422,
            "must reference a Specimen of this Bundle",
            "Bundle.entry[3].resource.parent[0].reference",
        ),
        (lambda d: d["entry"][2].pop("request"), 422, "required in a transaction", None),
        (
            lambda d: entry(d, 6)["container"][0]["identifier"][0].update(value="S24-01234-A1-1"),
            422,
            "appears more than once",
            "specimens",
        ),
    ],
)
def test_transaction_errors(mutate: Any, status: int, words: str, expression: str | None) -> None:
    data = copy.deepcopy(bundle())
    mutate(data)
    with pytest.raises(fhir.FhirError) as caught:
        fhir.parse_transaction(data)
    assert caught.value.status == status
    assert words in caught.value.diagnostics
    if expression is not None:
        assert caught.value.expression == expression


def test_invalid_bundle_does_not_echo_values() -> None:
    data = bundle()
    entry(data, 0)["birthDate"] = "1961-13-45"
    with pytest.raises(fhir.FhirError) as caught:
        fhir.parse_transaction(data)
    assert "1961-13-45" not in caught.value.diagnostics


def test_not_an_object() -> None:
    with pytest.raises(fhir.FhirError) as caught:
        fhir.parse_transaction([1])
    assert caught.value.status == 400


# --- out: built from a CaseView, every resource validates ---


def test_imaging_study() -> None:
    study = revalidate(fhir.imaging_study(case_view()), ImagingStudy)
    assert study.id == "S24-01234"
    assert study.status == "available"
    assert [(c.system, c.code) for c in study.modality] == [(fhir.DCM, "SM")]
    acsn = study.identifier[0]
    assert acsn.value == "S24-01234"
    assert (acsn.type.coding[0].system, acsn.type.coding[0].code) == (fhir.V2_0203, "ACSN")
    assert study.identifier[1].system == "urn:dicom:uid"
    assert study.identifier[1].value.startswith("urn:oid:2.25.")
    assert study.subject.reference == "Patient/MRN-0012345"
    assert study.endpoint[0].reference == "Endpoint/case.S24-01234"
    assert study.numberOfSeries == 2
    first, second = study.series
    assert first.modality.code == "SM"
    assert first.uid != second.uid
    assert first.description == "specimen A, block A1, HE"
    assert [r.reference for r in first.endpoint] == [
        f"Endpoint/{fhir.endpoint_id('viewer', 's1_abc')}",
        f"Endpoint/{fhir.endpoint_id('iiif', 's1_abc')}",
    ]
    assert fhir.endpoint_id("viewer", "s1_abc").startswith("viewer.x-")  # "_" is no FHIR id
    assert first.specimen[0].reference.startswith("Specimen/")
    # stable: the same case gives the same UIDs
    again = fhir.imaging_study(case_view()).series
    assert again is not None
    assert again[0].uid == first.uid


def test_endpoints() -> None:
    eps = [revalidate(e, Endpoint) for e in fhir.endpoints(case_view(), "https://ss.example")]
    by_id = {e.id: e for e in eps}
    case = by_id["case.S24-01234"]
    assert case.address == "https://ss.example/launch?accession=S24-01234"
    viewer = by_id[fhir.endpoint_id("viewer", "s1_abc")]
    assert viewer.address == "https://ss.example/view/s1_abc"
    assert viewer.connectionType.code == "ihe-iid"
    assert viewer.status == "active"
    iiif = by_id[fhir.endpoint_id("iiif", "s1_abc")]
    assert iiif.address == "https://ss.example/iiif/3/s1_abc/info.json"
    assert iiif.connectionType.code == "iiif-image-3"
    assert by_id[fhir.endpoint_id("viewer", "s2")].status == "off"  # file missing
    assert fhir.parse_endpoint_id(viewer.id) == ("viewer", "s1_abc")


def test_searchset() -> None:
    result = fhir.imaging_study_searchset([case_view()], "https://ss.example", "https://x/s")
    parsed = revalidate(result, Bundle)
    assert parsed.type == "searchset"
    assert parsed.total == 1
    modes = [(e.resource.get_resource_type(), e.search.mode) for e in parsed.entry]
    assert modes[0] == ("ImagingStudy", "match")
    assert modes[1:] == [("Endpoint", "include")] * 5
    assert parsed.entry[0].fullUrl == "https://ss.example/fhir/ImagingStudy/S24-01234"
    empty = revalidate(fhir.imaging_study_searchset([], "https://ss", "https://x/s"), Bundle)
    assert empty.total == 0


def test_patient_resource() -> None:
    patient = revalidate(fhir.patient_resource(case_view().patient), Patient)  # type: ignore[arg-type]
    assert patient.id == "MRN-0012345"
    assert patient.identifier[0].value == "MRN-0012345"
    assert patient.identifier[0].system == HOSP
    assert patient.identifier[0].type is None  # sent without a type: none made up
    assert (patient.name[0].family, patient.name[0].given) == ("DOE", ["JANE"])
    assert str(patient.birthDate) == "1961-04-12"
    assert patient.gender == "female"


def test_specimen_resources() -> None:
    specimens = [revalidate(s, Specimen) for s in fhir.specimen_resources(case_view())]
    assert len(specimens) == 1 + 2 + 2 + 1
    part, block = specimens[0], specimens[1]
    assert part.identifier[0].value == "A"
    assert part.accessionIdentifier.value == "S24-01234"
    assert part.note[0].text == "Left breast, core biopsy"
    assert block.parent[0].reference == f"Specimen/{part.id}"
    matches = fhir.specimens_with_container(case_view(), "S24-01234-A1-1")
    assert len(matches) == 1
    slide_spec = matches[0]
    assert slide_spec.parent is not None and slide_spec.processing is not None
    assert slide_spec.parent[0].reference == f"Specimen/{block.id}"
    procedure = slide_spec.processing[0].procedure
    assert procedure is not None
    assert procedure.text == "HE"
    expected = fhir.specimens_with_container(case_view(), "S24-01234-A3-1")
    assert expected[0].parent is None


def test_specimens_round_trip_through_a_transaction() -> None:
    """What we write as Specimens, we read back as the same tree."""
    case = case_view()
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": "urn:uuid:sr",
            "resource": {
                "resourceType": "ServiceRequest",
                "status": "active",
                "intent": "order",
                "subject": {"identifier": {"value": "MRN-0012345"}},
                "identifier": [json.loads(fhir.to_json(fhir.imaging_study(case)))["identifier"][0]],
            },
            "request": {"method": "POST", "url": "ServiceRequest"},
        }
    ]
    for spec in fhir.specimen_resources(case):
        if spec.parent is None and spec.container:  # the unscanned slide has no block
            continue
        entries.append(
            {
                "fullUrl": f"https://ss/fhir/Specimen/{spec.id}",
                "resource": json.loads(fhir.to_json(spec)),
                "request": {"method": "PUT", "url": f"Specimen/{spec.id}"},
            }
        )
    order = fhir.parse_transaction(
        {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    ).order
    assert order.accession == "S24-01234"
    assert order.patient.identifier == "MRN-0012345"
    assert order.specimens == SAMPLE_SPECIMENS


def test_transaction_response() -> None:
    transaction = fhir.parse_transaction(bundle())
    result = ApplyResult(created=True, changed=True, linked_slides=("s1",), conflicts=("c",))
    response = revalidate(fhir.transaction_response(transaction, result), Bundle)
    assert response.type == "transaction-response"
    assert len(response.entry) == 7
    assert response.entry[0].response.status == "201 Created"
    assert response.entry[0].response.location == "Patient/MRN-0012345"
    issues = response.entry[1].response.outcome.issue
    assert [(i.severity, i.code) for i in issues] == [
        ("warning", "conflict"),
        ("information", "informational"),
    ]


def test_outcome_validates() -> None:
    oo = revalidate(fhir.outcome("not-found", "no Patient"), OperationOutcome)
    assert oo.issue[0].severity == "error"


@pytest.mark.parametrize("value", ["MRN-0012345", "MRN 12/3", "x-abc", "ü" * 10, "a" * 64])
def test_fhir_id_round_trip(value: str) -> None:
    rid = fhir.fhir_id(value)
    assert len(rid) <= 64
    assert fhir.value_of_fhir_id(rid) == value


def test_fhir_id_of_a_very_long_value_is_a_hash() -> None:
    rid = fhir.fhir_id("ü" * 60)
    assert rid.startswith("h-")
    assert fhir.value_of_fhir_id(rid) is None


# --- over HTTP, with scanned sample slides ---


@pytest.fixture(scope="module")
def fhir_client(
    tmp_path_factory: pytest.TempPathFactory, samples_dir: dict[str, Path]
) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("fhir")
    root = slide_root(tmp, samples_dir, ("S24-01234_A1_HE", "S24-01234_A2_KI67"))
    with sql_lis_client(tmp, root) as client:
        response = client.post("/fhir", json=bundle())
        assert response.status_code == 200, response.text
        yield client


def fhir_json(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    data: dict[str, Any] = response.json()
    return data


def test_http_post_transaction(fhir_client: Any) -> None:
    again = fhir_json(fhir_client.post("/fhir", json=bundle()), 200)
    parsed = Bundle.model_validate(again)
    assert parsed.type == "transaction-response"
    assert parsed.entry is not None
    first, second = parsed.entry[0].response, parsed.entry[1].response
    assert first is not None and second is not None
    assert first.status == "200 OK"
    assert isinstance(second.outcome, OperationOutcome)
    assert "no change" in str(second.outcome.issue[-1].diagnostics)


def test_http_post_errors(fhir_client: Any) -> None:
    bad = fhir_json(
        fhir_client.post(
            "/fhir", content=b"{oops", headers={"content-type": "application/fhir+json"}
        ),
        400,
    )
    assert OperationOutcome.model_validate(bad).issue[0].code == "structure"
    data = bundle()
    entry(data, 1)["identifier"].pop(1)
    entry(data, 2).pop("accessionIdentifier")
    missing = fhir_json(fhir_client.post("/fhir", json=data), 422)
    issue = OperationOutcome.model_validate(missing).issue[0]
    assert "ACSN" in str(issue.diagnostics)
    assert issue.expression == ["Bundle.entry[1].resource.identifier"]


def test_http_imaging_study(fhir_client: Any) -> None:
    by_accession = fhir_json(fhir_client.get("/fhir/ImagingStudy?identifier=S24-01234"), 200)
    parsed = Bundle.model_validate(by_accession)
    assert parsed.total == 1
    assert parsed.entry is not None
    study = parsed.entry[0].resource
    assert isinstance(study, ImagingStudy)
    assert study.get_resource_type() == "ImagingStudy"
    assert study.status == "available"
    assert study.series is not None and len(study.series) == 2
    assert {s.modality.code for s in study.series} == {"SM"}
    endpoints = {e.resource.id: e.resource for e in parsed.entry[1:] if e.resource is not None}
    for series in study.series:
        assert series.endpoint
        for ref in series.endpoint:
            assert ref.reference is not None
            target = endpoints[ref.reference.removeprefix("Endpoint/")]
            assert isinstance(target, Endpoint)
            assert str(target.address).startswith("http://testserver/")
            fetched = fhir_json(fhir_client.get(f"/fhir/{ref.reference}"), 200)
            assert Endpoint.model_validate(fetched).address == target.address
    by_token = fhir_json(
        fhir_client.get("/fhir/ImagingStudy", params={"identifier": "urn:oid:1|S24-01234"}), 200
    )
    assert by_token["total"] == 1
    by_patient = fhir_json(fhir_client.get("/fhir/ImagingStudy?patient=MRN-0012345"), 200)
    assert by_patient["total"] == 1
    as_reference = fhir_json(fhir_client.get("/fhir/ImagingStudy?patient=Patient/MRN-0012345"), 200)
    assert as_reference["total"] == 1
    none = fhir_json(fhir_client.get("/fhir/ImagingStudy?identifier=S99-00001"), 200)
    assert none["total"] == 0
    no_param = fhir_json(fhir_client.get("/fhir/ImagingStudy"), 400)
    assert no_param["resourceType"] == "OperationOutcome"


def test_http_patient(fhir_client: Any) -> None:
    patient = Patient.model_validate(fhir_json(fhir_client.get("/fhir/Patient/MRN-0012345"), 200))
    assert patient.name is not None
    assert patient.name[0].family == "DOE"
    assert fhir_client.get("/fhir/Patient/MRN-0012345").headers["cache-control"] == "no-store"
    missing = fhir_json(fhir_client.get("/fhir/Patient/MRN-0000000"), 404)
    assert missing["issue"][0]["code"] == "not-found"


def test_http_specimen(fhir_client: Any) -> None:
    found = Bundle.model_validate(
        fhir_json(fhir_client.get("/fhir/Specimen?container-id=S24-01234-A2-1"), 200)
    )
    assert found.total == 1
    assert found.entry is not None
    specimen = found.entry[0].resource
    assert isinstance(specimen, Specimen) and specimen.container is not None
    identifiers = specimen.container[0].identifier
    assert identifiers is not None
    assert identifiers[0].value == "S24-01234-A2-1"
    blocks = fhir_json(fhir_client.get("/fhir/Specimen?container-id=S24-01234-A1"), 200)
    assert blocks["total"] >= 0
    unknown = fhir_json(fhir_client.get("/fhir/Specimen?container-id=NOPE-1"), 200)
    assert unknown["total"] == 0
    fhir_json(fhir_client.get("/fhir/Specimen"), 400)


def test_http_endpoint_unknown(fhir_client: Any) -> None:
    fhir_json(fhir_client.get("/fhir/Endpoint/viewer.nope"), 404)
    fhir_json(fhir_client.get("/fhir/Endpoint/bogus"), 404)
    case = fhir_json(fhir_client.get("/fhir/Endpoint/case.S24-01234"), 200)
    assert case["address"] == "http://testserver/launch?accession=S24-01234"


def test_round_trip_through_the_sql_store(fhir_client: Any) -> None:
    """Bundle -> CaseOrder -> LinkStore -> CaseView -> ImagingStudy searchset, all validated."""
    store = fhir_client.app.state.slideserver.catalog
    transaction = fhir.parse_transaction(bundle())
    result = store.apply_order(transaction.order)
    assert not result.changed  # the fixture applied the same Bundle already
    case = store.get_case("S24-01234")
    assert case is not None
    assert case.patient == JANE_FHIR
    searchset = fhir.imaging_study_searchset([case], "https://ss", "https://ss/fhir/x")
    parsed = revalidate(searchset, Bundle)
    study = parsed.entry[0].resource
    assert study.status == "available"
    assert study.identifier[0].value == "S24-01234"
    assert {s.description for s in study.series} == {
        "specimen A, block A1, HE",
        "specimen A, block A2, KI67",
    }
    specimens = [revalidate(s, Specimen) for s in fhir.specimen_resources(case)]
    containers = {c.identifier[0].value for s in specimens for c in s.container or []}
    assert {"A1", "A2", "S24-01234-A1-1", "S24-01234-A2-1"} <= containers


def test_capability_statement_is_public_and_valid(secure_env: Any) -> None:
    from fhir.resources.R4B.capabilitystatement import CapabilityStatement

    client, _ = secure_env
    response = client.get("/fhir/metadata")  # no credentials: FHIR clients read it first
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    statement = CapabilityStatement.model_validate(response.json())
    assert (statement.kind, statement.fhirVersion, statement.format) == (
        "instance",
        "4.0.1",
        ["json"],
    )
    assert statement.rest is not None
    assert [i.code for i in statement.rest[0].interaction or []] == ["transaction"]


def test_capability_statement_lists_exactly_the_fhir_routes_served(secure_env: Any) -> None:
    """Reads are ``/fhir/{Type}/{id}`` routes, searches ``/fhir/{Type}``: both ways round."""
    from slideserver.api.policy import POLICY

    client, _ = secure_env
    rest = client.get("/fhir/metadata").json()["rest"][0]
    declared = {(r["type"], i["code"]) for r in rest["resource"] for i in r["interaction"]}
    served = set()
    for path in POLICY:
        parts = path.split("/")
        if len(parts) >= 3 and parts[1] == "fhir" and parts[2][:1].isupper():
            served.add((parts[2], "read" if len(parts) == 4 else "search-type"))
    assert declared == served
    params = {r["type"]: [p["name"] for p in r.get("searchParam", [])] for r in rest["resource"]}
    assert params["ImagingStudy"] == ["identifier", "patient"]
    assert params["Specimen"] == ["container-id"]
