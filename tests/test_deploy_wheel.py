"""The wheel a new user builds with ``python -m build`` from a clean checkout serves the viewer.

The tree is copied as git tracks it (no built viewer, no node_modules), built exactly as the
README says (sdist, then the wheel from the sdist; the build step runs npm in viewer/), installed
with pip into a folder of its own, and served from there, never from this source tree.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.live_server import live_server, scrubbed_environ

pytestmark = pytest.mark.slow

PIP_INSTALL = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile"]
REPO = Path(__file__).resolve().parent.parent
BUILD_TIMEOUT = 540
"""Seconds the build may take: npm ci and vite on a busy two-core machine, plus pip's build env."""


def copy_tracked_tree(destination: Path) -> None:
    """Copy the files git tracks, as they are in the work tree, to ``destination``."""
    listing = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True, timeout=60
    ).stdout.decode()
    for name in filter(None, listing.split("\0")):
        source = REPO / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel from a clean copy of the tree, as ``python -m build`` does for a user."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the project's git checkout (the clean copy is what git tracks)")
    source = tmp_path_factory.mktemp("checkout")
    copy_tracked_tree(source)
    assert not (source / "slideserver" / "static" / "viewer").exists()
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        env=scrubbed_environ(),
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    (built,) = out.glob("slideserver-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Install the wheel (without its dependencies, which this venv has) into its own folder."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [*PIP_INSTALL, "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return target


@pytest.fixture(scope="module")
def served(installed: Path, samples_root: Path) -> Iterator[str]:
    """``slideserver serve`` run from the installed package, in a folder outside the tree."""
    env = {"PYTHONPATH": str(installed)}
    with live_server([samples_root], env=env, scrub_env=True, cwd=installed.parent) as base:
        yield base


def test_the_wheel_holds_the_built_viewer(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "slideserver/static/viewer/index.html" in names
    assert any(re.fullmatch(r"slideserver/static/viewer/assets/.+\.js", n) for n in names)


def test_the_server_runs_from_the_installed_package(installed: Path) -> None:
    env = {**scrubbed_environ(), "PYTHONPATH": str(installed)}
    found = subprocess.run(
        [sys.executable, "-c", "import slideserver; print(slideserver.__file__)"],
        cwd=installed.parent,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    assert Path(found).is_relative_to(installed)


def assets_of(page: str) -> list[str]:
    """The viewer's script and style URLs named by its page."""
    return re.findall(r'(?:src|href)="(/static/viewer/assets/[^"]+)"', page)


def test_the_browser_page_and_its_assets_answer(served: str) -> None:
    page = httpx.get(f"{served}/", timeout=30)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assets = assets_of(page.text)
    assert any(a.endswith(".js") for a in assets)
    for asset in assets:
        assert httpx.get(f"{served}{asset}", timeout=30).status_code == 200, asset


def test_the_slide_page_answers_the_viewer(served: str) -> None:
    items = httpx.get(f"{served}/api/slides", timeout=30).json()["items"]
    assert items
    page = httpx.get(f"{served}/view/{items[0]['id']}", timeout=30)
    assert page.status_code == 200
    assert assets_of(page.text)
