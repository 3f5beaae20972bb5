"""Error answers carry no PHI: no file name, accession or path, whatever the reader said.

A slide's file name holds its accession number and its path the case's folders. The probe that
found the leak: a researcher reading a slide that cannot be read got ``'S24-07777_A1_HE.svs' is
truncated``. Here the slides sit in a folder named after the case, and fail in each way a file
can: unreadable when indexed, damaged after indexing (open fails, tiles fail), and truncated
after indexing (other content than indexed).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slideserver.api.errors import slideserver_error_response
from slideserver.errors import SlideUnreadable
from slideserver.security.principals import PATHOLOGIST, RESEARCHER, STATE_KEY, Principal
from tests.helpers import GENERIC_TIFF, SVS

CASE_FOLDER = "S24-07700"
BAD_TILES = "S24-07777_A1_HE.svs"
"""Opens, but its tiles no longer decode (middle overwritten after indexing)."""
BAD_HEADER = "S24-07778_A1_HE.tif"
"""No longer opens (middle overwritten after indexing: the IFDs are gone)."""
INDEXED_UNREADABLE = "S24-07779_A1_HE.svs"
"""Truncated before indexing: listed ``unreadable``."""
TRUNCATED_LATER = "S24-07780_A1_HE.svs"
"""Truncated after indexing: other content than was indexed under its ID."""
EXPECTED = {
    BAD_TILES: "tile_unreadable",
    BAD_HEADER: "slide_unreadable",
    INDEXED_UNREADABLE: "slide_unreadable",
    TRUNCATED_LATER: "slide_changed",
}
HASHED = 64 * 1024
"""What the content hash reads at each end of a file: left as it was, so the hash still holds."""


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _garble_middle(path: Path) -> None:
    """Overwrite all but the first and last 64 KiB: same size, same content hash.

    With 0xFF, not random noise: random bytes sometimes left a TIFF's broken IFD chain readable
    (its first level opens, only tiles fail), so the error a request got changed from run to
    run. An IFD of 65,535 tags is refused every time; a tile of 0xFF never decodes."""
    size = path.stat().st_size
    with path.open("r+b") as fh:
        fh.seek(HASHED)
        fh.write(b"\xff" * (size - 2 * HASHED))


@pytest.fixture(scope="module")
def damaged(
    samples_dir: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, dict[str, str], dict[str, str], Path]]:
    """An ``auth=tokens`` app whose slides fail as named above: (client, tokens, ids, folder)."""
    from starlette.testclient import TestClient

    from slideserver.api.app import create_app
    from tests.conftest import _security_settings, make_tokens

    base = tmp_path_factory.mktemp("phi-errors")
    folder = base / "slides" / CASE_FOLDER
    folder.mkdir(parents=True)
    shutil.copy(samples_dir[SVS], folder / BAD_TILES)
    shutil.copy(samples_dir[GENERIC_TIFF], folder / BAD_HEADER)
    shutil.copy(samples_dir[SVS], folder / TRUNCATED_LATER)
    data = samples_dir[SVS].read_bytes()
    (folder / INDEXED_UNREADABLE).write_bytes(data[: len(data) // 3])
    settings = _security_settings(base / "slides", base / "db.sqlite", fingerprint_ttl=0)
    tokens = make_tokens(settings, {r: (r, "") for r in ("admin", PATHOLOGIST, RESEARCHER)})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:  # type: ignore[arg-type]
        items = client.get("/api/slides", headers=_auth(tokens["admin"])).json()["items"]
        ids = {i["name"]: i["id"] for i in items}
        _garble_middle(folder / BAD_TILES)
        _garble_middle(folder / BAD_HEADER)
        later = folder / TRUNCATED_LATER
        later.write_bytes(later.read_bytes()[: later.stat().st_size // 2])
        yield client, tokens, ids, folder


def _urls(sid: str) -> list[str]:
    return [
        f"/api/slides/{sid}",
        f"/api/slides/{sid}/thumbnail?max=64",
        f"/api/slides/{sid}/associated/thumbnail",
        f"/dz/{sid}.dzi",
        f"/dz/{sid}_files/10/0_0.png",
        f"/dz/{sid}_files/12/0_0.jpeg",
        f"/iiif/3/{sid}/info.json",
        f"/iiif/3/{sid}/full/128,/0/default.png",
    ]


def _forbidden_strings(folder: Path, name: str) -> list[str]:
    return [
        name,
        Path(name).stem,
        "S24-077",
        CASE_FOLDER,
        str(folder),
        os.path.realpath(folder),
        str(folder.parent.parent),
    ]


@pytest.mark.parametrize("role", [RESEARCHER, PATHOLOGIST])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_error_bodies_name_no_file_accession_or_path(damaged: Any, role: str, name: str) -> None:
    client, tokens, ids, folder = damaged
    answered = set()
    for url in _urls(ids[name]):
        response = client.get(url, headers=_auth(tokens[role]))
        if response.status_code < 400:
            continue
        body = response.json()
        answered.add(body["error"])
        for needle in _forbidden_strings(folder, name):
            assert needle not in response.text, (url, needle, response.text)
    assert EXPECTED[name] in answered


def test_researchers_get_a_fixed_detail_per_error_code(damaged: Any) -> None:
    client, tokens, ids, _ = damaged
    response = client.get(f"/dz/{ids[BAD_HEADER]}.dzi", headers=_auth(tokens[RESEARCHER]))
    assert response.json() == {
        "error": "slide_unreadable",
        "detail": "the slide's file cannot be read",
    }


def test_pathologists_are_told_what_is_wrong_without_the_file_name(damaged: Any) -> None:
    client, tokens, ids, _ = damaged
    response = client.get(f"/dz/{ids[BAD_HEADER]}.dzi", headers=_auth(tokens[PATHOLOGIST]))
    body = response.json()
    assert body["error"] == "slide_unreadable"
    # The reader's own reason (which reader, what failed), with "the file" for its name: not
    # the fixed text researchers get.
    assert body["detail"] != "the slide's file cannot be read", body
    assert "the file" in body["detail"] and "S24-07778" not in body["detail"], body


def _scope(role: str) -> dict[str, Any]:
    principal = Principal(f"token:{role}", role)
    return {"type": "http", "method": "GET", "path": "/", "state": {STATE_KEY: principal}}


@pytest.mark.parametrize(
    "detail",
    [
        "Invalid TIFF: /srv/slides/S24-07777/giant.tif",
        "cannot open '/srv/slides/case folder/S24-07777_A1_HE.svs': Permission denied",
        "cannot open C:\\scans\\S24-07777\\giant.tif: access denied",
    ],
)
def test_a_path_a_backend_leaks_never_reaches_any_caller(detail: str) -> None:
    for role in (PATHOLOGIST, RESEARCHER):
        response = slideserver_error_response(_scope(role), SlideUnreadable(detail))
        body = bytes(response.body).decode()
        for needle in ("/srv", "slides/", "scans", "giant", "S24-07777", "C:"):
            assert needle not in body, (role, needle, body)


def test_researchers_get_no_accession_even_in_what_they_typed() -> None:
    from slideserver.errors import SlideNotFound

    exc = SlideNotFound("no slide with id 'S24-07777_A1_HE.svs'")
    body = bytes(slideserver_error_response(_scope(RESEARCHER), exc).body).decode()
    assert "S24-07777" not in body and ".svs" not in body


def test_the_handle_pool_strips_the_file_name_and_path_from_reader_errors(
    samples_dir: dict[str, Path], tmp_path: Path
) -> None:
    from slideserver.handles import HandlePool
    from slideserver.models import SlideSource
    from slideserver.readers.registry import default_registry

    folder = tmp_path / CASE_FOLDER
    folder.mkdir()
    path = folder / BAD_HEADER
    data = samples_dir[GENERIC_TIFF].read_bytes()
    path.write_bytes(data[: len(data) // 3])
    pool = HandlePool(default_registry(), [tmp_path])
    with pytest.raises(SlideUnreadable) as raised, pool.borrow("sid", SlideSource(path)):
        pass
    for needle in _forbidden_strings(folder, BAD_HEADER):
        assert needle not in raised.value.detail
    assert "the file" in raised.value.detail
