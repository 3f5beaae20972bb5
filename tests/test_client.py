"""The Python client against a real server: auth, errors, retries, regions, tiles, datasets."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from slideserver.client import (
    AsyncClient,
    Client,
    NotFound,
    RetryPolicy,
    TileDataset,
    Unauthorized,
    Unavailable,
)
from slideserver.client.wire import decode_image
from tests.conftest import _security_settings, make_tokens
from tests.live_server import live_server

SVS = "S24-01234_A1_HE.svs"
"""8192 x 6144 at 0.25 µm/px, levels by 4 (1, 4, 16)."""
FAST = RetryPolicy(retries=3, backoff=0.01)
EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "researcher.py"


@pytest.fixture(scope="module")
def server(
    samples_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    """A live server with tokens: ``(base URL, {role: token})``."""
    db = tmp_path_factory.mktemp("client") / "db.sqlite"
    settings = _security_settings(samples_root, db)
    roles = ("pathologist", "researcher")
    tokens = make_tokens(settings, {role: (role, "") for role in roles})
    flags = ("--auth", "tokens", "--database-url", f"sqlite:///{db}")
    with live_server([samples_root], *flags, scrub_env=True) as base:
        yield base, tokens


@pytest.fixture(scope="module")
def client(server: tuple[str, dict[str, str]]) -> Iterator[Client]:
    base, tokens = server
    with Client(base, tokens["pathologist"], retry=FAST) as c:
        yield c


@pytest.fixture(scope="module")
def svs(client: Client) -> str:
    return str(next(s["id"] for s in client.slides() if s["name"] == SVS))


def iiif_png(client: Client, path: str) -> np.ndarray:
    """What the server's IIIF endpoint answers, fetched without the client's logic."""
    response = httpx.get(
        f"{client.base_url}{path}", headers={"Authorization": f"Bearer {client.token}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    return decode_image(response.content)


# -- slides and metadata --


def test_slides_lists_every_sample_page_after_page(client: Client) -> None:
    names = {s["name"] for s in client.slides(limit=1)}
    assert SVS in names and len(names) == 4


def test_slides_filter_like_the_api(client: Client) -> None:
    assert [s["name"] for s in client.slides(stain="KI67")] == ["S24-01234_A2_KI67.tif"]


def test_an_unknown_filter_is_a_mistake(client: Client) -> None:
    with pytest.raises(TypeError, match="unknown slide filter"):
        list(client.slides(colour="blue"))


def test_slide_metadata_has_size_levels_and_mpp(client: Client, svs: str) -> None:
    meta = client.slide(svs)
    assert (meta["width"], meta["height"], meta["mpp_x"]) == (8192, 6144, 0.25)
    assert [lv["downsample"] for lv in meta["levels"]] == [1.0, 4.0, 16.0]


def test_researchers_get_the_deidentified_view(server: tuple[str, dict[str, str]]) -> None:
    base, tokens = server
    with Client(base, tokens["researcher"]) as researcher:
        slides = list(researcher.slides())
    assert slides and all(s["name"] == s["id"] and "case" not in s for s in slides)


# -- auth and errors --


def test_without_a_token_the_server_answers_unauthorized(
    server: tuple[str, dict[str, str]],
) -> None:
    with Client(server[0]) as anonymous, pytest.raises(Unauthorized) as caught:
        list(anonymous.slides())
    assert caught.value.status == 401


def test_an_unknown_slide_is_not_found_with_the_servers_code(client: Client) -> None:
    with pytest.raises(NotFound) as caught:
        client.slide("no-such-slide")
    assert caught.value.code == "slide_not_found"
    assert "no-such-slide" in caught.value.detail


# -- regions --


def test_read_region_equals_the_iiif_region_pixels(client: Client, svs: str) -> None:
    region = client.read_region(svs, 2000, 1500, 300, 200)
    expected = iiif_png(client, f"/iiif/3/{svs}/2000,1500,300,200/300,200/0/default.png")
    assert region.shape == (200, 300, 3)
    assert np.array_equal(region, expected)


def test_read_region_at_an_mpp_reads_that_resolution(client: Client, svs: str) -> None:
    region = client.read_region(svs, 2048, 2048, 1024, 512, mpp=0.5)
    expected = iiif_png(client, f"/iiif/3/{svs}/2048,2048,1024,512/512,256/0/default.png")
    assert region.shape == (256, 512, 3)
    assert np.array_equal(region, expected)


def test_the_stored_level_is_the_coarsest_not_coarser_than_asked(client: Client, svs: str) -> None:
    geometry = client.geometry(svs)
    assert geometry.stored_level(geometry.downsample_for(0.5)) == 0
    assert geometry.stored_level(geometry.downsample_for(1.0)) == 1
    assert geometry.stored_level(geometry.downsample_for(3.0)) == 1
    assert geometry.stored_level(geometry.downsample_for(4.0)) == 2


def test_a_resolution_finer_than_the_scan_is_refused(client: Client, svs: str) -> None:
    with pytest.raises(ValueError, match="would be upsampled"):
        client.read_region(svs, 0, 0, 256, 256, mpp=0.125)


def test_a_region_over_the_servers_limits_is_read_in_pieces(client: Client, svs: str) -> None:
    whole = client.read_region(svs, 1000, 1000, 700, 500)
    small = replace(client.geometry(svs), max_width=256, max_height=200, max_area=40_000)
    client._geometry[svs] = small  # as if the server published maxWidth 256, maxHeight 200
    try:
        pieced = client.read_region(svs, 1000, 1000, 700, 500)
    finally:
        client._geometry.pop(svs)
    assert np.array_equal(pieced, whole)


def test_outside_the_slide_is_white(client: Client, svs: str) -> None:
    region = client.read_region(svs, 8192 - 100, 6144 - 50, 200, 100)
    assert region.shape == (100, 200, 3)
    assert (region[:, 100:] == 255).all() and (region[50:, :] == 255).all()
    inside = iiif_png(client, f"/iiif/3/{svs}/8092,6094,100,50/100,50/0/default.png")
    assert np.array_equal(region[:50, :100], inside)


def test_read_regions_returns_each_region_in_order(client: Client, svs: str) -> None:
    boxes = [(svs, 512 * i, 1024, 256, 256) for i in range(6)]
    many = client.read_regions(boxes, max_workers=3)
    assert all(np.array_equal(r, client.read_region(*b)) for r, b in zip(many, boxes, strict=True))


def test_the_async_client_reads_what_the_sync_client_reads(client: Client, svs: str) -> None:
    boxes = [(svs, 1024, 1024 + 512 * i, 512, 512) for i in range(3)]

    async def read() -> tuple[np.ndarray, list[np.ndarray], list[str]]:
        async with AsyncClient(client.base_url, client.token) as aclient:
            one = await aclient.read_region(svs, 2000, 1500, 300, 200)
            many = await aclient.read_regions(boxes, mpp=0.5)
            names = [s["name"] async for s in aclient.slides(limit=2)]
            return one, many, names

    one, many, names = asyncio.run(read())
    assert np.array_equal(one, client.read_region(svs, 2000, 1500, 300, 200))
    assert all(
        np.array_equal(r, client.read_region(*b, mpp=0.5)) for r, b in zip(many, boxes, strict=True)
    )
    assert len(names) == 4


# -- tiles and thumbnails --


def test_tiles_iterate_a_deep_zoom_level(client: Client, svs: str) -> None:
    dzi = client.deepzoom(svs)
    level = dzi.max_level - 4  # 512 x 384
    tiles = list(client.tiles(svs, level))
    cols, rows = dzi.tile_grid(level)
    assert [(t.col, t.row) for t in tiles] == [(c, r) for r in range(rows) for c in range(cols)]
    width, height = dzi.level_size(level)
    assert sum(t.pixels.shape[1] for t in tiles if t.row == 0) >= width
    assert sum(t.pixels.shape[0] for t in tiles if t.col == 0) >= height


def test_thumbnail_fits_in_max_size(client: Client, svs: str) -> None:
    assert client.thumbnail(svs, 400).shape == (300, 400, 3)


# -- retries --


class FlakyProxy:
    """A real HTTP server in front of the live one that first answers ``failures`` with an
    error status (and Retry-After), then forwards every request."""

    def __init__(
        self,
        upstream: str,
        failures: list[tuple[int, str]],
        documents: dict[str, object] | None = None,
        missing: tuple[str, ...] = (),
    ) -> None:
        self.failures = list(failures)
        self.documents = documents or {}
        self.missing = missing
        """Path prefixes answered 404, as a server without that API (an older release) does."""
        self.seen = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy.seen += 1
                if self.path in proxy.documents:  # what the upstream server does not have
                    self.answer(200, json.dumps(proxy.documents[self.path]).encode())
                    return
                if self.path.startswith(proxy.missing) and proxy.missing:
                    gone = {"error": "not_found", "detail": "no such route"}
                    self.answer(404, json.dumps(gone).encode())
                    return
                if proxy.failures:
                    status, retry_after = proxy.failures.pop(0)
                    body = json.dumps({"error": "backend_unavailable", "detail": "try later"})
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Retry-After", retry_after)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body.encode())
                    return
                answer = httpx.get(
                    upstream + self.path,
                    headers={"Authorization": self.headers.get("Authorization", "")},
                )
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("content-type", ""))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_503_then_200_is_retried_until_it_answers(client: Client, svs: str) -> None:
    proxy = FlakyProxy(client.base_url, [(503, "0"), (503, "0")])
    try:
        with Client(proxy.url, client.token, retry=FAST) as flaky:
            meta = flaky.slide(svs)
    finally:
        proxy.close()
    assert meta["id"] == svs and proxy.seen == 3


def test_429_is_retried_after_what_retry_after_says(client: Client, svs: str) -> None:
    proxy = FlakyProxy(client.base_url, [(429, "0")])
    try:
        with Client(proxy.url, client.token, retry=RetryPolicy(retries=1, backoff=60)) as flaky:
            meta = flaky.slide(svs)  # a backoff of 60 s would time the test out: Retry-After wins
    finally:
        proxy.close()
    assert meta["id"] == svs and proxy.seen == 2


def test_after_its_retries_the_client_raises_the_servers_error(client: Client, svs: str) -> None:
    proxy = FlakyProxy(client.base_url, [(503, "0")] * 4)
    try:
        with Client(proxy.url, client.token, retry=FAST) as flaky, pytest.raises(Unavailable) as e:
            flaky.slide(svs)
    finally:
        proxy.close()
    assert (e.value.code, e.value.detail, e.value.status) == (
        "backend_unavailable",
        "try later",
        503,
    )
    assert proxy.seen == 4


def test_a_server_that_is_not_there_is_unavailable() -> None:
    from tests.live_server import free_port

    nowhere = Client(f"http://127.0.0.1:{free_port()}", retry=FAST)
    with nowhere, pytest.raises(Unavailable) as caught:
        nowhere.slide("x")
    assert caught.value.code == "unreachable"


# -- dataset --


def test_the_dataset_grid_lies_on_tissue(client: Client, svs: str) -> None:
    dataset = TileDataset(client, [svs], size=256, mpp=1.0)
    thumbnail = np.asarray(Image.fromarray(client.thumbnail(svs, 1024)).convert("L"))
    assert 0 < len(dataset) < 8 * 6  # some of the 8 x 6 grid of 1024 px squares, not all
    for patch in dataset.patches:
        footprint = thumbnail[
            patch.y // 8 : (patch.y + 1024) // 8, patch.x // 8 : (patch.x + 1024) // 8
        ]
        assert patch.tissue >= 0.5 and footprint.mean() < 225  # darker than glass
    pixels, meta = dataset[0]
    assert pixels.shape == (256, 256, 3)
    assert meta["slide_id"] == svs and meta["mpp"] == 1.0 and meta["level"] == 1


def test_the_dataset_skips_slides_it_cannot_read_at_that_mpp(client: Client) -> None:
    ki67 = next(s["id"] for s in client.slides(stain="KI67"))  # scanned at 0.5 µm/px
    dataset = TileDataset(client, [ki67], size=256, mpp=0.25)
    assert len(dataset) == 0 and "would be upsampled" in dataset.skipped[ki67]


def test_the_dataset_skips_the_class_filter_on_a_server_without_annotations(
    client: Client, svs: str
) -> None:
    plain = TileDataset(client, [svs], size=256, mpp=1.0)
    proxy = FlakyProxy(client.base_url, [], missing=(f"/api/slides/{svs}/annotations",))
    try:
        with Client(proxy.url, client.token) as older:
            filtered = TileDataset(older, [svs], size=256, mpp=1.0, classes=["tumour"])
    finally:
        proxy.close()
    assert not filtered.annotations_available
    assert [p.label for p in filtered.patches] == [None] * len(plain)


def test_the_dataset_keeps_patches_inside_annotations_with_their_class(
    client: Client, svs: str
) -> None:
    plain = TileDataset(client, [svs], size=256, mpp=1.0)
    box = [[0, 0], [8192, 0], [8192, 3072], [0, 3072], [0, 0]]  # the top half of the slide
    hole = [[0, 0], [2048, 0], [2048, 3072], [0, 3072], [0, 0]]  # minus its left quarter
    tumour = {"type": "Polygon", "coordinates": [box, hole]}
    features = {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "geometry": tumour, "properties": {"class": "tumour"}}],
    }
    proxy = FlakyProxy(
        client.base_url, [], {f"/api/slides/{svs}/annotations?class=tumour": features}
    )
    try:
        with Client(proxy.url, client.token) as annotated:
            dataset = TileDataset(annotated, [svs], size=256, mpp=1.0, classes=["tumour"])
    finally:
        proxy.close()
    inside = [p for p in plain.patches if p.y + 512 < 3072 and p.x + 512 > 2048]
    assert dataset.annotations_available and len(dataset) == len(inside) > 0
    assert [(p.x, p.y) for p in dataset.patches] == [(p.x, p.y) for p in inside]
    assert {p.label for p in dataset.patches} == {"tumour"}


# -- the example in docs/ --


def test_the_researcher_example_runs(server: tuple[str, dict[str, str]]) -> None:
    base, tokens = server
    env = {**os.environ, "SLIDESERVER_URL": base, "SLIDESERVER_TOKEN": tokens["researcher"]}
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "dataset:" in result.stdout and "async corners" in result.stdout
