"""The ``slideserver`` command: info, sample, index, and serve as a real process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from tests.helpers import DICOM, SVS
from tests.live_server import live_server


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slideserver", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_info_shows_what_the_readers_see(samples_dir: dict[str, Path]) -> None:
    result = run("info", str(samples_dir[SVS]))
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["vendor"] == "aperio"
    assert info["levels"][0]["tile"] == [256, 256]
    assert {"label", "macro"} <= set(info["associated"])


def test_info_reads_a_dicom_folder(samples_dir: dict[str, Path]) -> None:
    result = run("info", str(samples_dir[DICOM]))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["format"] == "dicom"


def test_info_on_a_damaged_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.svs"
    bad.write_bytes(b"II*\x00" + b"\x00" * 100)
    result = run("info", str(bad))
    assert result.returncode == 1
    assert "slide_unreadable" in result.stderr
    assert "Traceback" not in result.stderr


INDEX_AND_LIST_WEB_MODULES = """
import sys
from slideserver.cli import main
code = main(["index", sys.argv[1]])
web = [m for m in sorted(sys.modules) if m.startswith(("starlette", "slideserver.api"))]
print(code, web)
"""


def test_index_builds_the_catalog_without_the_web_stack(
    samples_dir: dict[str, Path], tmp_path: Path
) -> None:
    shutil.copy(samples_dir[SVS], tmp_path / SVS)
    result = subprocess.run(
        [sys.executable, "-c", INDEX_AND_LIST_WEB_MODULES, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "indexed: 1 slides found, 1 added" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "0 []"


def test_serve_answers_deep_zoom_tiles_as_jpeg(samples_root: Path) -> None:
    with live_server([samples_root]) as base:
        items = httpx.get(f"{base}/api/slides", timeout=10).json()["items"]
        sid = next(i["id"] for i in items if i["name"] == SVS)
        dzi = httpx.get(f"{base}/dz/{sid}.dzi", timeout=10)
        assert 'TileSize="256"' in dzi.text
        tile = httpx.get(f"{base}/dz/{sid}_files/13/0_0.jpeg", timeout=10)
        assert tile.status_code == 200
        assert tile.content[:2] == b"\xff\xd8"


def test_serve_reads_options_from_the_environment(samples_root: Path) -> None:
    with live_server([], env={"SLIDESERVER_ROOTS": str(samples_root)}) as base:
        names = {i["name"] for i in httpx.get(f"{base}/api/slides", timeout=10).json()["items"]}
        assert SVS in names
