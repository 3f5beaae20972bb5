"""An ``auth=tokens`` app over the sample slides with case S24-01234 ordered, for report tests."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from slideserver.api.app import create_app
from slideserver.settings import Settings
from tests.conftest import _security_settings, make_tokens
from tests.fixtures.lis.support import read
from tests.helpers import GENERIC_TIFF, SVS

ACCESSION = "S24-01234"
MRN = "MRN-0012345"
CALLERS = {
    "admin": ("admin", ""),
    "pathologist": ("pathologist", ""),
    "dr-b": ("pathologist", ""),
    "researcher": ("researcher", ""),
    "lis": ("lis", ""),
}


@dataclass
class ReportApp:
    """The test client, one token per caller, and the IDs of the case's sample slides."""

    client: TestClient
    tokens: dict[str, str]
    svs: str
    tiff: str
    settings: Settings

    def auth(self, caller: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[caller]}"}

    def call(self, caller: str, method: str, url: str, **kwargs: Any) -> Any:
        headers = {**self.auth(caller), **kwargs.pop("headers", {})}
        return self.client.request(method, url, headers=headers, **kwargs)

    def draft(self, body: dict[str, Any] | None = None, caller: str = "pathologist") -> Any:
        body = body if body is not None else {"diagnosis": "Invasive ductal carcinoma"}
        answer = self.call(caller, "POST", f"/api/cases/{ACCESSION}/reports", json=body)
        assert answer.status_code == 201, answer.text
        return answer.json()

    def signed(self, body: dict[str, Any] | None = None) -> Any:
        report = self.draft(body)
        answer = self.call("pathologist", "POST", f"/api/reports/{report['id']}/sign")
        assert answer.status_code == 200, answer.text
        return answer.json()

    def report(self, report_id: str, caller: str = "pathologist") -> Any:
        answer = self.call(caller, "GET", f"/api/reports/{report_id}")
        assert answer.status_code == 200, answer.text
        return answer.json()

    def wait_deliveries(
        self, report_id: str, done: Callable[[dict[str, str]], bool], timeout: float = 30.0
    ) -> dict[str, dict[str, Any]]:
        """Poll the report until ``done`` holds of its {target: state}; return its deliveries."""
        deadline = time.monotonic() + timeout
        while True:
            deliveries = {d["target"]: d for d in self.report(report_id)["deliveries"]}
            if done({t: d["state"] for t, d in deliveries.items()}):
                return deliveries
            assert time.monotonic() < deadline, deliveries
            time.sleep(0.1)


def order_case(client: TestClient, admin: dict[str, str]) -> None:
    """Send the LIS order of case S24-01234 (patient MRN-0012345, specimen A, blocks A1, A2)."""
    order = json.loads(read("json_order.json"))
    answer = client.post("/api/lis/cases", json=order, headers=admin)
    assert answer.status_code in (200, 201), answer.text


@contextmanager
def report_app(samples_root: Path, tmp: Path, **overrides: Any) -> Iterator[ReportApp]:
    """Start the app (SQLite in ``tmp``), make the tokens, order the case; stop it afterwards."""
    settings: Settings = _security_settings(  # type: ignore[assignment]
        samples_root, tmp / "reports.sqlite", **overrides
    )
    tokens = make_tokens(settings, CALLERS)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        admin = {"Authorization": f"Bearer {tokens['admin']}"}
        order_case(client, admin)
        slides = client.get(f"/api/cases/{ACCESSION}", headers=admin).json()["slides"]
        ids = {s["name"]: s["id"] for s in slides}
        yield ReportApp(client, tokens, ids[SVS], ids[GENERIC_TIFF], settings)


__all__ = ["ACCESSION", "MRN", "ReportApp", "order_case", "report_app"]
