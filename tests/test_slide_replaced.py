"""A slide file replaced under the same name: its old ID never serves the new pixels.

Tiles go out cached for a year (``immutable``) under URLs naming the slide ID, so the old ID
serving the new file's pixels would leave them in browsers as the old slide's. Between the
replacement and the next scan the old ID answers ``410 slide_changed``; the scan lists the new
content under a new ID (the old one then answers 404), and the listing and the detail agree.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from tests.helpers import assert_error, decode

NAME = "S24-04444_A1_HE.tif"
RED = (220, 30, 30)
BLUE = (30, 30, 220)


def _write(path: Path, colour: tuple[int, int, int], width: int, height: int) -> None:
    pixels = np.empty((height, width, 3), np.uint8)
    pixels[:] = colour
    tifffile.imwrite(path, pixels, tile=(256, 256), compression="jpeg", metadata=None)


def _replace_by_rename(path: Path) -> None:
    """What a scanner or ``cp`` to a temporary name and ``mv`` do: a new inode."""
    fresh = path.with_name(".incoming.tif")
    _write(fresh, BLUE, 768, 1024)
    os.replace(fresh, path)


def _rewrite_in_place(path: Path) -> None:
    """What ``cp new old`` does: the same inode, truncated and written again."""
    fresh = path.with_name(".incoming.tif")
    _write(fresh, BLUE, 768, 1024)
    data = fresh.read_bytes()
    fresh.unlink()
    with path.open("r+b") as fh:
        fh.truncate(0)
        fh.write(data)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    """An app over one red 1024 x 768 slide; files re-checked on every request."""
    from starlette.testclient import TestClient

    from slideserver.api.app import create_app
    from slideserver.settings import Settings

    root = tmp_path / "slides"
    root.mkdir()
    _write(root / NAME, RED, 1024, 768)
    app = create_app(Settings(roots=(root,), fingerprint_ttl=0))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, root


def _listed(client: Any) -> dict[str, Any]:
    items = client.get("/api/slides").json()["items"]
    assert [i["name"] for i in items] == [NAME]
    return dict(items[0])


def _mean_colour(data: bytes) -> tuple[int, ...]:
    return tuple(round(float(c)) for c in decode(data).reshape(-1, 3).mean(axis=0))


def _is(colour: tuple[int, ...], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 12 for a, b in zip(colour, expected, strict=True))


REPLACEMENTS: list[Callable[[Path], None]] = [_replace_by_rename, _rewrite_in_place]


@pytest.mark.parametrize("replace", REPLACEMENTS, ids=lambda f: f.__name__.strip("_"))
def test_the_old_id_never_serves_the_new_pixels(served: Any, replace: Any) -> None:
    client, root = served
    old = _listed(client)["id"]
    tile = f"/dz/{old}_files/10/0_0.jpeg"
    first = client.get(tile)
    assert first.status_code == 200 and _is(_mean_colour(first.content), RED)
    assert "immutable" in first.headers["cache-control"]

    replace(root / NAME)

    for url in (tile, f"/dz/{old}_files/9/0_0.png", f"/api/slides/{old}/thumbnail?max=64"):
        response = client.get(url)
        assert_error(response, 410, "slide_changed")
        assert response.headers["cache-control"] == "no-store"
    for url in (f"/api/slides/{old}", f"/dz/{old}.dzi", f"/iiif/3/{old}/info.json"):
        assert_error(client.get(url), 410, "slide_changed")


def test_after_the_scan_the_new_id_serves_the_new_pixels_and_the_old_is_gone(
    served: Any,
) -> None:
    client, root = served
    old = _listed(client)["id"]
    assert client.get(f"/dz/{old}_files/10/0_0.jpeg").status_code == 200
    _replace_by_rename(root / NAME)

    client.app.state.slideserver.catalog.refresh()

    listed = _listed(client)
    new = listed["id"]
    assert new != old
    assert_error(client.get(f"/dz/{old}_files/10/0_0.jpeg"), 404)
    assert_error(client.get(f"/api/slides/{old}"), 404)
    detail = client.get(f"/api/slides/{new}").json()
    assert (listed["width"], listed["height"]) == (detail["width"], detail["height"]) == (768, 1024)
    tile = client.get(f"/dz/{new}_files/10/0_0.jpeg")
    assert tile.status_code == 200 and _is(_mean_colour(tile.content), BLUE)


def test_a_touched_file_keeps_serving_under_its_id(served: Any) -> None:
    client, root = served
    old = _listed(client)["id"]
    assert client.get(f"/dz/{old}_files/10/0_0.jpeg").status_code == 200
    stat = (root / NAME).stat()
    os.utime(root / NAME, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))

    tile = client.get(f"/dz/{old}_files/10/0_0.jpeg")
    assert tile.status_code == 200 and _is(_mean_colour(tile.content), RED)
