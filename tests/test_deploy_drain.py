"""SIGTERM drains a live server: not ready first, in-flight requests finished, then exit 0.

The request in flight is a JSON order whose body the client sends in two halves: the server is
inside it (the app awaits the rest of the body) for as long as the test wants, with no timing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.live_server import free_port, scrubbed_environ

DRAIN_SECONDS = 5
SLIDESERVER = [sys.executable, "-m", "slideserver"]
DEADLINE = 60.0
"""Seconds any one wait below may take on a busy machine before the test fails."""

ORDER = {
    "accession": "S24-07777",
    "patient": {"identifier": "MRN-0077777", "name": "DOE^JOHN"},
    "message_id": "drain-test-0001",
}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, str]]:
    """``slideserver serve`` with a drain period, on a free loopback port, and an LIS token."""
    port = free_port()
    (tmp_path / "slides").mkdir()
    database = ["--database-url", f"sqlite:///{tmp_path / 'catalog.db'}"]
    env = {**scrubbed_environ(), "SLIDESERVER_DRAIN_SECONDS": str(DRAIN_SECONDS)}
    created = subprocess.run(
        [*SLIDESERVER, "token", "create", "--role", "lis", "--name", "lis", *database],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    token = created.stdout.strip().splitlines()[-1]
    cmd = [sys.executable, "-m", "slideserver", "serve", str(tmp_path / "slides")]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--auth", "tokens", *database]
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        wait_until(lambda: answers(port, "/readyz") == 200, proc, tmp_path / "server.log")
        yield proc, port, token
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def answers(port: int, path: str) -> int | None:
    """The status of GET ``path`` on a new connection, or None when it cannot connect."""
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10).status_code
    except httpx.TransportError:
        return None


def wait_until(
    condition: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path | None = None
) -> None:
    """Poll ``condition`` until true; fail if the server exits or the deadline passes."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            pytest.fail(f"server exited with {proc.returncode}\n{tail}")
        if time.monotonic() > deadline:
            pytest.fail("condition not met before the deadline")
        time.sleep(0.05)


def readyz_body(port: int) -> dict[str, object] | None:
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
    except httpx.TransportError:
        return None
    body: dict[str, object] = answer.json()
    return body if answer.status_code == 503 else None


def test_sigterm_drains_then_finishes_the_request_in_flight_and_exits_0(
    server: tuple[subprocess.Popen[bytes], int, str],
) -> None:
    proc, port, token = server
    body = json.dumps(ORDER).encode()
    half = len(body) // 2
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as client:
        client.sendall(
            b"POST /api/lis/cases HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n"
            + f"Authorization: Bearer {token}\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:half]
        )
        # The server has the request (an order is in flight) when it answers the next one.
        assert answers(port, "/healthz") == 200
        os.kill(proc.pid, signal.SIGTERM)

        # Not ready first, while still answering everything else.
        wait_until(lambda: readyz_body(port) is not None, proc)
        assert readyz_body(port) == {"status": "draining"}
        assert answers(port, "/healthz") == 200

        # Then it stops accepting connections, and waits for the request in flight.
        wait_until(lambda: answers(port, "/healthz") is None, proc)
        assert proc.poll() is None
        client.sendall(body[half:])
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = client.recv(65536)
            assert chunk, "the server closed the connection without answering"
            response += chunk
    status_line = response.split(b"\r\n", 1)[0]
    assert status_line in (b"HTTP/1.1 201 Created", b"HTTP/1.1 200 OK")
    assert proc.wait(timeout=DEADLINE) == 0
