"""A real Orthanc (Debian packages ``orthanc``, ``orthanc-dicomweb``) for the DICOM tests.

Started in a temporary folder with its own JSON configuration, on free ports (HTTP and DICOM),
with the DICOMweb plugin at ``/dicom-web/``, no authentication and remote access off (Orthanc
1.10 cannot bind one address: its HTTP server answers loopback clients only, its DICOM server
accepts only the modalities registered with it). The start waits, bounded, until ``/system``
answers; :meth:`OrthancServer.stop` always ends the process.

Use it in a test module::

    @pytest.fixture(scope="module")
    def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
        with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
            yield server

Then ``orthanc.upload(path)`` stores a Part 10 file, ``orthanc.dicomweb_url`` is the root a
DICOMweb client uses, and ``orthanc.add_modality("US", "127.0.0.1", port)`` lets Orthanc send
(C-STORE) to a DICOM SCP of ours with ``orthanc.send_to_modality("US", ids)``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.redis_server import free_port

ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
AE_TITLE = "ORTHANC"


class OrthancServer:
    """One Orthanc process we own, configured in ``folder``; never left running after stop."""

    def __init__(
        self,
        folder: Path,
        *,
        ae_title: str = AE_TITLE,
        extra_config: Mapping[str, Any] | None = None,
    ) -> None:
        executable = shutil.which(str(ORTHANC)) or shutil.which("Orthanc")
        if executable is None:
            raise FileNotFoundError("Orthanc is not installed (Debian package orthanc)")
        if not DICOMWEB_PLUGIN.is_file():
            raise FileNotFoundError("the Orthanc DICOMweb plugin is missing (orthanc-dicomweb)")
        self.executable = executable
        self.folder = folder
        self.ae_title = ae_title
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.extra_config = dict(extra_config or {})
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The REST API's base URL."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb root (QIDO-RS, WADO-RS, STOW-RS) of the plugin."""
        return f"{self.url}/dicom-web"

    def config(self) -> dict[str, Any]:
        """The configuration Orthanc is started with."""
        storage = self.folder / "storage"
        return {
            "Name": "slideserver-tests",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.ae_title,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowStore": False,
            "DicomModalities": {},
            "DicomModalitiesInDatabase": False,
            "DicomScuTimeout": 30,
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
            "StableAge": 1,
            "SaveJobs": False,
            **self.extra_config,
        }

    def start(self, wait: float = 30.0) -> None:
        """Start Orthanc and wait until ``/system`` answers; raise (and stop it) otherwise."""
        if self.process is not None and self.process.poll() is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "orthanc.json"
        config.write_text(json.dumps(self.config(), indent=2))
        log = (self.folder / "orthanc.log").open("ab")
        self.process = subprocess.Popen(
            [self.executable, f"--logdir={self.folder}", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.folder,
        )
        log.close()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited; see {self.folder}")
            if self.answers():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer on port {self.http_port} within {wait} s")

    @property
    def auth(self) -> tuple[str, str] | None:
        """The first registered user, when ``extra_config`` turned authentication on."""
        users = self.extra_config.get("RegisteredUsers") or {}
        if not self.extra_config.get("AuthenticationEnabled") or not users:
            return None
        user, password = next(iter(users.items()))
        return str(user), str(password)

    def answers(self) -> bool:
        """Tell whether the REST API answers ``/system`` right now."""
        try:
            response = httpx.get(f"{self.url}/system", timeout=1.0, auth=self.auth)
            return response.status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL if it lingers)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    # -- REST helpers --

    def get(self, path: str, **kwargs: Any) -> Any:
        """GET a REST resource and return its JSON."""
        response = httpx.get(f"{self.url}{path}", timeout=30.0, auth=self.auth, **kwargs)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: Any, timeout: float = 60.0) -> Any:
        """POST JSON (or bytes) to a REST resource and return its JSON answer."""
        if isinstance(body, bytes):
            response = httpx.post(
                f"{self.url}{path}", content=body, timeout=timeout, auth=self.auth
            )
        else:
            response = httpx.post(f"{self.url}{path}", json=body, timeout=timeout, auth=self.auth)
        response.raise_for_status()
        return response.json() if response.content else None

    def upload(self, path: Path) -> str:
        """Store one Part 10 file through ``POST /instances``; return Orthanc's instance ID."""
        answer = self.post("/instances", path.read_bytes())
        if not isinstance(answer, dict) or answer.get("Status") not in {"Success", "AlreadyStored"}:
            raise RuntimeError(f"Orthanc refused an instance: {answer!r}")
        return str(answer["ID"])

    def delete(self, path: str) -> None:
        """DELETE a REST resource (an instance, a series...)."""
        httpx.delete(f"{self.url}{path}", timeout=30.0, auth=self.auth).raise_for_status()

    def instances(self) -> list[str]:
        """Orthanc's IDs of every instance it holds."""
        return [str(i) for i in self.get("/instances")]

    def add_modality(self, name: str, host: str, port: int, ae_title: str | None = None) -> None:
        """Register a DICOM modality (an SCP of ours) Orthanc may send to by ``name``."""
        body = {"AET": ae_title or name, "Host": host, "Port": port}
        response = httpx.put(
            f"{self.url}/modalities/{name}", json=body, timeout=30.0, auth=self.auth
        )
        response.raise_for_status()

    def echo(self, name: str) -> bool:
        """Ask Orthanc to C-ECHO a registered modality; tell whether it answered."""
        response = httpx.post(
            f"{self.url}/modalities/{name}/echo", json={}, timeout=60.0, auth=self.auth
        )
        return response.status_code == 200

    def send_to_modality(self, name: str, resources: Sequence[str], timeout: float = 120.0) -> Any:
        """Ask Orthanc to C-STORE ``resources`` (instance, series... IDs) to a modality, now."""
        body = {"Resources": list(resources), "Synchronous": True}
        return self.post(f"/modalities/{name}/store", body, timeout=timeout)


@contextlib.contextmanager
def running_orthanc(
    folder: Path, *, extra_config: Mapping[str, Any] | None = None
) -> Iterator[OrthancServer]:
    """Run an :class:`OrthancServer` in ``folder`` for the duration of a ``with`` block.

    ``extra_config`` is merged into the configuration, e.g. ``{"AuthenticationEnabled": True,
    "RegisteredUsers": {"user": "password"}}`` (the REST helpers then use that user).
    """
    server = OrthancServer(folder, extra_config=extra_config)
    server.start()
    try:
        yield server
    finally:
        server.stop()
