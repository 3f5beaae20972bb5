"""The image's command, with the image's environment, starts and is safe (no Docker engine here).

The ENV and CMD of the Dockerfile are read from the file and run as the container would, with
the slides folder, database and port moved to temporary places: ``serve`` must not refuse them
(it did when the image bound 0.0.0.0 in open mode), and the README's first-token command works.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.live_server import free_port, scrubbed_environ

DOCKERFILE = Path(__file__).resolve().parent.parent / "Dockerfile"
DEADLINE = 90.0
SLIDESERVER = [sys.executable, "-m", "slideserver"]


def final_stage() -> list[str]:
    """The Dockerfile's instructions after its last FROM, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last_from = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    return [line for line in lines[last_from:] if not line.startswith("#")]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in final_stage():
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                name, value = pair.split("=", 1)
                env[name] = value
    return env


def image_cmd() -> list[str]:
    (line,) = [line for line in final_stage() if line.startswith("CMD ")]
    cmd: list[str] = json.loads(line[4:])
    return cmd


@pytest.fixture
def container(samples_root: Path, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """The image's command and environment, run here; yields its URL and environment."""
    port = free_port()
    env = {
        **scrubbed_environ(),
        **image_env(),
        "SLIDESERVER_PORT": str(port),
        "SLIDESERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'catalog.db'}",
    }
    cmd = image_cmd()
    assert cmd[:3] == ["slideserver", "serve", "/slides"]
    args = [sys.executable, "-m", "slideserver", "serve", str(samples_root), *cmd[3:]]
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + DEADLINE
        while True:
            if proc.poll() is not None:
                pytest.fail(f"serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not answer /healthz in time"
            time.sleep(0.1)
        yield base, env
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_image_listens_on_every_address_and_requires_tokens() -> None:
    env = image_env()
    assert env["SLIDESERVER_HOST"] == "0.0.0.0"
    assert env["SLIDESERVER_AUTH"] == "tokens"


def test_the_image_command_starts_and_answers_readyz(container: tuple[str, dict[str, str]]) -> None:
    base, _ = container
    assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200
    assert httpx.get(f"{base}/api/slides", timeout=10).status_code == 401


def test_the_first_token_from_the_readme_opens_the_api(
    container: tuple[str, dict[str, str]],
) -> None:
    base, env = container
    created = subprocess.run(
        [*SLIDESERVER, "token", "create", "--role", "admin", "--name", "admin"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    token = created.stdout.strip().splitlines()[-1]
    answer = httpx.get(f"{base}/api/slides", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200
    assert answer.json()["items"]
