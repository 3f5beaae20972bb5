"""The slide browser with slides no reader can serve: a badge, and no request that can only fail.

The server serves real files: openslide-python's readable ``small.svs`` and its ``unreadable.svs``
(a header that opens, tiles that do not decode), and libvips' old-style JPEG ``ojpeg-tile.tif``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import Console, Server, _recording_page, _serve
from tests.realworld import copy_slides

pytestmark = pytest.mark.browser

UNREADABLE = ("unreadable.svs", "ojpeg-tile.tif")


@pytest.fixture(scope="module")
def mixed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = copy_slides(
        {
            "openslide-python/small.svs": "small.svs",
            "openslide-python/unreadable.svs": "unreadable.svs",
            "libvips/ojpeg-tile.tif": "ojpeg-tile.tif",
        },
        tmp_path_factory.mktemp("mixed-slides"),
    )
    workdir = tmp_path_factory.mktemp("mixed-server")
    with _serve(root, workdir) as (base, log):
        srv = Server(base, log)
        srv.slides = srv.get_json("/api/slides?limit=200")["items"]
        yield srv


@pytest.fixture
def mixed_page(chromium: Any, mixed_server: Server, console: Console) -> Iterator[Any]:
    yield from _recording_page(chromium, mixed_server.base, console, timeout_ms=15_000)


def test_unreadable_slides_show_a_badge_and_cause_no_failed_request(
    mixed_page: Any, mixed_server: Server, console: Console
) -> None:
    status = {s["name"]: s["status"] for s in mixed_server.slides}
    assert status == {
        "small.svs": "ok",
        "unreadable.svs": "unreadable",
        "ojpeg-tile.tif": "unreadable",
    }
    unreadable_ids = {s["id"] for s in mixed_server.slides if s["name"] in UNREADABLE}
    requested: list[str] = []
    failed: list[str] = []
    mixed_page.on("request", lambda req: requested.append(req.url))
    mixed_page.on("requestfailed", lambda req: failed.append(req.url))

    def note_error_answer(response: Any) -> None:
        if response.status >= 400:
            failed.append(f"{response.status} {response.url}")

    mixed_page.on("response", note_error_answer)

    mixed_page.goto("/")
    mixed_page.wait_for_selector("a.card img.loaded")  # the readable slide's thumbnail
    for name in UNREADABLE:
        card = mixed_page.locator("a.card", has_text=name)
        assert card.locator(".badge.slide-status").inner_text() == "Unreadable"
        assert card.locator("img").count() == 0
        assert card.get_attribute("href") is None
    mixed_page.wait_for_load_state("networkidle")

    assert failed == []
    assert [u for u in requested if any(sid in u for sid in unreadable_ids)] == []
    assert console.errors == []
