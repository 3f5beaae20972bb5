"""A real FHIR R4 server for the EHR tests: medplum's FhirRouter over its MemoryRepository.

``tests/fhir_server/server.mjs`` is a few lines of Node HTTP glue around medplum's own router and
in-memory repository (search with ``_lastUpdated``, ``_include``, conditional create and update,
transactions); the glue adds ``Bundle.link[next]`` paging, ``POST /$reset`` (one server serves
the session, each test starts from an empty EHR) and, with a public key, a SMART Backend Services
token endpoint. Its packages are installed once with ``npm ci`` (``make test`` does it
too). :meth:`FhirServer.stop` between pages is an EHR outage; :meth:`start` brings it back on the
same port, empty (the repository lives in memory), so tests seed again what they need.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.redis_server import free_port

SERVER_DIR = Path(__file__).parent / "fhir_server"
INSTALLED = SERVER_DIR / "node_modules" / ".package-lock.json"


def install(timeout: float = 300.0) -> None:
    """Run ``npm ci`` once (under a file lock, so parallel sessions install it once)."""
    with (SERVER_DIR / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lockfile = SERVER_DIR / "package-lock.json"
        if INSTALLED.exists() and INSTALLED.stat().st_mtime >= lockfile.stat().st_mtime:
            return
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=SERVER_DIR,
            check=True,
            timeout=timeout,
            capture_output=True,
        )


class FhirServer:
    """One medplum FHIR server process we own; never left running after :meth:`stop`."""

    def __init__(self, folder: Path, env: Mapping[str, str] | None = None) -> None:
        self.folder = folder
        self.port = free_port()
        self.env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def smart_base_url(self) -> str:
        """The same repository, answering only with a SMART Backend Services access token."""
        return f"{self.base_url}/smart"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/auth/token"

    @property
    def private_key(self) -> Path:
        """The SMART client's private key (PEM) matching the server's public key."""
        return self.folder / "smart-client.pem"

    def tokens_issued(self) -> int:
        """How many access tokens the token endpoint has issued so far."""
        issued: int = httpx.get(f"{self.base_url}/auth/issued", timeout=10.0).json()["issued"]
        return issued

    def start(self, wait: float = 60.0) -> None:
        """Start the server; wait until it answers (it indexes the FHIR definitions first)."""
        if self.process is not None and self.process.poll() is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        log_path = self.folder / "fhir-server.log"
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                ["node", str(SERVER_DIR / "server.mjs"), str(self.port)],
                cwd=SERVER_DIR,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
            )
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the FHIR server exited; see {log_path}")
            try:
                if httpx.get(f"{self.base_url}/metadata-probe", timeout=1.0).status_code < 600:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the FHIR server did not answer on port {self.port}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL if it lingers): everything it held is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def reset(self) -> None:
        """Empty the server's repository (every resource and its history)."""
        httpx.post(f"{self.base_url}/$reset", timeout=10.0).raise_for_status()

    def transaction(
        self, entries: list[dict[str, Any]], headers: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """POST a transaction Bundle of ``entries``; return the transaction-response Bundle."""
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        answer = httpx.post(
            self.base_url,
            content=json.dumps(bundle),
            headers={"content-type": "application/fhir+json", **(headers or {})},
            timeout=30.0,
        )
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result


def urn() -> str:
    """A fresh ``urn:uuid:`` for a transaction entry's ``fullUrl`` (medplum wants real UUIDs)."""
    return f"urn:uuid:{uuid.uuid4()}"


def upsert(
    resource: dict[str, Any], identifier: str, full_url: str | None = None
) -> dict[str, Any]:
    """A transaction entry: update ``resource`` on ``identifier`` (``system|value``)."""
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "PUT", "url": f"{resource['resourceType']}?identifier={identifier}"},
    }
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def npm_available() -> bool:
    return shutil.which("node") is not None and shutil.which("npm") is not None


@pytest.fixture(scope="session")
def fhir_server_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirServer]:
    """One medplum FHIR server for the session (it takes seconds to index the FHIR definitions)."""
    if not npm_available():
        pytest.skip("Node.js and npm are needed for the medplum FHIR server")
    install()
    folder = tmp_path_factory.mktemp("fhir")
    server = FhirServer(folder, env={"FHIR_SMART_PUBLIC_KEY": str(write_key_pair(folder))})
    server.start()
    try:
        yield server
    finally:
        server.stop()


def write_key_pair(folder: Path) -> Path:
    """Write an RSA key pair (``smart-client.pem``, ``smart-client.pub.pem``) for the SMART
    client; return the public key's path (the server checks client assertions with it)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (folder / "smart-client.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = folder / "smart-client.pub.pem"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return public


@pytest.fixture
def fhir_server(fhir_server_session: FhirServer) -> FhirServer:
    """The session's medplum FHIR server, emptied for this test (and restarted if it was not
    running: a test may have stopped it)."""
    fhir_server_session.start()
    fhir_server_session.reset()
    return fhir_server_session
