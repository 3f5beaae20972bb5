"""The EHR pull in the app: ``POST /api/ehr/lookup``, its policy and audit, and ``/readyz``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from slideserver.api.app import create_app
from tests.conftest import _security_settings, make_tokens
from tests.fhir_server import FhirServer, fhir_server, fhir_server_session
from tests.redis_server import free_port
from tests.test_ehr_pull import order_entries

__all__ = ["fhir_server", "fhir_server_session"]


def wait_for(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def ehr_app(tmp_path: Path, ehr_url: str) -> tuple[Any, dict[str, str]]:
    """An ``auth=tokens`` app (no slides) pulling from ``ehr_url``, and a token per role."""
    root = tmp_path / "slides"
    root.mkdir(exist_ok=True)
    settings: Any = _security_settings(
        root,
        tmp_path / "db.sqlite",
        ehr_fhir_url=ehr_url,
        ehr_poll_seconds=3600.0,
        ehr_timeout=2.0,
    )
    tokens = make_tokens(settings, {r: (r, "") for r in ("admin", "pathologist", "researcher")})
    return create_app(settings), tokens


@pytest.fixture
def app_client(
    tmp_path: Path, fhir_server: FhirServer
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    app, tokens = ehr_app(tmp_path, fhir_server.base_url)
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_for(lambda: app.state.ehr_pull.last_success is not None)  # the first poll is done
        yield client, tokens


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_pathologist_looks_a_walk_in_accession_up_and_the_audit_names_the_case(
    app_client: tuple[TestClient, dict[str, str]], fhir_server: FhirServer
) -> None:
    client, tokens = app_client
    fhir_server.transaction(order_entries("S24-00077", "MRN77"))

    answer = client.post(
        "/api/ehr/lookup?accession=S24-00077", headers=bearer(tokens["pathologist"])
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "accession": "S24-00077",
        "found": True,
        "orders": 1,
        "rejected": 0,
        "linked_slides": 0,
        "conflicts": 0,
        "links": {"case": "/api/cases/S24-00077"},
    }
    case = client.get("/api/cases/S24-00077", headers=bearer(tokens["pathologist"]))
    assert case.status_code == 200
    audit = client.get("/api/audit?action=/api/ehr/lookup", headers=bearer(tokens["admin"]))
    rows = [(r["kind"], r["case_id"], r["patient_id"]) for r in audit.json()["items"]]
    assert ("request", "S24-00077", "MRN77") in rows


def test_researchers_may_not_look_accessions_up(
    app_client: tuple[TestClient, dict[str, str]],
) -> None:
    client, tokens = app_client
    answer = client.post(
        "/api/ehr/lookup?accession=S24-00077", headers=bearer(tokens["researcher"])
    )
    assert answer.status_code == 403


def test_a_malformed_accession_is_422_and_an_unknown_one_is_not_found(
    app_client: tuple[TestClient, dict[str, str]],
) -> None:
    client, tokens = app_client
    headers = bearer(tokens["pathologist"])
    assert client.post("/api/ehr/lookup", headers=headers).json()["error"] == "invalid_accession"
    answer = client.post("/api/ehr/lookup?accession=S24-99999", headers=headers)
    assert answer.status_code == 200 and answer.json()["found"] is False


def test_an_ehr_that_does_not_answer_makes_readyz_degraded_with_the_reason(
    tmp_path: Path,
) -> None:
    app, tokens = ehr_app(tmp_path, f"http://127.0.0.1:{free_port()}")
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_for(lambda: bool(app.state.ehr_pull.failure))
        ready = client.get("/readyz").json()
        assert ready["status"] == "degraded"
        assert ready["checks"]["ehr"] == "failing: the EHR did not answer (ConnectError)"
        metrics = client.get("/metrics", headers=bearer(tokens["admin"])).text
        assert 'slideserver_ehr_pull_total{outcome="poll_failed"} 1' in metrics
        lookup = client.post(
            "/api/ehr/lookup?accession=S24-00001", headers=bearer(tokens["pathologist"])
        )
        assert lookup.status_code == 503 and lookup.json()["error"] == "ehr_unavailable"


def test_without_an_ehr_the_lookup_says_so(secure_env: Any) -> None:
    client, tokens = secure_env
    answer = client.post("/api/ehr/lookup?accession=S24-1", headers=bearer(tokens["pathologist"]))
    assert answer.status_code == 404 and answer.json()["error"] == "ehr_not_configured"
    assert "ehr" not in client.get("/readyz").json()["checks"]
