"""What a signed report becomes on the wire, without servers: the ORU^R01 and the FHIR resources."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace

import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport

from slideserver.catalog.cases import CaseView, PatientIn, SpecimenView
from slideserver.db.engine import now
from slideserver.reports.fhir_delivery import diagnostic_report, document_reference
from slideserver.reports.model import ReportVersion, parse_body
from slideserver.reports.oru import build_oru, parse_mllp_url
from slideserver.reports.outbox import Outgoing

PDF = b"%PDF-1.4 a report"
CASE = CaseView(
    "S24-01234",
    "urn:oid:1.2.3",
    PatientIn("MRN-1", "urn:oid:1.2.7", "DOE^JANE", "1961-04-12", "F", "MR"),
    (SpecimenView("A", "Left breast"),),
)


def _item(diagnosis: str, status: str = "final", case: CaseView | None = CASE) -> Outgoing:
    version = ReportVersion(
        "r1", "S24-01234", 1, status, parse_body({"diagnosis": diagnosis}), 1, "a", now(),
        "token:dr-a", now(),
    )  # fmt: skip
    return Outgoing(version, PDF, case, "r1.1")


def test_report_text_with_hl7_delimiters_survives_the_oru() -> None:
    text = "Margins | clear ^ & ~ \\ all"
    message = build_oru(_item(text))
    obx = message.segment("OBX")
    assert message.unescape(str(obx[5])) == text
    assert str(message.segment("OBR")[25]) == "F"


@pytest.mark.parametrize(("status", "code"), [("amended", "C"), ("corrected", "C")])
def test_an_amendment_is_result_status_c(status: str, code: str) -> None:
    message = build_oru(_item("x", status))
    assert str(message.segment("OBR")[25]) == code
    assert {str(o[11]) for o in message.segments("OBX")} == {code}


def test_the_pdf_travels_base64_in_an_ed_obx() -> None:
    ed = next(o for o in build_oru(_item("x")).segments("OBX") if str(o[2]) == "ED")
    assert base64.b64decode(str(ed[5][0][4])) == PDF


@pytest.mark.parametrize("url", ["http://lis:2575", "mllp://lis", "lis:2575"])
def test_malformed_mllp_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        parse_mllp_url(url)


def test_the_diagnostic_report_is_valid_r4_with_the_pdf_size_and_hash() -> None:
    resource = diagnostic_report(_item("Benign", "amended"), "urn:x")
    DiagnosticReport.model_validate(resource)
    form = resource["presentedForm"][0]
    assert form["size"] == len(PDF)
    assert form["hash"] == base64.b64encode(hashlib.sha1(PDF).digest()).decode()
    assert resource["status"] == "amended" and resource["identifier"][0]["value"] == "r1"


def test_a_report_of_a_case_without_a_patient_still_validates() -> None:
    resource = diagnostic_report(_item("x", case=None), "urn:x")
    assert resource["subject"] == {"display": "patient not known"}
    assert "specimen" not in resource


def test_the_document_reference_names_the_version() -> None:
    item = _item("x", "corrected")
    item = replace(item, version=replace(item.version, version=2))
    resource = document_reference(item, "urn:x")
    assert resource["identifier"][0]["value"] == "r1.2" and resource["docStatus"] == "amended"
