"""The report panel in Chromium: a pathologist adds a figure from the viewer's current view,
writes the report in the case view, previews it, signs it and amends it (issue 14)."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from tests.browser.test_viewer_auth import sign_in

pytestmark = pytest.mark.browser

AuthServer = Any  # tests/browser/conftest.py
ACCESSION = "S24-01234"
SVS = "S24-01234_A1_HE.svs"


def test_a_pathologist_writes_signs_and_amends_a_report_with_a_figure(
    auth_page: Any, auth_server: AuthServer
) -> None:
    page = auth_page
    slide = next(s for s in auth_server.slides if s["name"] == SVS)
    page.goto(f"/view/{slide['id']}")
    sign_in(page, auth_server.tokens["pathologist"])
    page.wait_for_function("() => document.getElementById('app').dataset.ready === 'true'")
    page.click("#add-figure")
    page.wait_for_selector("#add-figure:has-text('Added (1)')")

    page.goto(f"/case/{ACCESSION}")
    page.wait_for_selector("section.report-panel #report-new")
    page.click("#report-new")
    page.wait_for_selector("#report-diagnosis")
    assert page.locator("li.figure").count() == 1  # the view kept in the viewer
    page.fill("#report-diagnosis", "Invasive ductal carcinoma, grade 2")
    page.fill("li.figure .fig-caption", "Tumour at the margin")
    page.click("#report-save")
    page.wait_for_selector(".report-status:has-text('Draft saved.')")
    with page.expect_popup() as popup:  # the PDF preview opens in its own tab
        page.click("#report-preview")
    popup.value.close()
    page.wait_for_selector(".report-status:has-text('the PDF opens')")

    page.click("#report-sign")
    page.wait_for_selector(".report-head[data-status=final]")
    assert "signed by token:browser-pathologist" in page.inner_text(".report-head")
    page.fill("#report-diagnosis", "Invasive lobular carcinoma, grade 2")
    page.select_option("#report-amend-status", "corrected")
    page.fill("#report-amend-reason", "type revised after E-cadherin")
    page.click("#report-amend")
    page.wait_for_selector(".report-head[data-status=corrected]")
    assert page.locator("ul.versions li").all_inner_texts() == ["v1 final PDF", "v2 corrected PDF"]

    reports = auth_server.get_json_as("pathologist", f"/api/cases/{ACCESSION}/reports")["items"]
    [report] = reports
    assert (report["version"], report["status"]) == (2, "corrected")
    assert report["diagnosis"] == "Invasive lobular carcinoma, grade 2"
    [figure] = report["figures"]
    region = figure["region"]
    assert figure["slide_id"] == slide["id"] and figure["caption"] == "Tumour at the margin"
    assert region["x"] >= 0 and region["x"] + region["width"] <= slide["width"]
    assert region["y"] >= 0 and region["y"] + region["height"] <= slide["height"]
    assert region["width"] > slide["width"] / 4  # the whole slide was in view
    first = auth_server.get_json_as("pathologist", f"/api/reports/{report['id']}?version=1")
    assert first["diagnosis"] == "Invasive ductal carcinoma, grade 2"


def _post_as(server: AuthServer, role: str, path: str, body: Any) -> Any:
    request = urllib.request.Request(
        server.base + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Authorization": f"Bearer {server.tokens[role]}",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)


def test_a_figure_keeps_the_annotation_layers_shown_when_it_was_added(
    auth_page: Any, auth_server: AuthServer
) -> None:
    page = auth_page
    slide = next(s for s in auth_server.slides if s["name"] == SVS)
    layers = f"/api/slides/{slide['id']}/annotation-layers"
    for name in ("Figure shown", "Figure hidden"):
        layer_id = name.lower().replace(" ", "-")
        _post_as(auth_server, "pathologist", layers, {"id": layer_id, "name": name, "kind": "case"})
    page.goto(f"/view/{slide['id']}")
    sign_in(page, auth_server.tokens["pathologist"])
    page.wait_for_function("() => document.getElementById('app').dataset.ready === 'true'")
    page.get_by_role("button", name="Layers").click()
    page.get_by_role("checkbox", name="Show layer Figure hidden").uncheck()
    page.click("#add-figure")
    page.wait_for_selector("#add-figure:has-text('Added')")
    key = f"slideserver.report-figures.{ACCESSION}"
    figures = json.loads(page.evaluate("k => localStorage.getItem(k)", key))
    page.evaluate("k => localStorage.removeItem(k)", key)
    assert "figure-shown" in figures[-1]["layers"]
    assert "figure-hidden" not in figures[-1]["layers"]
