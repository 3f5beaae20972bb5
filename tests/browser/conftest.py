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
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.live_server import live_server, scrubbed_environ

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


@contextmanager
def _serve(root: Path, workdir: Path, *extra: str) -> Iterator[tuple[str, Path]]:
    """`python -m slideserver serve root` as a user starts it, without ``SLIDESERVER_*`` variables.

    Runs in ``workdir`` in its own session, logging to ``workdir/server.log``; yields the base URL
    and the log, and stops the server whatever happens.
    """
    log = workdir / "server.log"
    with live_server(
        [root],
        *extra,
        env={"PYTHONUNBUFFERED": "1"},
        timeout=STARTUP_TIMEOUT_S,
        log=log,
        cwd=workdir,
        scrub_env=True,
        start_new_session=True,
    ) as base:
        yield base, log


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
    with _serve(browser_slides_root, workdir) as (base, log):
        srv = Server(base, log)
        srv.slides = srv.get_json("/api/slides?limit=200")["items"]
        yield srv


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
    yield from _recording_page(chromium, server.base, console, timeout_ms=15_000)


def _recording_page(chromium: Any, base: str, console: Console, timeout_ms: int) -> Iterator[Any]:
    """A fresh page at 1280x800 in its own context on ``base``; console errors go to ``console``.

    Console messages are recorded with the URL they are about, as ``text (url)``.
    """
    context = chromium.new_context(viewport=VIEWPORT, base_url=base)
    context.set_default_timeout(timeout_ms)
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
    env = {**scrubbed_environ(), "PYTHONUNBUFFERED": "1"}
    tokens = {role: _create_token(env, database_url, role, workdir) for role in AUTH_ROLES}
    extra = ("--auth", "tokens", "--database-url", database_url)
    with _serve(browser_slides_root, workdir, *extra) as (base, log):
        srv = AuthServer(base, log, tokens=tokens)
        srv.slides = srv.get_json_as("pathologist", "/api/slides?limit=200")["items"]
        yield srv


@pytest.fixture
def auth_page(chromium: Any, auth_server: AuthServer, console: Console) -> Iterator[Any]:
    """A fresh page (own context: no cookie yet) on the ``--auth tokens`` server.

    Console errors are recorded with the URL they are about, as ``text (url)``.
    """
    yield from _recording_page(chromium, auth_server.base, console, timeout_ms=10_000)
