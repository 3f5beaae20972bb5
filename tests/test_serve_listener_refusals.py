"""``slideserver serve`` refuses, before it starts, listeners it cannot run safely.

A DICOM SCP off loopback must name the calling AE titles that may store (DICOM has no
authentication of its own). Listeners (MLLP, DICOM), the DICOM store and PACS listing run in the
app's lifespan, once per worker process: with ``--workers`` above 1 each process would bind the
same ports and move the same files, so that combination is refused with how to run it instead.
Each test runs the real command in a subprocess.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.live_server import free_port, live_server, scrubbed_environ

REFUSED = 2
"""The exit status of every ``serve`` refusal (as for MLLP, plain HTTP and open mode)."""


def serve(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``slideserver serve`` with ``args``; it must end on its own (a refusal)."""
    return subprocess.run(
        [sys.executable, "-m", "slideserver", "serve", *args],
        env={**scrubbed_environ(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_refused(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == REFUSED, done.stderr
    assert done.stderr.startswith("slideserver serve: refusing"), done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in done.stderr


def test_an_scp_off_loopback_without_allowed_aes_is_refused_before_start(tmp_path: Path) -> None:
    port = free_port()
    store = ["--dicom-store-dir", str(tmp_path / "store"), "--dicom-port", str(port)]
    done = serve([str(tmp_path), "--auth", "tokens", *store, "--dicom-host", "0.0.0.0"])
    assert_refused(done, "--dicom-allowed-aes", "0.0.0.0")
    assert not (tmp_path / "store").exists()  # nothing was opened


def test_an_scp_off_loopback_with_allowed_aes_is_not_refused_for_that(tmp_path: Path) -> None:
    port = free_port()
    store = ["--dicom-store-dir", str(tmp_path / "store"), "--dicom-port", str(port)]
    # Plain HTTP off loopback is refused next: proof the SCP's own check passed.
    scp = [*store, "--dicom-host", "0.0.0.0", "--dicom-allowed-aes", "SCANNER1"]
    done = serve([str(tmp_path), "--auth", "tokens", "--host", "0.0.0.0", *scp])
    assert_refused(done, "plain HTTP")


@pytest.mark.parametrize(
    ("flags", "env", "named"),
    [
        (["--mllp-port", "{port}"], {}, "--mllp-port"),
        (["--dicom-store-dir", "{store}", "--dicom-port", "{port}"], {}, "--dicom-port"),
        (["--dicom-store-dir", "{store}"], {}, "--dicom-store-dir"),
        (
            [],
            {
                "SLIDESERVER_DICOMWEB_SOURCES": "http://127.0.0.1:9/dicom-web",
                "SLIDESERVER_DICOMWEB_SOURCES_DIR": "{store}",
            },
            "SLIDESERVER_DICOMWEB_SOURCES",
        ),
    ],
    ids=["mllp", "dicom-scp", "dicom-store", "pacs-sources"],
)
def test_several_workers_with_a_listener_or_the_dicom_store_are_refused(
    tmp_path: Path, flags: list[str], env: dict[str, str], named: str
) -> None:
    values = {"port": str(free_port()), "store": str(tmp_path / "store")}
    args = [f.format(**values) for f in flags]
    done = serve(
        [str(tmp_path), "--workers", "2", *args], {k: v.format(**values) for k, v in env.items()}
    )
    assert_refused(done, named, "--workers 1")
    assert not (tmp_path / "store").exists()


@pytest.mark.slow  # two worker processes start (tens of seconds on a busy machine)
def test_several_workers_without_listeners_serve(tmp_path: Path) -> None:
    db = ["--database-url", f"sqlite:///{tmp_path / 'db.sqlite'}"]
    with live_server([tmp_path], "--workers", "2", *db, scrub_env=True) as base:
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
