"""The error contract (DESIGN section 3) on every route, and the server keeps serving."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from starlette.testclient import TestClient

from slideserver.api.app import create_app
from slideserver.settings import Settings
from tests.helpers import GENERIC_TIFF, SVS, assert_error, slide_id

UNKNOWN = "aaaaaaaaaaaaaaaa"

SLIDE_ROUTES = [
    "/api/slides/{id}",
    "/api/slides/{id}/thumbnail",
    "/api/slides/{id}/associated/label",
    "/dz/{id}.dzi",
    "/dz/{id}_files/0/0_0.jpeg",
    "/iiif/3/{id}/info.json",
    "/iiif/3/{id}/full/max/0/default.jpg",
]


@pytest.mark.parametrize("route", SLIDE_ROUTES)
def test_unknown_slide_is_404_on_every_route(client: Any, route: str) -> None:
    assert_error(client.get(route.format(id=UNKNOWN)), 404, "slide_not_found")


def test_unknown_route_is_json_404(client: Any) -> None:
    assert_error(client.get("/no/such/thing"), 404, "not_found")


def test_unknown_route_does_not_echo_the_path(client: Any) -> None:
    response = client.get("/api/slides/S24-07777/nothing-here")
    assert_error(response, 404, "not_found")
    assert "S24-07777" not in response.text


def test_wrong_method_is_json_405(client: Any) -> None:
    assert_error(client.post("/healthz"), 405)


@pytest.mark.parametrize(
    ("level", "col", "row"),
    [("-1", "0", "0"), ("x", "0", "0"), ("0", "1.5", "0"), ("0", "0", "99999999999999999999")],
)
def test_malformed_tile_address_is_400(client: Any, level: str, col: str, row: str) -> None:
    sid = slide_id(client, SVS)
    assert_error(client.get(f"/dz/{sid}_files/{level}/{col}_{row}.jpeg"), 400, "bad_request")


@pytest.mark.parametrize(("level", "col", "row"), [("99", "0", "0"), ("13", "999", "0")])
def test_tile_outside_the_pyramid_is_404(client: Any, level: str, col: str, row: str) -> None:
    sid = slide_id(client, SVS)
    assert_error(client.get(f"/dz/{sid}_files/{level}/{col}_{row}.jpeg"), 404, "tile_not_found")


def test_unknown_tile_format_is_400(client: Any) -> None:
    sid = slide_id(client, SVS)
    assert_error(client.get(f"/dz/{sid}_files/8/0_0.gif"), 400, "unsupported_format")


def test_unknown_associated_image_is_404(client: Any) -> None:
    sid = slide_id(client, SVS)
    assert_error(
        client.get(f"/api/slides/{sid}/associated/nothing"), 404, "associated_image_not_found"
    )


@pytest.mark.parametrize("max_size", ["0", "-5", "abc", "100000"])
def test_bad_thumbnail_size_is_400(client: Any, max_size: str) -> None:
    sid = slide_id(client, SVS)
    assert_error(client.get(f"/api/slides/{sid}/thumbnail", params={"max": max_size}), 400)


@pytest.mark.parametrize(
    "path",
    [
        "full/max/0/default.gif",
        "0,0,-1,5/max/0/default.jpg",
        "full/0,/0/default.jpg",
        "full/max/45x/default.jpg",
        "full/max/0/sepia.jpg",
        "pct:abc/max/0/default.jpg",
    ],
)
def test_malformed_iiif_request_is_400(client: Any, path: str) -> None:
    sid = slide_id(client, SVS)
    response = client.get(f"/iiif/3/{sid}/{path}")
    assert_error(response, 400)


def test_iiif_request_beyond_limits_is_refused(client: Any) -> None:
    sid = slide_id(client, SVS)
    response = client.get(f"/iiif/3/{sid}/full/^100000,/0/default.jpg")
    assert response.status_code in (400, 413)
    assert_error(response, response.status_code)


def test_bad_search_limit_is_400(client: Any) -> None:
    assert_error(client.get("/api/slides", params={"limit": "lots"}), 400)


def test_pillow_decompression_bomb_limit_stays_on(client: Any) -> None:
    assert Image.MAX_IMAGE_PIXELS is not None


# --- damaged and vanishing files: each test gets its own root and app ---


@pytest.fixture
def damaged_root(tmp_path: Path, samples_dir: dict[str, Path]) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(samples_dir[SVS], root / SVS)
    shutil.copy(samples_dir[GENERIC_TIFF], root / GENERIC_TIFF)
    return root


def _client(root: Path, **settings: Any) -> Iterator[TestClient]:
    app = create_app(Settings(roots=(root,), **settings))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_truncated_file_answers_422_and_others_keep_serving(damaged_root: Path) -> None:
    data = (damaged_root / GENERIC_TIFF).read_bytes()
    (damaged_root / "truncated.tif").write_bytes(data[: len(data) // 3])
    (damaged_root / "garbage.svs").write_bytes(b"not a slide at all" * 100)
    for test_client in _client(damaged_root):
        listed = {i["name"]: i for i in test_client.get("/api/slides").json()["items"]}
        for name in ("truncated.tif", "garbage.svs"):
            assert listed[name]["status"] == "unreadable"
            assert_error(test_client.get(f"/dz/{listed[name]['id']}.dzi"), 422, "slide_unreadable")
        good = listed[SVS]["id"]
        assert test_client.get(f"/dz/{good}_files/9/0_0.jpeg").status_code == 200


def test_file_deleted_while_served_answers_404_gone(damaged_root: Path) -> None:
    # The server re-checks files every fingerprint_ttl seconds; 0 checks on every request.
    for test_client in _client(damaged_root, fingerprint_ttl=0):
        sid = slide_id(test_client, GENERIC_TIFF)
        assert test_client.get(f"/dz/{sid}_files/10/0_0.jpeg").status_code == 200
        (damaged_root / GENERIC_TIFF).unlink()
        assert_error(test_client.get(f"/dz/{sid}_files/11/0_0.jpeg"), 404, "slide_gone")
        assert test_client.get("/healthz").status_code == 200


def test_symlink_out_of_the_root_is_never_served(
    damaged_root: Path, samples_dir: dict[str, Path], tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(samples_dir[GENERIC_TIFF], outside / "secret.tif")
    (damaged_root / "link.tif").symlink_to(outside / "secret.tif")
    (damaged_root / "inside-link.tif").symlink_to(damaged_root / GENERIC_TIFF)
    for test_client in _client(damaged_root):
        names = {i["name"] for i in test_client.get("/api/slides").json()["items"]}
        assert "link.tif" not in names
        assert "inside-link.tif" in names or GENERIC_TIFF in names


@pytest.mark.parametrize(
    "url",
    [
        "/api/slides?accession=%00x",
        "/api/slides/%00abc",
        "/dz/%00x_files/0/0_0.jpeg",
        "/dz/abc_files/0/0_0.jpeg?x=%00",
    ],
)
def test_nul_bytes_are_refused_with_400(client: Any, url: str) -> None:
    assert_error(client.get(url), 400, "bad_request")


def test_a_bug_in_a_reader_is_a_json_500_without_its_message_and_serving_goes_on(
    samples_dir: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Tile URLs take the lean lane: it must keep the error contract of routed URLs."""
    from slideserver.readers.registry import ReaderRegistry
    from slideserver.readers.tiff.reader import TiffReader

    secret = "/secret/" + "-".join(("MRN", "0042")) + ".tif"  # not in any logged source line

    class BuggyReader(TiffReader):
        priority = 0
        armed = False
        """Off while indexing, whose pixel check would list the slide as unreadable."""

        def read_encoded_tile(self, *args: Any, **kwargs: Any) -> Any:
            if BuggyReader.armed:
                raise ValueError(secret)  # a message that could carry PHI
            return super().read_encoded_tile(*args, **kwargs)

        def read_region(self, *args: Any, **kwargs: Any) -> Any:
            if BuggyReader.armed:
                raise ValueError(secret)
            return super().read_region(*args, **kwargs)

    shutil.copy(samples_dir[GENERIC_TIFF], tmp_path / GENERIC_TIFF)
    settings = Settings(roots=(tmp_path,), database_url=f"sqlite:///{tmp_path / 'c.db'}")
    app = create_app(settings, registry=ReaderRegistry([BuggyReader]))
    with TestClient(app, raise_server_exceptions=False) as client:
        sid = slide_id(client, GENERIC_TIFF)
        BuggyReader.armed = True
        response = client.get(f"/dz/{sid}_files/0/0_0.jpeg", headers={"X-Request-ID": "bug-1"})
        assert_error(response, 500, "internal_error")
        assert response.headers["x-request-id"] == "bug-1"
        assert client.get(f"/dz/{sid}.dzi").status_code == 200
    assert "MRN-0042" not in caplog.text
    assert "unexpected ValueError" in caplog.text
