"""Build step of the wheel: the viewer is built into the package when it is not there yet.

pyproject.toml holds everything else. This shim only adds to setuptools' ``build_py`` the
command a new user would otherwise forget: ``npm ci && npm run build`` in ``viewer/``, which
writes ``slideserver/static/viewer`` (packaged by ``package-data``). A tree that already holds
the built viewer (``make viewer``, or an sdist made from such a tree) is packaged as it is.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
VIEWER_SOURCE = HERE / "viewer"
VIEWER_BUILT = HERE / "slideserver" / "static" / "viewer" / "index.html"


class ViewerMissing(RuntimeError):
    """Neither the built viewer nor npm to build it: the wheel would serve no pages."""


def build_viewer() -> None:
    """Build the viewer with npm unless it is built already; refuse to build a wheel without it."""
    if VIEWER_BUILT.is_file():
        return
    npm = shutil.which("npm")
    if npm is None or not (VIEWER_SOURCE / "package.json").is_file():
        raise ViewerMissing(
            "slideserver's wheel needs the built viewer (slideserver/static/viewer), and it is "
            "not there. Install Node.js 20 or later with npm and build again (the build runs "
            "`npm ci && npm run build` in viewer/), or run `make viewer` first."
        )
    for args in (["ci", "--no-audit", "--no-fund", "--loglevel=error"], ["run", "build"]):
        subprocess.run([npm, *args], cwd=VIEWER_SOURCE, check=True)
    if not VIEWER_BUILT.is_file():
        raise ViewerMissing(f"`npm run build` left no {VIEWER_BUILT.relative_to(HERE)}")


class BuildPyWithViewer(build_py):  # type: ignore[misc]  # setuptools ships no types here
    """setuptools' ``build_py``, with the viewer built first so its files are package data."""

    def run(self) -> None:
        build_viewer()
        super().run()


setup(cmdclass={"build_py": BuildPyWithViewer})
