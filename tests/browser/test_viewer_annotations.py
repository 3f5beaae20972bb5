"""Annotations in the viewer, in headless Chromium against a real server (issue 16).

The server runs with its own SQLite catalog for this module, so the shapes drawn here (and the
200,000 detections of the slow test) never show in the other browser tests.
"""

from __future__ import annotations

import json
import re
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

import numpy as np
import pytest

from tests.browser.conftest import Server, _serve

pytestmark = pytest.mark.browser

Console = Any  # tests/browser/conftest.py: console errors seen by the page

AREA = re.compile(r"area ([\d,.]+) (µm²|mm²)")
FEATURE_BUDGET = 10_000  # viewer/src/annotations/store.ts: most features a view loads as shapes


@pytest.fixture(scope="module")
def server(browser_slides_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`slideserver serve` with a catalog database of its own (annotations live there)."""
    workdir = tmp_path_factory.mktemp("browser-annotations")
    database_url = f"sqlite:///{workdir / 'catalog.sqlite'}"
    with _serve(browser_slides_root, workdir, "--database-url", database_url) as (base, log):
        srv = Server(base, log)
        srv.slides = srv.get_json("/api/slides?limit=200")["items"]
        yield srv


# --- helpers ---


def call(
    server: Server,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> tuple[int, dict[str, str], Any]:
    """One API call as a script makes it: status, headers (lower-case names), the JSON answer."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server.url(path), data=data, method=method)
    req.add_header("X-Requested-With", "slideserver")
    if data is not None:
        req.add_header("Content-Type", "application/geo+json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, head, raw = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        status, head, raw = err.code, err.headers, err.read()
    return status, {k.lower(): v for k, v in head.items()}, json.loads(raw) if raw else None


def slide_with_mpp(server: Server, largest: bool = False) -> dict[str, Any]:
    slides = [s for s in server.slides if s.get("mpp_x") and s.get("status", "ok") == "ok"]
    if not slides:
        pytest.fail("need a sample slide with an MPP")
    slides.sort(key=lambda s: s["width"] * s["height"])
    return slides[-1] if largest else slides[0]


def features(server: Server, slide_id: str) -> list[dict[str, Any]]:
    status, _, body = call(server, "GET", f"/api/slides/{slide_id}/annotations")
    assert status == 200, body
    return body["features"]  # type: ignore[no-any-return]


def clear(server: Server, slide_id: str) -> None:
    """Delete every annotation of the slide (each with its ETag), so a test starts from none."""
    for f in features(server, slide_id):
        aid = f["properties"]["id"]
        status, headers, _ = call(server, "GET", f"/api/annotations/{aid}")
        assert status == 200
        status, _, body = call(
            server, "DELETE", f"/api/annotations/{aid}", headers={"If-Match": headers["etag"]}
        )
        assert status in (200, 204), body
    assert features(server, slide_id) == []


def polygon(cx: float, cy: float, w: float, h: float) -> dict[str, Any]:
    ring = [
        [cx - w, cy - h],
        [cx + w, cy - h],
        [cx + w, cy + h],
        [cx - w, cy + h],
        [cx - w, cy - h],
    ]
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"class": "tumour"},
    }


def create(server: Server, slide_id: str, feature: dict[str, Any]) -> dict[str, Any]:
    status, _, body = call(server, "POST", f"/api/slides/{slide_id}/annotations", feature)
    assert status in (200, 201), body
    return body["features"][0] if body.get("type") == "FeatureCollection" else body  # type: ignore[no-any-return]


def open_viewer(page: Any, ids: list[str]) -> None:
    """Open /view/{ids}; wait until every pane has drawn a tile and its annotations are loaded."""
    page.goto("/view/" + ",".join(ids))
    page.wait_for_function(
        "n => window.slideviewer"
        " && window.slideviewer.perf.filter(r => r.kind === 'open').length >= n",
        arg=len(ids),
    )
    page.wait_for_timeout(800)  # OpenSeadragon's spring, then the debounced bbox request


def wait_status(page: Any, pattern: str) -> None:
    """Wait until the annotation status line matches ``pattern`` (a JavaScript regex)."""
    page.wait_for_function(
        "p => new RegExp(p).test(document.querySelector('.annot-status').textContent)", arg=pattern
    )


def wait_pane(page: Any, key: str, value: str) -> None:
    """Wait until the first pane's ``data-<key>`` is ``value``."""
    page.wait_for_function(
        "([k, v]) => document.querySelector('.pane').dataset[k] === v", arg=[key, value]
    )


def shapes(page: Any, pane: int = 0) -> int:
    """How many annotations the pane drew in its last frame."""
    value = page.locator(".pane").nth(pane).get_attribute("data-annotation-shapes")
    return int(value or 0)


def pane_point(page: Any, fx: float, fy: float, pane: int = 0) -> tuple[float, float]:
    """A point of the pane, as fractions of its width and height, in page coordinates."""
    box = page.locator(".pane").nth(pane).bounding_box()
    return box["x"] + fx * box["width"], box["y"] + fy * box["height"]


def draw_polygon(page: Any, pane: int = 0) -> list[tuple[float, float]]:
    """Draw a 200 x 120 pixel rectangle with the polygon tool, one click a vertex, then Enter."""
    page.get_by_role("button", name="Polygon").click()
    cx, cy = pane_point(page, 0.5, 0.5, pane)
    corners = [(cx - 100, cy - 60), (cx + 100, cy - 60), (cx + 100, cy + 60), (cx - 100, cy + 60)]
    for x, y in corners:
        page.mouse.click(x, y)
    page.keyboard.press("Enter")
    return corners


def shown_area_um2(page: Any) -> float:
    text = page.locator("output.annot-measure").inner_text()
    m = AREA.search(text)
    assert m, f"no area in the measurement readout: {text!r}"
    value = float(m[1].replace(",", ""))
    return value * 1e6 if m[2] == "mm²" else value


# --- drawing, measuring, keeping ---


def test_a_drawn_polygon_shows_its_area_and_is_there_after_a_reload(
    page: Any, server: Server, console: Console
) -> None:
    slide = slide_with_mpp(server)
    clear(server, slide["id"])
    open_viewer(page, [slide["id"]])
    um_per_px = page.evaluate("() => window.slideviewer.views()[0].um_per_px")
    draw_polygon(page)
    wait_status(page, "^Saved.$")

    saved = features(server, slide["id"])
    assert len(saved) == 1
    server_area = saved[0]["properties"]["measurements"]["area_um2"]
    # 200 x 120 screen pixels at the current zoom, by hand
    assert server_area == pytest.approx(200 * 120 * um_per_px**2, rel=0.03)
    assert shown_area_um2(page) == pytest.approx(server_area, rel=0.01)

    page.reload()
    page.wait_for_function("() => window.slideviewer && window.slideviewer.perf.length > 0")
    page.wait_for_function("() => document.querySelector('.pane').dataset.annotationShapes === '1'")
    page.keyboard.press("v")  # select
    x, y = pane_point(page, 0.5, 0.5)
    page.mouse.click(x, y)
    page.wait_for_function(
        "() => /area/.test(document.querySelector('output.annot-measure').textContent)"
    )
    assert shown_area_um2(page) == pytest.approx(server_area, rel=0.01)
    assert console.errors == []


def test_a_second_pane_on_the_same_slide_shows_annotations_and_new_ones(
    page: Any, server: Server
) -> None:
    slide = slide_with_mpp(server)
    clear(server, slide["id"])
    cx, cy = slide["width"] / 2, slide["height"] / 2
    create(server, slide["id"], polygon(cx, cy, slide["width"] / 8, slide["height"] / 8))
    before = len(features(server, slide["id"]))
    open_viewer(page, [slide["id"], slide["id"]])
    page.wait_for_function(
        "n => [...document.querySelectorAll('.pane')]"
        ".every(p => Number(p.dataset.annotationShapes) === n)",
        arg=before,
    )
    # drawn in the first pane, shown in the second at once (one store per slide)
    page.get_by_role("button", name="Point").click()
    x, y = pane_point(page, 0.3, 0.3, 0)
    page.mouse.click(x, y)
    page.wait_for_function(
        "n => Number(document.querySelectorAll('.pane')[1].dataset.annotationShapes) === n",
        arg=before + 1,
    )
    assert len(features(server, slide["id"])) == before + 1


def test_undo_and_redo_remove_and_restore_a_shape_on_the_server(page: Any, server: Server) -> None:
    slide = slide_with_mpp(server)
    clear(server, slide["id"])
    open_viewer(page, [slide["id"]])
    before = len(features(server, slide["id"]))
    page.keyboard.press("t")  # rectangle
    x0, y0 = pane_point(page, 0.35, 0.35)
    x1, y1 = pane_point(page, 0.45, 0.45)
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=5)
    page.mouse.up()
    wait_status(page, "^Saved.$")
    made = features(server, slide["id"])
    assert len(made) == before + 1
    assert any(f["properties"].get("shape") == "rectangle" for f in made)

    page.keyboard.press("Control+z")
    wait_status(page, "^Undone.$")
    assert len(features(server, slide["id"])) == before
    page.keyboard.press("Control+Shift+z")
    wait_status(page, "^Redone.$")
    assert len(features(server, slide["id"])) == before + 1


def test_an_edit_that_lost_a_race_is_reloaded_and_the_user_told(page: Any, server: Server) -> None:
    slide = slide_with_mpp(server)
    clear(server, slide["id"])
    w, h = slide["width"], slide["height"]
    mine = create(server, slide["id"], polygon(w * 0.5, h * 0.5, w / 10, h / 10))
    open_viewer(page, [slide["id"]])
    page.keyboard.press("v")
    x, y = pane_point(page, 0.5, 0.5)
    page.mouse.click(x, y)
    page.wait_for_function(
        "() => !document.querySelector('button[aria-label=\"Delete annotation\"]').disabled"
    )

    # someone else moves it first
    aid = mine["properties"]["id"]
    status, headers, _ = call(server, "GET", f"/api/annotations/{aid}")
    assert status == 200
    theirs = polygon(w * 0.25, h * 0.25, w / 10, h / 10)
    status, _, body = call(
        server, "PUT", f"/api/annotations/{aid}", theirs, {"If-Match": headers["etag"]}
    )
    assert status == 200, body

    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 40, y + 30, steps=4)
    page.mouse.up()
    page.wait_for_function(
        "() => /Someone else changed/.test(document.querySelector('.annot-status').textContent)"
    )
    shown = page.evaluate(
        "id => window.slideannotations.stores().flatMap(s => [...s.annotations.values()])"
        ".find(a => a.id === id).feature.geometry.coordinates[0][0]",
        aid,
    )
    assert shown == pytest.approx(theirs["geometry"]["coordinates"][0][0])
    _, _, after = call(server, "GET", f"/api/annotations/{aid}")
    assert after["geometry"]["coordinates"] == theirs["geometry"]["coordinates"]


def test_a_hidden_layer_is_not_drawn(page: Any, server: Server) -> None:
    slide = slide_with_mpp(server)
    clear(server, slide["id"])
    create(server, slide["id"], polygon(slide["width"] / 2, slide["height"] / 2, 50, 50))
    open_viewer(page, [slide["id"]])
    page.wait_for_function(
        "() => Number(document.querySelector('.pane').dataset.annotationShapes) > 0"
    )
    page.get_by_role("button", name="Layers").click()
    for box in page.get_by_role("checkbox", name=re.compile("^Show layer")).all():
        box.uncheck()
    wait_pane(page, "annotationShapes", "0")


def test_the_history_of_an_edited_annotation_shows_each_version_and_restores_one(
    page: Any, server: Server, console: Console
) -> None:
    slide = slide_with_mpp(server)
    clear(server, slide["id"])
    open_viewer(page, [slide["id"]])
    draw_polygon(page)  # saved, then selected
    wait_status(page, "^Saved.$")
    (made,) = features(server, slide["id"])
    aid, author = made["properties"]["id"], made["properties"]["author"]
    page.get_by_label("Annotation class").select_option("stroma")  # the selection's class
    page.wait_for_function(
        "id => window.slideannotations.stores().flatMap(s => [...s.annotations.values()])"
        ".find(a => a.id === id)?.feature.properties.version === 2",
        arg=aid,
    )

    page.get_by_role("button", name="History").click()
    versions = page.locator(".annot-history li.version")
    versions.nth(1).wait_for()
    assert versions.count() == 2
    newest, first = versions.nth(0).inner_text(), versions.nth(1).inner_text()
    assert "v2" in newest and author in newest and "class: tumour → stroma" in newest
    assert "v1" in first and author in first and "created as tumour" in first
    assert re.search(r"area [\d,.]+ (µm²|mm²)", first)  # what it measured

    page.get_by_role("button", name="Restore version 1").click()
    versions.nth(2).wait_for()  # the restore is a third version, and the list shows it
    _, _, restored = call(server, "GET", f"/api/annotations/{aid}")
    assert restored["properties"]["class"] == "tumour"
    assert restored["properties"]["version"] == 3
    assert restored["geometry"] == made["geometry"]
    assert console.errors == []


# --- many shapes ---


def detections(slide: dict[str, Any], n: int, seed: int = 16) -> list[dict[str, Any]]:
    """``n`` cell detections (points) in clusters, as an algorithm writes them."""
    rng = np.random.default_rng(seed)
    w, h = slide["width"], slide["height"]
    centres = rng.uniform([0.1 * w, 0.1 * h], [0.9 * w, 0.9 * h], size=(40, 2))
    pick = centres[rng.integers(0, len(centres), n)]
    pts = pick + rng.normal(0, min(w, h) / 12, size=(n, 2))
    pts = np.clip(pts, [1, 1], [w - 2, h - 2])
    return [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [round(x, 1), round(y, 1)]},
            "properties": {"class": "mitosis"},
        }
        for x, y in pts.tolist()
    ]


FRAME_PROBE = """
() => {
  window.__frames = [];
  let last = performance.now();
  window.__probe = true;
  const tick = (t) => {
    window.__frames.push(t - last);
    last = t;
    if (window.__probe) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}
"""


def scripted_pan(page: Any, name: str, steps: int = 40) -> dict[str, list[float]]:
    """Pan around a square with the keyboard (w a s d), recording every frame's duration and the
    overlay's own drawing time per frame (ms), between performance marks ``name-start/-end``."""
    page.evaluate("() => { window.slideannotations.overlays[0].drawTimes.length = 0; }")
    page.evaluate(FRAME_PROBE)
    page.evaluate("n => performance.mark(n + '-start')", name)
    for i in range(steps):
        page.keyboard.press(["d", "s", "a", "w"][(i // (steps // 4)) % 4])
        page.wait_for_timeout(50)
    page.wait_for_timeout(500)
    page.evaluate(
        "n => { window.__probe = false; performance.mark(n + '-end');"
        " performance.measure(n, n + '-start', n + '-end'); }",
        name,
    )
    frames: list[float] = page.evaluate("() => window.__frames.slice(1)")
    draws: list[float] = page.evaluate("() => window.slideannotations.overlays[0].drawTimes")
    return {"frames": frames, "draws": draws}


def summary(times: list[float]) -> str:
    if len(times) < 2:
        return f"{len(times)} samples"
    q = statistics.quantiles(times, n=20)
    return (
        f"{len(times)} samples, p50 {statistics.median(times):.1f} ms,"
        f" p95 {q[18]:.1f} ms, max {max(times):.1f} ms"
    )


def go_to(page: Any, x: float, y: float, magnification: float) -> None:
    """Centre the first pane on level-0 (x, y) at a magnification, at once."""
    page.evaluate(
        "([x, y, m]) => { const p = window.slideviewer.panes[0];"
        " p.setL0View(x, y, m / p.baseMagnification); }",
        [x, y, magnification],
    )
    page.wait_for_timeout(1200)  # the debounced bbox request and its answer


@pytest.mark.slow
@pytest.mark.timeout(900)  # storing 200,000 features takes minutes on a busy machine
def test_200000_detections_pan_as_a_heat_map_then_as_bounded_shapes(
    page: Any, server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    slide = slide_with_mpp(server, largest=True)
    points = detections(slide, 200_000)
    for i in range(0, len(points), 100_000):
        status, _, body = call(
            server,
            "POST",
            f"/api/slides/{slide['id']}/annotations",
            {"type": "FeatureCollection", "features": points[i : i + 100_000]},
            timeout=600,  # 100,000 features validated, measured and stored in one request
        )
        assert status in (200, 201), body

    annotation_urls: list[SplitResult] = []
    page.on(
        "request",
        lambda r: annotation_urls.append(urlsplit(r.url)) if "/annotations" in r.url else None,
    )
    started = time.monotonic()
    open_viewer(page, [slide["id"]])
    state = "() => window.slideannotations.state()[0]"
    # the whole slide: too many to draw one by one, so the heat map the server counted
    wait_pane(page, "annotationMode", "density")
    page.wait_for_function(f"() => ({state})().heat", timeout=120_000)
    heat_seconds = time.monotonic() - started
    low = page.evaluate(state)
    assert low["drawn"] == 0  # no detection drawn as a shape
    assert low["counted"] >= len(points)
    # the heat map came from density requests alone: the layer's whole-slide grid, then the view's
    paths = [u.path for u in annotation_urls]
    assert paths.count(f"/api/slides/{slide['id']}/annotations/density") >= 2
    assert f"/api/slides/{slide['id']}/annotations" not in paths
    assert low["stats"]["featuresFetched"] == 0
    low_pan = scripted_pan(page, "annotations-pan-heatmap")
    page.wait_for_timeout(800)
    # the pan may pass views small enough for shapes: those reads stay bounded, never the slide
    panned = page.evaluate(state)["stats"]
    assert panned["featuresFetched"] <= panned["viewRequests"] * FEATURE_BUDGET
    assert panned["featuresFetched"] < len(points) / 4
    density_requests = [u.path for u in annotation_urls].count(
        f"/api/slides/{slide['id']}/annotations/density"
    )

    # 40x on a detection: shapes again, only those near the view
    x, y = points[0]["geometry"]["coordinates"]
    go_to(page, x, y, 40)
    wait_pane(page, "annotationMode", "features")
    scripted_pan(page, "annotations-pan-warm-up")  # tiles of the square in the cache first
    fetched_before = page.evaluate(state)["stats"]["featuresFetched"]
    requests_before = page.evaluate(state)["stats"]["viewRequests"]
    high_pan = scripted_pan(page, "annotations-pan-shapes")
    page.wait_for_timeout(800)
    high = page.evaluate(state)
    assert high["mode"] == "features"
    assert 0 < high["drawn"] <= FEATURE_BUDGET
    during_pan = high["stats"]["featuresFetched"] - fetched_before
    # A request the warm-up started may still be answering when the counts are read: its
    # features arrive during the pan, counted against no request of the pan (one in flight).
    in_flight = 1
    assert (
        during_pan <= (high["stats"]["viewRequests"] - requests_before + in_flight) * FEATURE_BUDGET
    )
    assert during_pan < len(points) / 4

    # the same pan with every layer hidden (same tiles, cached): the page without the shapes
    page.get_by_role("button", name="Layers").click()
    for box in page.get_by_role("checkbox", name=re.compile("^Show layer")).all():
        box.uncheck()
    go_to(page, x, y, 40)
    wait_pane(page, "annotationShapes", "0")
    bare_pan = scripted_pan(page, "annotations-pan-hidden")

    with capsys.disabled():
        print(f"\n200,000 detections: heat map shown {heat_seconds:.1f} s after opening the page")
        print("200,000 detections, frame times (requestAnimationFrame deltas) during a pan:")
        print(f"  heat map, whole slide:     {summary(low_pan['frames'])}")
        print(f"  shapes at 40x:             {summary(high_pan['frames'])}")
        print(f"  layers hidden at 40x:      {summary(bare_pan['frames'])}")
        print("overlay drawing per frame (performance.now() around the canvas redraw):")
        print(f"  heat map:                  {summary(low_pan['draws'])}")
        print(f"  shapes at 40x:             {summary(high_pan['draws'])}")
        stats = high["stats"]
        print(
            f"features fetched for views: {stats['featuresFetched']:,} in"
            f" {stats['viewRequests']} bbox requests ({during_pan:,} during the 40x pan);"
            f" density requests: {stats['densityRequests']} ({density_requests} at low zoom);"
            f" drawn in the last frame at 40x: {high['drawn']:,}"
        )
