"""The report routes: drafts, edits, signing, amendments, roles, audit and the PDF."""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from pypdf import PdfReader
from starlette.testclient import TestClient

from slideserver.api.app import create_app
from slideserver.settings import Settings
from tests.helpers import assert_error
from tests.report_app import ACCESSION, MRN, ReportApp, report_app

SYNOPTIC = {"Histologic type": "Invasive ductal carcinoma", "Grade": "2 of 3", "Margins": "clear"}


@pytest.fixture(scope="module")
def app(samples_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReportApp]:
    with report_app(samples_root, tmp_path_factory.mktemp("reports-api")) as made:
        yield made


def test_a_pathologist_writes_a_draft(app: ReportApp) -> None:
    report = app.draft({"diagnosis": "DCIS", "microscopic": "Nests.", "synoptic": SYNOPTIC})
    assert (report["version"], report["status"], report["deliveries"]) == (1, "draft", [])
    assert report["synoptic"] == SYNOPTIC and report["author"] == "token:pathologist"
    listed = app.call("admin", "GET", f"/api/cases/{ACCESSION}/reports").json()["items"]
    assert report["id"] in [r["id"] for r in listed]


def test_a_retried_post_makes_one_draft(app: ReportApp) -> None:
    url = f"/api/cases/{ACCESSION}/reports"
    key = {"Idempotency-Key": "viewer-7f3a"}
    first = app.call("pathologist", "POST", url, json={"diagnosis": "a"}, headers=key)
    again = app.call("pathologist", "POST", url, json={"diagnosis": "a"}, headers=key)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]


def test_a_draft_is_edited_with_its_etag(app: ReportApp) -> None:
    report = app.draft()
    url = f"/api/reports/{report['id']}"
    etag = app.call("pathologist", "GET", url).headers["etag"]
    edited = app.call(
        "pathologist", "PUT", url, json={"diagnosis": "DCIS"}, headers={"If-Match": etag}
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["diagnosis"] == "DCIS" and edited.json()["revision"] == 2
    stale = app.call("pathologist", "PUT", url, json={"diagnosis": "x"}, headers={"If-Match": etag})
    assert_error(stale, 412, "report_changed")
    assert_error(app.call("pathologist", "PUT", url, json={"diagnosis": "x"}), 428)


def test_signing_freezes_the_version(app: ReportApp) -> None:
    signed = app.signed({"diagnosis": "Benign"})
    assert (signed["status"], signed["signer"]) == ("final", "token:pathologist")
    assert signed["signed_at"]
    url = f"/api/reports/{signed['id']}"
    etag = app.call("pathologist", "GET", url).headers["etag"]
    put = app.call("pathologist", "PUT", url, json={"diagnosis": "x"}, headers={"If-Match": etag})
    assert_error(put, 409, "report_signed")
    assert_error(app.call("pathologist", "POST", f"{url}/sign"), 409, "report_signed")


def test_an_amendment_is_a_new_signed_version(app: ReportApp) -> None:
    signed = app.signed({"diagnosis": "Benign", "synoptic": {"Margins": "clear"}})
    url = f"/api/reports/{signed['id']}"
    amended = app.call(
        "dr-b",
        "POST",
        f"{url}/amend",
        json={"status": "corrected", "reason": "wrong margin", "synoptic": {"Margins": "1 mm"}},
    )
    assert amended.status_code == 201, amended.text
    body = amended.json()
    assert (body["version"], body["status"], body["signer"]) == (2, "corrected", "token:dr-b")
    assert body["diagnosis"] == "Benign" and body["synoptic"] == {"Margins": "1 mm"}
    assert body["versions"] == [
        {"version": 1, "status": "final"},
        {"version": 2, "status": "corrected"},
    ]
    first = app.call("admin", "GET", f"{url}?version=1").json()
    assert first["status"] == "final" and first["synoptic"] == {"Margins": "clear"}


def test_amendments_need_a_signed_report_and_a_reason(app: ReportApp) -> None:
    draft = app.draft()
    amend = f"/api/reports/{draft['id']}/amend"
    assert_error(app.call("pathologist", "POST", amend, json={"reason": "x"}), 409)
    signed = app.signed()
    amend = f"/api/reports/{signed['id']}/amend"
    assert_error(app.call("pathologist", "POST", amend, json={"diagnosis": "y"}), 400)
    bad = {"status": "final", "reason": "x"}
    assert_error(app.call("pathologist", "POST", amend, json=bad), 400, "invalid_report")


def test_figures_must_show_slides_of_the_case(app: ReportApp) -> None:
    url = f"/api/cases/{ACCESSION}/reports"
    figure = {"slide_id": "not-of-this-case", "region": {"x": 0, "y": 0, "width": 9, "height": 9}}
    answer = app.call("pathologist", "POST", url, json={"figures": [figure]})
    assert_error(answer, 400, "invalid_report")


def test_unknown_reports_and_cases(app: ReportApp) -> None:
    assert_error(app.call("pathologist", "GET", "/api/reports/nothing"), 404, "report_not_found")
    url = "/api/cases/S99-00000/reports"
    assert_error(app.call("pathologist", "POST", url, json={}), 404, "case_not_found")


@pytest.mark.parametrize(
    ("caller", "method", "path", "status"),
    [
        ("researcher", "GET", "", 403),
        ("lis", "GET", "", 403),
        ("admin", "GET", "", 200),
        ("admin", "POST", "/sign", 403),
        ("lis", "POST", "/sign", 403),
        ("pathologist", "POST", "/deliveries/retry", 403),
        ("admin", "POST", "/deliveries/retry", 200),
        ("researcher", "GET", "/pdf", 403),
    ],
)
def test_roles(app: ReportApp, caller: str, method: str, path: str, status: int) -> None:
    report = app.draft()
    answer = app.call(caller, method, f"/api/reports/{report['id']}{path}")
    assert answer.status_code == status, answer.text


def test_report_reads_are_audited_with_the_case_and_patient(app: ReportApp) -> None:
    report = app.draft()
    app.call("admin", "GET", f"/api/reports/{report['id']}", headers={"X-Request-ID": "rep-aud-1"})
    engine = app.client.app.state.security.engine  # type: ignore[attr-defined]
    from sqlalchemy import select

    from slideserver.security.schema import audit_events

    with engine.connect() as conn:
        rows = conn.execute(
            select(audit_events).where(audit_events.c.request_id == "rep-aud-1")
        ).all()
    assert [(r.case_id, r.patient_id, r.subject) for r in rows] == [(ACCESSION, MRN, "token:admin")]


def test_open_mode_cannot_sign(samples_root: Path, tmp_path: Path) -> None:
    settings = Settings(roots=(samples_root,), database_url=f"sqlite:///{tmp_path / 'open.db'}")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        created = client.post(f"/api/cases/{ACCESSION}/reports", json={"diagnosis": "demo"})
        assert created.status_code == 201, created.text
        answer = client.post(f"/api/reports/{created.json()['id']}/sign")
        assert_error(answer, 403, "signer_identity_required")
        assert "own identity" in answer.json()["detail"]


# --- the PDF ---


def _pdf_text(data: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


def test_the_signed_pdf_holds_every_part(app: ReportApp, tmp_path: Path) -> None:
    figure = {
        "slide_id": app.svs,
        "region": {"x": 200, "y": 150, "width": 600, "height": 400},
        "caption": "Tumour at the deep margin",
    }
    signed = app.signed(
        {
            "diagnosis": "Invasive ductal carcinoma, grade 2",
            "microscopic": "Sheets of atypical cells.",
            "synoptic": SYNOPTIC,
            "figures": [figure],
        }
    )
    answer = app.call("pathologist", "GET", f"/api/reports/{signed['id']}/pdf")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/pdf"
    text = _pdf_text(answer.content)
    for expected in (
        "Surgical pathology report S24-01234",
        MRN,
        "DOE, JANE",
        "Left breast, core biopsy",
        "Blocks: A1, A2",
        "Invasive ductal carcinoma, grade 2",
        "Sheets of atypical cells.",
        "Grade",
        "2 of 3",
        "Figure 1. Tumour at the deep margin",
        "µm",
        "Electronically signed by token:pathologist",
        "Page 1 of",
    ):
        assert expected in text, expected
    pages = PdfReader(io.BytesIO(answer.content)).pages
    images = [image for page in pages for image in page.images]
    assert len(images) == 1
    assert images[0].image is not None and images[0].image.width == 600  # the region's own pixels
    # The same bytes every time: the signed PDF is stored, not made again.
    again = app.call("admin", "GET", f"/api/reports/{signed['id']}/pdf")
    assert again.content == answer.content


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="poppler-utils not installed")
def test_the_first_page_renders(app: ReportApp, tmp_path: Path) -> None:
    slide = app.call("pathologist", "GET", f"/api/slides/{app.svs}").json()
    middle = {"x": slide["width"] // 2 - 800, "y": slide["height"] // 2 - 560}
    figure = {"slide_id": app.svs, "region": {**middle, "width": 1600, "height": 1120}}
    signed = app.signed({"diagnosis": "Invasive ductal carcinoma", "figures": [figure]})
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(app.call("pathologist", "GET", f"/api/reports/{signed['id']}/pdf").content)
    stem = str(tmp_path / "report-page-1")
    subprocess.run(
        ["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", "-singlefile", str(pdf), stem],
        check=True,
        timeout=60,
    )
    png = tmp_path / "report-page-1.png"
    print(f"first page of the report PDF: {png}")
    with Image.open(png) as page:
        assert abs(page.width - 496) <= 1 and abs(page.height - 702) <= 1  # A4 at 60 dpi
        histogram = page.convert("L").histogram()
        dark = sum(histogram[:128])
        assert dark > 1000  # text and the figure are on the page


def test_a_draft_pdf_is_a_marked_preview(app: ReportApp) -> None:
    draft = app.draft({"diagnosis": "Not yet"})
    answer = app.call("pathologist", "GET", f"/api/reports/{draft['id']}/pdf")
    text = _pdf_text(answer.content)
    assert "DRAFT - not signed" in text and "Not signed." in text
