"""Browser-test fixtures: the real server on loopback with the sample slides, and headless Chromium.

The server runs as a subprocess (`python -m slideserver serve`), exactly as a user starts it, on a
free 127.0.0.1 port; it is killed at the end of the session whatever happens. Chromium is Debian's
`/usr/bin/chromium`, driven by Playwright's sync API; no browser is ever downloaded.

Set ``SLIDESERVER_BROWSER_SLIDES=/some/folder`` to run the suite against other slides.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[2]
VIEWER_INDEX = REPO / "slideserver" / "static" / "viewer" / "index.html"
STARTUP_TIMEOUT_S = 60.0
VIEWPORT = {"width": 1280, "height": 800}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the browser tests, saying why, when Chromium or the viewer build is missing."""
    reason = None
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is absent (make test installs Debian's chromium)"
    elif not VIEWER_INDEX.is_file():
        reason = f"viewer not built: {VIEWER_INDEX} is missing (run make viewer)"
    if reason is None:
        return
    for item in items:
        if item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.skip(reason=reason))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """The running server: its base URL and a JSON getter for the API."""

    base: str
    log: Path
    slides: list[dict[str, Any]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base + path

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=10) as resp:
            return json.load(resp)


def _wait_healthy(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"server exited with {proc.returncode}:\n{log.read_text(errors='replace')[-4000:]}"
            )
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise RuntimeError(
        f"server not healthy within {STARTUP_TIMEOUT_S:.0f} s:\n"
        + log.read_text(errors="replace")[-4000:]
    )


@pytest.fixture(scope="session")
def browser_slides_root(request: pytest.FixtureRequest) -> Path:
    """The folder the server serves: $SLIDESERVER_BROWSER_SLIDES, else the session's samples."""
    override = os.environ.get("SLIDESERVER_BROWSER_SLIDES")
    if override:
        return Path(override)
    root: Path = request.getfixturevalue("samples_root")
    return root


@pytest.fixture(scope="session")
def server(browser_slides_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Start `python -m slideserver serve` on a free loopback port; kill it at the end."""
    workdir = tmp_path_factory.mktemp("browser-server")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = workdir / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIDESERVER_")}
    env["PYTHONUNBUFFERED"] = "1"
    cmd = [sys.executable, "-m", "slideserver", "serve", str(browser_slides_root)]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_healthy(base, proc, log)
        srv = Server(base, log)
        srv.slides = srv.get_json("/api/slides?limit=200")["items"]
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (never a downloaded browser).

    Module scope: Playwright's sync API runs an event loop in the main thread while it is open,
    which would break every later test that calls ``asyncio.run``.
    """
    from playwright.sync_api import sync_playwright

    assert shutil.which(str(CHROMIUM)), f"{CHROMIUM} is not executable"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Console:
    """What the page said on its console, and the uncaught errors it raised."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def page(chromium: Any, server: Server, console: Console) -> Iterator[Any]:
    """A fresh page at 1280x800 in its own context, recording console errors."""
    context = chromium.new_context(viewport=VIEWPORT, base_url=server.base)
    context.set_default_timeout(15_000)
    pg = context.new_page()

    def on_console(msg: Any) -> None:
        loc = msg.location.get("url", "") if msg.location else ""
        text = f"{msg.text} ({loc})" if loc else msg.text
        if msg.type == "error":
            console.errors.append(text)
        elif msg.type == "warning":
            console.warnings.append(text)

    pg.on("console", on_console)
    pg.on("pageerror", lambda exc: console.errors.append(f"uncaught: {exc}"))
    try:
        yield pg
    finally:
        context.close()


# --- a second server with authentication on (tests/browser/test_viewer_auth.py) ---

AUTH_ROLES = ("pathologist", "researcher")


@dataclass
class AuthServer(Server):
    """A server started with ``--auth tokens``, and one API token per role in :data:`AUTH_ROLES`."""

    tokens: dict[str, str] = field(default_factory=dict)

    def get_json_as(self, role: str, path: str) -> Any:
        req = urllib.request.Request(
            self.base + path, headers={"Authorization": f"Bearer {self.tokens[role]}"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.load(resp)


def _create_token(env: dict[str, str], database_url: str, role: str, cwd: Path) -> str:
    """``slideserver token create``; the token is the last line it prints."""
    cmd = [sys.executable, "-m", "slideserver", "token", "create", "--role", role]
    cmd += ["--name", f"browser-{role}", "--database-url", database_url]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"token create failed ({done.returncode}):\n{done.stderr[-4000:]}")
    lines = done.stdout.strip().splitlines()
    if not lines or not lines[-1].strip():
        raise RuntimeError(f"token create printed no token:\n{done.stdout}\n{done.stderr[-2000:]}")
    return lines[-1].strip()


@pytest.fixture(scope="module")
def auth_server(
    browser_slides_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AuthServer]:
    """`slideserver serve --auth tokens` with its own SQLite database, on a free loopback port.

    A pathologist and a researcher token are created with the CLI first; the server is stopped at
    the end of the module whatever happens.
    """
    workdir = tmp_path_factory.mktemp("browser-auth-server")
    database_url = f"sqlite:///{workdir / 'db.sqlite'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIDESERVER_")}
    env["PYTHONUNBUFFERED"] = "1"
    tokens = {role: _create_token(env, database_url, role, workdir) for role in AUTH_ROLES}
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = workdir / "server.log"
    cmd = [sys.executable, "-m", "slideserver", "serve", str(browser_slides_root)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--auth", "tokens"]
    cmd += ["--database-url", database_url]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_healthy(base, proc, log)
        srv = AuthServer(base, log, tokens=tokens)
        srv.slides = srv.get_json_as("pathologist", "/api/slides?limit=200")["items"]
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def auth_page(chromium: Any, auth_server: AuthServer, console: Console) -> Iterator[Any]:
    """A fresh page (own context: no cookie yet) on the ``--auth tokens`` server.

    Console errors are recorded with the URL they are about, as ``text (url)``.
    """
    context = chromium.new_context(viewport=VIEWPORT, base_url=auth_server.base)
    context.set_default_timeout(10_000)
    pg = context.new_page()

    def on_console(msg: Any) -> None:
        loc = msg.location.get("url", "") if msg.location else ""
        text = f"{msg.text} ({loc})" if loc else msg.text
        if msg.type == "error":
            console.errors.append(text)
        elif msg.type == "warning":
            console.warnings.append(text)

    pg.on("console", on_console)
    pg.on("pageerror", lambda exc: console.errors.append(f"uncaught: {exc}"))
    try:
        yield pg
    finally:
        context.close()
