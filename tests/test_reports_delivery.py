"""Signed reports delivered to a real EHR (medplum's FHIR server) and a real LIS (python-hl7's
MLLP server): both ways, amended, through outages, and across a restart of slideserver."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.documentreference import DocumentReference

from slideserver.reports.fhir_delivery import FhirTarget
from slideserver.reports.outbox import Claim
from slideserver.settings import Settings
from tests.conftest import make_tokens
from tests.fhir_server import FhirServer, fhir_server, fhir_server_session
from tests.fixtures.lis.support import read
from tests.lis_server import LisServer, lis_server
from tests.live_server import live_server
from tests.report_app import ACCESSION, MRN, ReportApp, report_app

__all__ = ["fhir_server", "fhir_server_session", "lis_server"]  # fixtures used below

pytestmark = pytest.mark.slow  # a Node FHIR server, a LIS and several apps: about a minute

SYSTEM = "urn:slideserver:report"
DELIVERED = {"fhir": "delivered", "hl7v2": "delivered"}


def _settings(fhir: FhirServer, lis: LisServer, **more: Any) -> dict[str, Any]:
    return {
        "reports_fhir_url": fhir.base_url,
        "lis_mllp_url": lis.url,
        "reports_retry_seconds": 0.2,
        "reports_send_timeout": 5.0,
        **more,
    }


@pytest.fixture
def app(
    samples_root: Path, tmp_path: Path, fhir_server: FhirServer, lis_server: LisServer
) -> Iterator[ReportApp]:
    with report_app(samples_root, tmp_path, **_settings(fhir_server, lis_server)) as made:
        yield made


def _search(fhir: FhirServer, kind: str, report_id: str) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"{fhir.base_url}/{kind}", params={"identifier": f"{SYSTEM}|{report_id}"}, timeout=10
    )
    answer.raise_for_status()
    return [e["resource"] for e in answer.json().get("entry", [])]


def _pdf(app: ReportApp, report_id: str, version: int) -> bytes:
    answer = app.call("pathologist", "GET", f"/api/reports/{report_id}/pdf?version={version}")
    assert answer.status_code == 200
    data: bytes = answer.content
    return data


def _done(states: dict[str, str]) -> bool:
    return states == DELIVERED


def test_a_signed_report_reaches_the_ehr_and_the_lis(
    app: ReportApp, fhir_server: FhirServer, lis_server: LisServer
) -> None:
    signed = app.signed({"diagnosis": "Invasive ductal carcinoma\nMargins clear"})
    report_id = signed["id"]
    app.wait_deliveries(report_id, _done)
    pdf = _pdf(app, report_id, 1)

    [report] = _search(fhir_server, "DiagnosticReport", report_id)
    DiagnosticReport.model_validate(report)  # what the EHR stored is valid R4
    assert report["status"] == "final"
    assert report["conclusion"] == "Invasive ductal carcinoma\nMargins clear"
    assert report["subject"]["identifier"]["value"] == MRN
    assert report["basedOn"][0]["identifier"]["value"] == ACCESSION
    assert [s["identifier"]["value"] for s in report["specimen"]] == [f"{ACCESSION}-A"]
    assert report["imagingStudy"][0]["identifier"]["value"].startswith("urn:oid:")
    form = report["presentedForm"][0]
    assert base64.b64decode(form["data"]) == pdf
    assert form["size"] == len(pdf)
    assert form["hash"] == base64.b64encode(hashlib.sha1(pdf).digest()).decode()

    [oru] = lis_server.orus()
    assert str(oru.segment("OBR")[3]) == ACCESSION
    assert str(oru.segment("OBR")[25]) == "F"
    assert str(oru.segment("PID")[3][0][0]) == MRN
    obx = list(oru.segments("OBX"))
    assert [str(o[2]) for o in obx] == ["TX", "TX", "ED"]
    assert [str(o[5]) for o in obx[:2]] == ["Invasive ductal carcinoma", "Margins clear"]
    assert base64.b64decode(str(obx[2][5][0][4])) == pdf
    assert str(oru.segment("MSH")[10]) == f"{report_id}.1"


def test_an_amendment_updates_the_same_diagnostic_report(
    app: ReportApp, fhir_server: FhirServer, lis_server: LisServer
) -> None:
    signed = app.signed({"diagnosis": "Benign"})
    app.wait_deliveries(signed["id"], _done)
    amend = {"status": "corrected", "reason": "wrong slide read", "diagnosis": "Malignant"}
    answer = app.call("pathologist", "POST", f"/api/reports/{signed['id']}/amend", json=amend)
    assert answer.status_code == 201, answer.text
    app.wait_deliveries(signed["id"], _done)
    [report] = _search(fhir_server, "DiagnosticReport", signed["id"])
    assert (report["status"], report["conclusion"]) == ("corrected", "Malignant")
    assert base64.b64decode(report["presentedForm"][0]["data"]) == _pdf(app, signed["id"], 2)
    assert [str(m.segment("OBR")[25]) for m in lis_server.orus()] == ["F", "C"]
    first = app.report(signed["id"])["versions"]
    assert first == [{"version": 1, "status": "final"}, {"version": 2, "status": "corrected"}]
    v1 = app.call("admin", "GET", f"/api/reports/{signed['id']}?version=1").json()
    assert {d["target"]: d["state"] for d in v1["deliveries"]} == DELIVERED


def test_the_ehr_and_the_lis_down_mid_delivery_lose_and_duplicate_nothing(
    app: ReportApp, fhir_server: FhirServer, lis_server: LisServer
) -> None:
    fhir_server.stop()
    lis_server.stop()
    signed = app.signed({"diagnosis": "During the outage"})
    failing = app.wait_deliveries(
        signed["id"], lambda s: s == {"fhir": "failing", "hl7v2": "failing"}
    )
    assert failing["hl7v2"]["detail"].startswith("cannot connect to the LIS")
    assert failing["fhir"]["detail"] == "DiagnosticReport: ConnectError"
    fhir_server.start()
    lis_server.start()
    app.wait_deliveries(signed["id"], _done)
    assert len(_search(fhir_server, "DiagnosticReport", signed["id"])) == 1
    assert len(lis_server.orus()) == 1


def test_a_lis_error_ack_is_retried_and_shown(
    app: ReportApp, fhir_server: FhirServer, lis_server: LisServer
) -> None:
    lis_server.ack_code = "AE"
    signed = app.signed({"diagnosis": "Retried"})
    failing = app.wait_deliveries(signed["id"], lambda s: s.get("hl7v2") == "failing")
    assert failing["hl7v2"]["detail"] == "the LIS answered AE"
    lis_server.ack_code = "AA"
    app.wait_deliveries(signed["id"], _done)
    controls = {str(m.segment("MSH")[10]) for m in lis_server.orus()}
    assert controls == {f"{signed['id']}.1"}  # every attempt is recognisably the same message


def test_a_silent_lis_times_out_and_an_admin_retries(
    samples_root: Path, tmp_path: Path, fhir_server: FhirServer, lis_server: LisServer
) -> None:
    lis_server.ack_code = None
    settings = _settings(fhir_server, lis_server, reports_send_timeout=1.0, reports_max_attempts=1)
    with report_app(samples_root, tmp_path, **settings) as app:
        signed = app.signed({"diagnosis": "No answer"})
        given_up = app.wait_deliveries(signed["id"], lambda s: s.get("hl7v2") == "given_up")
        assert given_up["hl7v2"]["detail"] == "no answer within 1 s"
        lis_server.ack_code = "AA"
        retry = app.call("admin", "POST", f"/api/reports/{signed['id']}/deliveries/retry")
        assert retry.status_code == 200 and retry.headers["x-deliveries-retried"] == "1"
        app.wait_deliveries(signed["id"], _done)


def test_readiness_is_degraded_while_a_delivery_is_given_up(
    samples_root: Path, tmp_path: Path, fhir_server: FhirServer, lis_server: LisServer
) -> None:
    lis_server.ack_code = None
    settings = _settings(fhir_server, lis_server, reports_send_timeout=1.0, reports_max_attempts=1)
    with report_app(samples_root, tmp_path, **settings) as app:
        assert app.call("admin", "GET", "/readyz").json()["checks"]["reports"] == "ok"
        signed = app.signed({"diagnosis": "Never received"})
        app.wait_deliveries(signed["id"], lambda s: s.get("hl7v2") == "given_up")
        ready = app.call("admin", "GET", "/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert ready.json()["checks"]["reports"] == "failing: 1 delivery given up"
        lis_server.ack_code = "AA"
        app.call("admin", "POST", f"/api/reports/{signed['id']}/deliveries/retry")
        app.wait_deliveries(signed["id"], _done)
        assert app.call("admin", "GET", "/readyz").json()["checks"]["reports"] == "ok"


def test_a_document_reference_per_version_when_configured(
    samples_root: Path, tmp_path: Path, fhir_server: FhirServer, lis_server: LisServer
) -> None:
    settings = _settings(fhir_server, lis_server, reports_document_reference=True)
    with report_app(samples_root, tmp_path, **settings) as app:
        signed = app.signed({"diagnosis": "With a document"})
        app.wait_deliveries(signed["id"], _done)
    answer = httpx.get(
        f"{fhir_server.base_url}/DocumentReference",
        params={"identifier": f"{SYSTEM}|{signed['id']}.1"},
        timeout=10,
    )
    [document] = [e["resource"] for e in answer.json()["entry"]]
    DocumentReference.model_validate(document)
    assert document["docStatus"] == "final"
    assert document["content"][0]["attachment"]["contentType"] == "application/pdf"


def test_a_repeated_delivery_after_a_lost_answer_makes_no_second_report(
    app: ReportApp, fhir_server: FhirServer
) -> None:
    signed = app.signed({"diagnosis": "Sent twice"})
    app.wait_deliveries(signed["id"], _done)
    service = app.client.app.state.reports  # type: ignore[attr-defined]
    item = service._load(Claim(0, signed["id"], 1, "fhir", 0))
    target = FhirTarget(fhir_server.base_url, system=SYSTEM)
    for _ in range(2):  # the answer was lost: the outbox sends again
        anyio.run(target.deliver, item)
    assert len(_search(fhir_server, "DiagnosticReport", signed["id"])) == 1


def test_a_restart_of_slideserver_mid_outbox_loses_nothing(
    samples_root: Path, tmp_path: Path, fhir_server: FhirServer, lis_server: LisServer
) -> None:
    fhir_server.stop()
    lis_server.stop()
    database = f"sqlite:///{tmp_path / 'restart.sqlite'}"
    settings = Settings(roots=(samples_root,), auth="tokens", database_url=database)
    tokens = make_tokens(settings, {"admin": ("admin", ""), "dr": ("pathologist", "")})
    env = {
        "SLIDESERVER_REPORTS_FHIR_URL": fhir_server.base_url,
        "SLIDESERVER_LIS_MLLP_URL": lis_server.url,
        "SLIDESERVER_REPORTS_RETRY_SECONDS": "0.2",
        "SLIDESERVER_REPORTS_SEND_TIMEOUT": "5",
    }
    flags = ("--auth", "tokens", "--database-url", database)
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    dr = {"Authorization": f"Bearer {tokens['dr']}"}

    def deliveries(base: str, report_id: str) -> dict[str, str]:
        answer = httpx.get(f"{base}/api/reports/{report_id}", headers=dr, timeout=10)
        return {d["target"]: d["state"] for d in answer.json()["deliveries"]}

    def wait(base: str, report_id: str, wanted: dict[str, str]) -> None:
        deadline = time.monotonic() + 30
        while deliveries(base, report_id) != wanted:
            assert time.monotonic() < deadline, deliveries(base, report_id)
            time.sleep(0.2)

    with live_server([samples_root], *flags, env=env, log=tmp_path / "first.log") as base:
        order = json.loads(read("json_order.json"))
        assert httpx.post(f"{base}/api/lis/cases", json=order, headers=admin).status_code < 300
        created = httpx.post(
            f"{base}/api/cases/{ACCESSION}/reports", json={"diagnosis": "Restarted"}, headers=dr
        ).json()
        signed = httpx.post(f"{base}/api/reports/{created['id']}/sign", headers=dr, timeout=30)
        assert signed.status_code == 200, signed.text
        wait(base, created["id"], {"fhir": "failing", "hl7v2": "failing"})
    fhir_server.start()
    lis_server.start()
    with live_server([samples_root], *flags, env=env, log=tmp_path / "second.log") as base:
        wait(base, created["id"], DELIVERED)
    assert len(_search(fhir_server, "DiagnosticReport", created["id"])) == 1
    assert len(lis_server.orus()) == 1
