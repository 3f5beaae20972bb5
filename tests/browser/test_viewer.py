"""The viewer in headless Chromium against the real server and the sample slides."""

from __future__ import annotations

import io
import re
import time
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

Server = Any  # tests/browser/conftest.py: base URL, slides listed by the API
Console = Any  # tests/browser/conftest.py: console errors seen by the page

TILE = re.compile(r"/dz/(?P<id>[^/?]+)_files/(?P<level>\d+)/(?P<col>\d+)_(?P<row>\d+)\.\w+$")
SCALE = re.compile(r"^\d+(\.\d+)? (µm|mm)$")


def with_mpp(server: Server, n: int = 1) -> list[dict[str, Any]]:
    """The first ``n`` slides that know their microns per pixel, smallest first."""
    slides = [s for s in server.slides if s.get("mpp_x") and s.get("status", "ok") == "ok"]
    slides.sort(key=lambda s: s["width"] * s["height"])
    if len(slides) < n:
        pytest.fail(f"need {n} sample slides with an MPP, the server lists {len(slides)}")
    return slides[:n]


def tile_levels(page: Any, slide_id: str) -> list[int]:
    """Start recording the Deep Zoom levels of the tiles the page receives for ``slide_id``."""
    levels: list[int] = []

    def on_response(resp: Any) -> None:
        m = TILE.search(resp.url.split("?")[0])
        if m and m["id"] == slide_id and resp.status == 200:
            levels.append(int(m["level"]))

    page.on("response", on_response)
    return levels


def open_viewer(page: Any, ids: list[str], query: str = "") -> None:
    """Open /view/{ids} and wait until every pane has drawn its first tile."""
    page.goto("/view/" + ",".join(ids) + query)
    page.wait_for_function(
        "n => window.slideviewer"
        " && window.slideviewer.perf.filter(r => r.kind === 'open').length >= n",
        arg=len(ids),
    )


def settle(page: Any, seconds: float = 0.8) -> None:
    """Let OpenSeadragon's spring animations finish."""
    page.wait_for_timeout(int(seconds * 1000))


def views(page: Any) -> list[dict[str, float]]:
    return page.evaluate("() => window.slideviewer.views()")  # type: ignore[no-any-return]


def drag(page: Any, selector: str, dx: int, dy: int) -> None:
    box = page.locator(selector).bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx / 2, y + dy / 2, steps=5)
    page.mouse.move(x + dx, y + dy, steps=5)
    page.mouse.up()


def test_browser_lists_the_samples(page: Any, server: Server) -> None:
    page.goto("/")
    page.wait_for_selector("a.card")
    names = page.locator("a.card .name").all_inner_texts()
    assert sorted(names) == sorted(s["name"] for s in server.slides)
    assert len(server.slides) >= 3


def test_opening_a_slide_loads_tiles(page: Any, server: Server) -> None:
    slide = with_mpp(server)[0]
    levels = tile_levels(page, slide["id"])
    open_viewer(page, [slide["id"]])
    page.wait_for_function("() => true")  # let the response events in flight arrive
    assert levels, "no Deep Zoom tile was received"


def test_zooming_in_requests_a_deeper_level(page: Any, server: Server) -> None:
    slide = with_mpp(server)[0]
    levels = tile_levels(page, slide["id"])
    open_viewer(page, [slide["id"]])
    settle(page)
    before = max(levels)
    page.locator("button.mag[data-mag='40']").click()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and max(levels) <= before:
        page.wait_for_timeout(100)
    assert max(levels) > before, f"still at level {before} after zooming to 40x"


def test_scale_bar_shows_micrometres_or_millimetres(page: Any, server: Server) -> None:
    slide = with_mpp(server)[0]
    open_viewer(page, [slide["id"]])
    label = page.locator(".pane .scalebar .label")
    fit = label.inner_text()
    assert SCALE.match(fit), fit
    page.keyboard.press("6")  # 40x
    settle(page)
    zoomed = label.inner_text()
    assert SCALE.match(zoomed), zoomed
    assert zoomed != fit
    width_px = float(page.locator(".pane .scalebar .bar").evaluate("e => e.offsetWidth"))
    um = float(zoomed.split()[0]) * (1000 if zoomed.endswith("mm") else 1)
    # at 40x, one screen pixel is about 0.25 µm: the bar's length agrees with the MPP
    expected_um_per_px = slide["mpp_x"] / (40 * slide["mpp_x"] / 10)
    assert um / width_px == pytest.approx(expected_um_per_px, rel=0.05)


def test_synchronized_panes_move_together_and_the_lock_decouples_them(
    page: Any, server: Server
) -> None:
    a, b = with_mpp(server, 2)
    open_viewer(page, [a["id"], b["id"]])
    page.keyboard.press("4")  # 10x, so that there is room to pan
    settle(page)
    v0 = views(page)
    assert v0[0]["um_per_px"] == pytest.approx(v0[1]["um_per_px"], rel=1e-3)

    drag(page, ".pane >> nth=0", -150, -90)
    settle(page)
    v1 = views(page)
    moved = (v1[0]["um_cx"] - v0[0]["um_cx"], v1[0]["um_cy"] - v0[0]["um_cy"])
    followed = (v1[1]["um_cx"] - v0[1]["um_cx"], v1[1]["um_cy"] - v0[1]["um_cy"])
    assert abs(moved[0]) > 10 and abs(moved[1]) > 5, moved
    assert followed == pytest.approx(moved, rel=0.02, abs=0.5)

    page.locator("button.lock").click()
    drag(page, ".pane >> nth=0", 120, 60)
    settle(page)
    v2 = views(page)
    assert v2[0]["um_cx"] != pytest.approx(v1[0]["um_cx"], abs=1)
    assert (v2[1]["um_cx"], v2[1]["um_cy"]) == pytest.approx((v1[1]["um_cx"], v1[1]["um_cy"]))


def test_the_url_follows_the_view_and_restores_it(page: Any, server: Server) -> None:
    slide = with_mpp(server)[0]
    open_viewer(page, [slide["id"]])
    page.keyboard.press("4")
    settle(page)
    drag(page, ".pane", -100, -50)
    settle(page)
    page.wait_for_url(re.compile(r"mag=10(&|$)"))
    shared = page.url
    before = views(page)[0]
    open_viewer(page, [slide["id"]], "?" + shared.split("?", 1)[1])
    after = views(page)[0]
    assert after["um_per_px"] == pytest.approx(before["um_per_px"], rel=1e-3)
    assert (after["um_cx"], after["um_cy"]) == pytest.approx(
        (before["um_cx"], before["um_cy"]), abs=2 * slide["mpp_x"]
    )


def test_a_screenshot_of_the_viewer_is_not_blank(page: Any, server: Server) -> None:
    slide = with_mpp(server)[0]
    open_viewer(page, [slide["id"]])
    page.keyboard.press("3")  # 5x: tissue fills the pane
    page.wait_for_function(
        "() => { const t = window.slideviewer.panes[0].osd.world.getItemAt(0);"
        " return t && t.getFullyLoaded(); }"
    )
    png = page.locator(".pane .osd").screenshot()
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)
    assert pixels.std() > 10, f"pixel standard deviation {pixels.std():.1f}: blank viewer"
    non_white = (pixels.min(axis=2) < 230).mean()
    assert non_white > 0.05, f"only {non_white:.1%} of the pixels are not white"


def test_the_console_has_no_errors(page: Any, server: Server, console: Console) -> None:
    a, b = with_mpp(server, 2)
    page.goto("/")
    page.wait_for_selector("a.card img.loaded")
    page.locator(f"a.card[data-id='{a['id']}']").click()
    page.wait_for_function("() => window.slideviewer && window.slideviewer.perf.length > 0")
    page.keyboard.press("5")
    page.keyboard.press("r")
    settle(page)
    page.keyboard.press("?")
    page.keyboard.press("Escape")
    open_viewer(page, [a["id"], b["id"]])
    drag(page, ".pane >> nth=1", 80, 40)
    settle(page)
    accession = (a.get("case") or {}).get("accession")
    if accession:
        page.goto(f"/case/{accession}")
        page.wait_for_selector("a.card img.loaded")
    assert console.errors == []


def test_report_first_tile_and_switch_times(
    page: Any, server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    a = with_mpp(server)[0]
    page.goto("/")
    page.wait_for_selector("a.card")
    page.locator(f"a.card[data-id='{a['id']}']").click()
    page.wait_for_function("() => window.slideviewer && window.slideviewer.perf.length > 0")
    # the strip lists the slides of the case (or of the search the slide was opened from)
    page.wait_for_function("() => document.querySelectorAll('.strip-item').length >= 2")
    others = page.eval_on_selector_all(
        ".strip-item:not(.current)", "els => els.map(e => e.dataset.id)"
    )
    page.locator(f".strip-item[data-id='{others[0]}']").click()
    page.wait_for_function(
        "() => window.slideviewer.perf.some(r => r.kind === 'switch' && r.full_ms !== null)"
    )
    page.locator(f".strip-item[data-id='{a['id']}']").click()
    page.wait_for_function(
        "() => window.slideviewer.perf.filter(r => r.kind === 'switch' && r.full_ms !== null)"
        ".length >= 2"
    )
    perf = page.evaluate("() => window.slideviewer.perf")
    nav = page.evaluate(
        "() => { const m = performance.getEntriesByName('slide-open-first-tile')[0];"
        " return m ? m.startTime + m.duration : null; }"
    )
    assert page.url.split("?")[0].endswith("/view/" + a["id"])
    with capsys.disabled():
        print("\nviewer timings (ms, measured in Chromium with performance marks):")
        if nav is not None:
            print(f"  first tile painted {nav:.0f} ms after navigation start")
        for r in perf:
            print(
                f"  {r['kind']:6} {r['id']}: first tile {r['first_tile_ms']} ms,"
                f" fully loaded {r['full_ms']} ms"
            )
