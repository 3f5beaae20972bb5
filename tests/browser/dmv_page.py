"""The dicom-microscopy-viewer test page (``tests/browser/dmv``): installed and built once.

``npm ci`` installs Slim's viewer library and ``dicomweb-client`` from the lockfile, and
``npm run build`` bundles ``src/main.js`` with esbuild into ``dist/`` next to the library's
data-loader worker and WebAssembly codecs. Both run under a file lock (parallel sessions build
once) and only when the lockfile or a source is newer than what was built.
"""

from __future__ import annotations

import fcntl
import subprocess
from pathlib import Path

PAGE_DIR = Path(__file__).parent / "dmv"
DIST = PAGE_DIR / "dist"
INSTALLED = PAGE_DIR / "node_modules" / ".package-lock.json"
BUILT = DIST / "main.js"
SOURCES = ("package-lock.json", "build.mjs", "src/main.js", "src/index.html")


def _newer_than(target: Path, sources: list[Path]) -> bool:
    return target.exists() and all(target.stat().st_mtime >= s.stat().st_mtime for s in sources)


def _npm(*args: str, timeout: float) -> None:
    done = subprocess.run(
        ["npm", *args], cwd=PAGE_DIR, timeout=timeout, capture_output=True, text=True
    )
    if done.returncode != 0:
        output = done.stdout[-2000:] + done.stderr[-4000:]
        raise RuntimeError(f"npm {' '.join(args)} failed:\n{output}")


def build_page(timeout: float = 300.0) -> Path:
    """Install (``npm ci``) and build the page if needed; return the folder to serve."""
    with (PAGE_DIR / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _newer_than(INSTALLED, [PAGE_DIR / "package-lock.json"]):
            _npm("ci", "--no-audit", "--no-fund", "--loglevel=error", timeout=timeout)
        if not _newer_than(BUILT, [PAGE_DIR / s for s in SOURCES]):
            _npm("run", "build", "--silent", timeout=timeout)
    return DIST
