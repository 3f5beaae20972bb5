"""An admin sends a report again from the viewer after the LIS never answered (issue 14).

The server delivers signed reports to an LIS that hangs up on every connection without an ACK,
gives up after one attempt, and the report panel shows an admin a "Retry deliveries" button
that makes them due again: the LIS sees one more connection.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_viewer_auth import sign_in
from tests.live_server import live_server

pytestmark = pytest.mark.browser

ACCESSION = "S24-01234"
DEADLINE = 60.0


class HangingUpLis:
    """A TCP listener on loopback that counts connections and closes each at once (no ACK)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


def create_token(database_url: str, role: str, cwd: Path) -> str:
    cmd = [sys.executable, "-m", "slideserver", "token", "create", "--role", role]
    cmd += ["--name", f"retry-{role}", "--database-url", database_url]
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip().splitlines()[-1]


class Api:
    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base, token

    def call(self, method: str, path: str, body: Any = None, **headers: str) -> tuple[Any, str]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
                **headers,
            },
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.load(answer), answer.headers.get("ETag", "")


@pytest.fixture(scope="module")
def failing_lis_server(
    browser_slides_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str], HangingUpLis]]:
    workdir = tmp_path_factory.mktemp("report-retry")
    lis = HangingUpLis()
    database_url = f"sqlite:///{workdir / 'db.sqlite'}"
    tokens = {role: create_token(database_url, role, workdir) for role in ("pathologist", "admin")}
    env = {
        "PYTHONUNBUFFERED": "1",
        "SLIDESERVER_LIS_MLLP_URL": f"mllp://127.0.0.1:{lis.port}",
        "SLIDESERVER_REPORTS_MAX_ATTEMPTS": "1",
        "SLIDESERVER_REPORTS_RETRY_SECONDS": "0.2",
        "SLIDESERVER_REPORTS_SEND_TIMEOUT": "2",
    }
    extra = ("--auth", "tokens", "--database-url", database_url)
    with live_server(
        [browser_slides_root],
        *extra,
        env=env,
        timeout=120,
        log=workdir / "server.log",
        cwd=workdir,
        scrub_env=True,
        start_new_session=True,
    ) as base:
        try:
            yield base, tokens, lis
        finally:
            lis.close()


def signed_report_given_up(api: Api) -> str:
    """Write and sign a report as a pathologist; wait until its only delivery gives up."""
    report, etag = api.call(
        "POST", f"/api/cases/{ACCESSION}/reports", {}, **{"Idempotency-Key": "retry-test"}
    )
    report, etag = api.call(
        "PUT", f"/api/reports/{report['id']}", {"diagnosis": "Benign"}, **{"If-Match": etag}
    )
    api.call("POST", f"/api/reports/{report['id']}/sign", None, **{"If-Match": etag})
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        current, _ = api.call("GET", f"/api/reports/{report['id']}")
        if [d["state"] for d in current["deliveries"]] == ["given_up"]:
            return str(report["id"])
        time.sleep(0.2)
    raise AssertionError(f"the delivery never gave up: {current['deliveries']}")


def test_an_admin_retries_a_given_up_delivery_from_the_report_panel(
    auth_page: Any, failing_lis_server: tuple[str, dict[str, str], HangingUpLis]
) -> None:
    base, tokens, lis = failing_lis_server
    signed_report_given_up(Api(base, tokens["pathologist"]))
    tried = lis.connections
    page = auth_page
    page.goto(f"{base}/case/{ACCESSION}")
    sign_in(page, tokens["admin"])
    page.wait_for_selector("ul.deliveries li[data-state=given_up]")
    page.click("#report-retry")
    page.wait_for_selector(".report-status:has-text('Deliveries will be tried again.')")
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline and lis.connections == tried:
        time.sleep(0.2)
    assert lis.connections > tried  # the report went to the LIS again


def test_a_pathologist_sees_no_retry_button(
    auth_page: Any, failing_lis_server: tuple[str, dict[str, str], HangingUpLis]
) -> None:
    base, tokens, _lis = failing_lis_server
    page = auth_page
    page.goto(f"{base}/case/{ACCESSION}")
    sign_in(page, tokens["pathologist"])
    page.wait_for_selector("ul.deliveries li")
    assert page.locator("#report-retry").count() == 0
