"""The EHR pull against a real FHIR server (medplum's FhirRouter over its MemoryRepository).

Orders are written to the EHR as a real EHR holds them (Patient, Encounter, Specimens, a
ServiceRequest with its accession); the pull polls them page by page and links them as pushed
orders are linked.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import func, select

from slideserver.catalog.schema import cases, glass_slides, inbound_messages
from slideserver.catalog.sql import SqlCatalog
from slideserver.lis.ehr.client import FhirClient, SmartBackendAuth
from slideserver.lis.ehr.source import EhrUnavailable, Params, parse_resource
from slideserver.metrics import Metrics
from slideserver.readers.registry import default_registry
from slideserver.services.ehr_pull import EhrPull
from slideserver.services.links import LinkService
from tests.fhir_server import FhirServer, fhir_server, fhir_server_session, upsert, urn

__all__ = ["fhir_server", "fhir_server_session"]

V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"
MRN = "urn:oid:1.2.3.4.mrn"
ACC = "urn:oid:1.2.3.4.accession"


def order_entries(accession: str, mrn: str, family: str = "DOE") -> list[dict[str, Any]]:
    """One order as an EHR keeps it: patient, encounter, part A > block A1 > an H&E slide."""
    patient, encounter, part, block, slide = urn(), urn(), urn(), urn(), urn()
    return [
        upsert(
            {
                "resourceType": "Patient",
                "identifier": [
                    {
                        "type": {"coding": [{"system": V2, "code": "MR"}]},
                        "system": MRN,
                        "value": mrn,
                    }
                ],
                "name": [{"family": family, "given": ["JANE"]}],
                "birthDate": "1970-01-02",
                "gender": "female",
            },
            f"{MRN}|{mrn}",
            patient,
        ),
        {
            "fullUrl": encounter,
            "resource": {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "AMB",
                },
                "subject": {"reference": patient},
            },
            "request": {"method": "POST", "url": "Encounter"},
        },
        {
            "fullUrl": part,
            "resource": {
                "resourceType": "Specimen",
                "identifier": [{"value": "A"}],
                "subject": {"reference": patient},
                "note": [{"text": "skin, left forearm"}],
            },
            "request": {"method": "POST", "url": "Specimen"},
        },
        {
            "fullUrl": block,
            "resource": {
                "resourceType": "Specimen",
                "container": [{"identifier": [{"value": "A1"}]}],
                "parent": [{"reference": part}],
            },
            "request": {"method": "POST", "url": "Specimen"},
        },
        {
            "fullUrl": slide,
            "resource": {
                "resourceType": "Specimen",
                "container": [{"identifier": [{"value": f"{accession}-A1-HE"}]}],
                "parent": [{"reference": block}],
                "processing": [{"description": "stain", "procedure": {"text": "HE"}}],
            },
            "request": {"method": "POST", "url": "Specimen"},
        },
        upsert(
            {
                "resourceType": "ServiceRequest",
                "status": "active",
                "intent": "order",
                "identifier": [
                    {
                        "type": {"coding": [{"system": V2, "code": "ACSN"}]},
                        "system": ACC,
                        "value": accession,
                    }
                ],
                "code": {"text": "Surgical pathology"},
                "subject": {"reference": patient},
                "encounter": {"reference": encounter},
                "specimen": [{"reference": part}, {"reference": block}, {"reference": slide}],
            },
            f"{ACC}|{accession}",
        ),
    ]


def one(server: FhirServer, query: str) -> dict[str, Any]:
    """The one resource a search on the EHR finds."""
    bundle = httpx.get(f"{server.base_url}/{query}", timeout=10).json()
    assert bundle["total"] == 1, query
    resource: dict[str, Any] = bundle["entry"][0]["resource"]
    return resource


def put(server: FhirServer, resource: dict[str, Any]) -> None:
    """Update a resource in the EHR (a correction made there)."""
    url = f"{server.base_url}/{resource['resourceType']}/{resource['id']}"
    answer = httpx.put(url, json=resource, headers={"content-type": "application/fhir+json"})
    assert answer.status_code == 200, answer.text


def count(catalog: SqlCatalog, table: Any) -> int:
    with catalog.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


@pytest.fixture
def catalog(tmp_path: Any, tiny_slides: Any) -> Iterator[SqlCatalog]:
    cat = SqlCatalog(f"sqlite:///{tmp_path / 'catalog.db'}", [tiny_slides.root], default_registry())
    yield cat
    cat.close()


def make_pull(
    server: FhirServer,
    catalog: SqlCatalog,
    client: FhirClient | None = None,
    page_size: int = 5,
    **options: Any,
) -> EhrPull:
    return EhrPull(
        client or FhirClient(server.base_url, timeout=5.0),
        LinkService(catalog),
        catalog,
        Metrics(),
        page_size=page_size,
        backoff=(0.05, 0.1),
        **options,
    )


def poll(pull: EhrPull) -> bool:
    return anyio.run(pull.poll_once)


def test_a_days_orders_are_pulled_page_by_page_and_linked_to_slides_already_scanned(
    fhir_server: FhirServer, database_url: str, tiny_slides: Any
) -> None:
    tiny_slides("S24-00007_A1_HE.svs", barcode="S24-00007-A1-HE")
    catalog = SqlCatalog(database_url, [tiny_slides.root], default_registry())
    try:
        catalog.refresh()
        for n in range(1, 10):  # nine orders, one transaction each: three pages of four
            fhir_server.transaction(order_entries(f"S24-{n:05d}", f"MRN{n}"))
        pull = make_pull(fhir_server, catalog, page_size=4)
        assert poll(pull)
        for n in range(1, 10):
            case = catalog.get_case(f"S24-{n:05d}")
            assert case is not None and case.patient is not None
            assert case.patient.identifier == f"MRN{n}" and case.patient.name == "DOE^JANE"
            assert [s.id for s in case.specimens] == ["A"]
            assert [b.id for b in case.specimens[0].blocks] == ["A1"]
        scanned = catalog.get_case("S24-00007")
        assert scanned is not None and [s.barcode for s in scanned.slides] == ["S24-00007-A1-HE"]
        assert pull.metrics.ehr["page"] >= 3 + 3  # three pages of orders, three of patients
        last = one(fhir_server, f"ServiceRequest?identifier={ACC}|S24-00009")
        assert catalog.ehr_cursor("ServiceRequest") == last["meta"]["lastUpdated"]
        assert pull.check() == "ok"
    finally:
        catalog.close()


class PausedBetweenPages(FhirClient):
    """The real client; the EHR freezes (SIGSTOP) when the second page of orders is asked for."""

    def __init__(self, server: FhirServer) -> None:
        super().__init__(server.base_url, timeout=0.5)
        self.server = server
        self.paused = False

    def search(self, url: str, params: Params | None = None) -> Any:
        if "ServiceRequest" in url and "_offset=" in url and not self.paused:
            assert self.server.process is not None
            os.kill(self.server.process.pid, signal.SIGSTOP)
            self.paused = True
        return super().search(url, params)

    def resume(self) -> None:
        assert self.server.process is not None
        os.kill(self.server.process.pid, signal.SIGCONT)


def test_an_ehr_outage_between_pages_loses_nothing_duplicates_nothing_and_keeps_the_cursor(
    fhir_server: FhirServer, catalog: SqlCatalog
) -> None:
    for n in range(1, 9):
        fhir_server.transaction(order_entries(f"S24-{n:05d}", f"MRN{n}"))
    client = PausedBetweenPages(fhir_server)
    pull = make_pull(fhir_server, catalog, client)
    try:
        assert not poll(pull)
    finally:
        client.resume()
    fifth = one(fhir_server, f"ServiceRequest?identifier={ACC}|S24-00005")
    assert catalog.ehr_cursor("ServiceRequest") == fifth["meta"]["lastUpdated"]
    assert [catalog.has_case(f"S24-{n:05d}") for n in range(1, 9)] == [True] * 5 + [False] * 3
    assert pull.check().startswith("failing: the EHR did not answer")
    assert pull.metrics.ehr["request_failed"] == 3 and pull.metrics.ehr["poll_failed"] == 1

    assert poll(pull)  # the EHR is back: the poll goes on from the cursor
    assert all(catalog.has_case(f"S24-{n:05d}") for n in range(1, 9))
    assert count(catalog, cases) == 8 and count(catalog, glass_slides) == 8
    assert pull.check() == "ok"


def test_a_patient_merged_in_the_ehr_moves_their_cases_to_the_survivor_with_history(
    fhir_server: FhirServer, catalog: SqlCatalog
) -> None:
    fhir_server.transaction(order_entries("S24-00001", "MRN-OLD"))
    pull = make_pull(fhir_server, catalog)
    assert poll(pull)
    survivor = urn()
    fhir_server.transaction(
        [
            upsert(
                {
                    "resourceType": "Patient",
                    "identifier": [{"system": MRN, "value": "MRN-NEW"}],
                    "name": [{"family": "DOE", "given": ["JANE"]}],
                },
                f"{MRN}|MRN-NEW",
                survivor,
            )
        ]
    )
    new = one(fhir_server, f"Patient?identifier={MRN}|MRN-NEW")
    old = one(fhir_server, f"Patient?identifier={MRN}|MRN-OLD")
    old["active"] = False
    old["link"] = [{"other": {"reference": f"Patient/{new['id']}"}, "type": "replaced-by"}]
    put(fhir_server, old)

    assert poll(pull)
    assert [c.accession for c in catalog.cases_of_patient("MRN-NEW")] == ["S24-00001"]
    case = catalog.get_case("S24-00001")
    assert case is not None and case.patient is not None and case.patient.identifier == "MRN-NEW"
    merges = [e for e in catalog.link_history() if e.action == "patient_merge"]
    assert [e.source for e in merges] == ["ehr"]


def test_a_corrected_patient_updates_the_case_and_its_history(
    fhir_server: FhirServer, catalog: SqlCatalog
) -> None:
    fhir_server.transaction(order_entries("S24-00001", "MRN1", family="DOE"))
    pull = make_pull(fhir_server, catalog)
    assert poll(pull)
    patient = one(fhir_server, f"Patient?identifier={MRN}|MRN1")
    patient["name"] = [{"family": "ROE", "given": ["JANE"]}]
    put(fhir_server, patient)

    assert poll(pull)
    case = catalog.get_case("S24-00001")
    assert case is not None and case.patient is not None and case.patient.name == "ROE^JANE"
    updates = [e for e in catalog.link_history() if e.action == "patient_updated"]
    assert [(e.source, e.detail) for e in updates] == [("ehr", "demographics corrected")]


def test_an_order_moved_to_another_patient_is_flagged_for_reconcile_not_relinked(
    fhir_server: FhirServer, catalog: SqlCatalog
) -> None:
    fhir_server.transaction(order_entries("S24-00001", "MRN1"))
    fhir_server.transaction(order_entries("S24-00002", "MRN2"))
    pull = make_pull(fhir_server, catalog)
    assert poll(pull)
    other = one(fhir_server, f"Patient?identifier={MRN}|MRN2")
    request = one(fhir_server, f"ServiceRequest?identifier={ACC}|S24-00001")
    request["subject"] = {"reference": f"Patient/{other['id']}"}
    put(fhir_server, request)

    assert poll(pull)
    case = catalog.get_case("S24-00001")
    assert case is not None and case.patient is not None and case.patient.identifier == "MRN1"
    flagged = [(c.kind, c.subject) for c in catalog.conflicts()]
    assert flagged == [("case_patient_changed", "S24-00001")]


def test_a_lookup_links_a_walk_in_case_at_once_without_moving_the_cursors(
    fhir_server: FhirServer, catalog: SqlCatalog, tiny_slides: Any
) -> None:
    tiny_slides("S24-00042_A1_HE.svs", barcode="S24-00042-A1-HE")
    catalog.refresh()
    fhir_server.transaction(order_entries("S24-00041", "MRN41"))
    fhir_server.transaction(order_entries("S24-00042", "MRN42"))
    pull = make_pull(fhir_server, catalog)

    result = anyio.run(pull.lookup, "S24-00042")
    assert result.found and result.report.orders == 1 and result.report.linked_slides == 1
    assert catalog.has_case("S24-00042") and not catalog.has_case("S24-00041")
    assert catalog.ehr_cursor("ServiceRequest") is None
    missing = anyio.run(pull.lookup, "S24-99999")
    assert not missing.found and missing.report.orders == 0


def test_one_process_polls_at_a_time(database_url: str, tiny_slides: Any) -> None:
    catalog = SqlCatalog(database_url, [tiny_slides.root], default_registry())
    try:
        assert catalog.take_ehr_lease("first", 60)
        assert not catalog.take_ehr_lease("second", 60)
        assert catalog.take_ehr_lease("first", 60)  # the holder renews it
        catalog.release_ehr_lease("first")
        assert catalog.take_ehr_lease("second", -1)  # taken, already expired...
        assert catalog.take_ehr_lease("first", 60)  # ...so another process may take it over
    finally:
        catalog.close()


def test_a_second_process_does_not_poll_while_the_first_holds_the_lease(
    fhir_server: FhirServer, catalog: SqlCatalog
) -> None:
    fhir_server.transaction(order_entries("S24-00001", "MRN1"))
    first, second = make_pull(fhir_server, catalog), make_pull(fhir_server, catalog)
    assert catalog.take_ehr_lease(first.owner, 60)
    assert not poll(second)
    assert not catalog.has_case("S24-00001") and second.check() == "ok"
    assert poll(first) and catalog.has_case("S24-00001")


def test_smart_backend_services_gets_a_token_with_a_signed_assertion_and_reuses_it(
    fhir_server: FhirServer, catalog: SqlCatalog
) -> None:
    fhir_server.transaction(order_entries("S24-00001", "MRN1"))
    auth = SmartBackendAuth.from_key_file(
        fhir_server.token_url, "slideserver", fhir_server.private_key
    )
    client = FhirClient(fhir_server.smart_base_url, auth, timeout=5.0)
    pull = make_pull(fhir_server, catalog, client)
    before = fhir_server.tokens_issued()

    assert poll(pull) and catalog.has_case("S24-00001")
    assert poll(pull)
    assert fhir_server.tokens_issued() == before + 1  # one token, cached across both polls
    auth.invalidate()
    assert poll(pull) and fhir_server.tokens_issued() == before + 2


def test_without_a_token_the_guarded_ehr_refuses_and_the_poll_fails_without_moving_cursors(
    fhir_server: FhirServer, catalog: SqlCatalog
) -> None:
    fhir_server.transaction(order_entries("S24-00001", "MRN1"))
    pull = make_pull(fhir_server, catalog, FhirClient(fhir_server.smart_base_url, timeout=5.0))
    assert not poll(pull)
    assert pull.check() == "failing: the EHR refused our credentials (401)"
    assert catalog.ehr_cursor("Patient") is None and not catalog.has_case("S24-00001")


def test_an_assertion_signed_with_another_key_gets_no_token(
    fhir_server: FhirServer, tmp_path: Any
) -> None:
    from tests.fhir_server import write_key_pair

    write_key_pair(tmp_path)
    auth = SmartBackendAuth.from_key_file(
        fhir_server.token_url, "slideserver", tmp_path / "smart-client.pem"
    )
    client = FhirClient(fhir_server.smart_base_url, auth, timeout=5.0)
    with pytest.raises(EhrUnavailable, match="token endpoint answered 401"):
        client.search(client.url("Patient"))


def test_a_slide_of_an_unknown_accession_makes_the_scanner_ask_the_ehr(
    fhir_server: FhirServer, catalog: SqlCatalog, tiny_slides: Any
) -> None:
    fhir_server.transaction(order_entries("S24-00042", "MRN42"))
    pull = make_pull(fhir_server, catalog)
    catalog.scanner.on_unknown_accession = pull.ask
    tiny_slides("S24-00042_A1_HE.svs", barcode="S24-00042-A1-HE")
    catalog.refresh()

    anyio.run(pull.lookup_asked)
    case = catalog.get_case("S24-00042")
    assert catalog.has_case("S24-00042")
    assert case is not None and [s.barcode for s in case.slides] == ["S24-00042-A1-HE"]
    assert catalog.ehr_cursor("ServiceRequest") is None


def test_an_order_the_ehr_sends_without_an_accession_is_recorded_as_rejected_and_skipped(
    fhir_server: FhirServer, catalog: SqlCatalog
) -> None:
    entries = order_entries("S24-00001", "MRN1")
    del entries[-1]["resource"]["identifier"][0]["type"]  # no longer typed ACSN
    fhir_server.transaction(entries)
    fhir_server.transaction(order_entries("S24-00002", "MRN2"))
    pull = make_pull(fhir_server, catalog)

    assert poll(pull) and pull.check() == "ok"
    assert not catalog.has_case("S24-00001") and catalog.has_case("S24-00002")
    assert pull.metrics.ehr["order_rejected"] == 1 and pull.metrics.ehr["order_applied"] == 1
    with catalog.engine.connect() as conn:
        rows = conn.execute(
            select(inbound_messages.c.status, inbound_messages.c.detail).where(
                inbound_messages.c.source == "ehr"
            )
        ).all()
    rejected = [detail for status, detail in rows if status == "rejected"]
    assert len(rejected) == 1 and "ACSN" in rejected[0] and "MRN1" not in rejected[0]


def test_answers_that_are_not_fhir_count_as_the_ehr_being_unavailable(
    fhir_server: FhirServer,
) -> None:
    fhir_server.transaction(order_entries("S24-00001", "MRN1"))
    client = FhirClient(fhir_server.base_url, timeout=5.0)
    with pytest.raises(EhrUnavailable, match="not a FHIR resource"):
        client.search(f"{fhir_server.base_url}/auth/issued")  # JSON, but not FHIR
    patient = one(fhir_server, f"Patient?identifier={MRN}|MRN1")
    with pytest.raises(EhrUnavailable, match="answered a 'Patient', not a Bundle"):
        client.search(client.url(f"Patient/{patient['id']}"))
    with pytest.raises(EhrUnavailable, match="answered 400"):
        client.search(client.url("ServiceRequest"), [("_lastUpdated", "ge-not-a-date")])


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"resourceType": 7},
        {"resourceType": "NoSuchThing"},
        {"resourceType": "Bundle", "type": "searchset", "entry": "many"},
        {"resourceType": "Patient", "birthDate": "yesterday"},
    ],
)
def test_garbage_is_refused_by_validation_without_echoing_it(body: object) -> None:
    with pytest.raises(EhrUnavailable) as refused:
        parse_resource(body)
    assert "yesterday" not in refused.value.detail and "many" not in refused.value.detail


def test_without_include_the_patient_and_specimens_are_read_one_by_one(
    fhir_server: FhirServer, catalog: SqlCatalog
) -> None:
    fhir_server.transaction(order_entries("S24-00001", "MRN1"))
    pull = make_pull(fhir_server, catalog, includes=())
    assert poll(pull)
    case = catalog.get_case("S24-00001")
    assert case is not None and case.patient is not None and case.patient.name == "DOE^JANE"
    assert [(s.id, s.description, [b.id for b in s.blocks]) for s in case.specimens] == [
        ("A", "skin, left forearm", ["A1"])
    ]
    assert case.expected_barcodes == ("S24-00001-A1-HE",)
