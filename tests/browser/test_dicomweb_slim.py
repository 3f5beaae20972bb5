"""Slim's viewer library, ``dicom-microscopy-viewer``, shows our slides over DICOMweb.

The page (``tests/browser/dmv``, built from npm) does what Slim does: a QIDO-RS series search,
WADO-RS series metadata, then a ``VolumeImageViewer`` that fetches the frames it needs with
``dicomweb-client`` and decodes them in its WebAssembly worker. DICOMweb is not open to other
origins (its metadata holds PHI), so the test serves the page on the server's own origin by
answering ``/__dmv__/`` requests from the built folder in the browser (Playwright routing); every
DICOMweb request goes to the real server.
"""

from __future__ import annotations

import io
import mimetypes
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.browser.dmv_page import build_page
from tests.live_server import live_server
from tests.realworld import copy_slides
from tests.test_dicomweb_api import parts

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SVS = "CMU-1-Small-Region.svs"
"""A real Aperio slide (JPEG tiles, 2220 x 2967, one level) from libvips' test images: a virtual
DICOM series of ours, UIDs derived from the slide."""
DICOM_SAMPLE = "S24-05678_B2_PAS"
"""The generated DICOM WSI sample (three pyramid levels, label, overview): its own UIDs."""
ACCESSION = {"aperio-svs": None, "dicom-wsi": "S24-05678"}
"""Which series each case shows, by its AccessionNumber (the SVS has none)."""
PAGE_PREFIX = "/__dmv__/"
"""Where the page is answered from the built folder; the server has no route there."""
FRAMES_TIMEOUT_MS = 60_000
POLL_MS = 500
MIN_SLIDE_FRACTION = 0.2
"""The share of the canvas that must be stained tissue (both slides show mostly tissue)."""
STAIN_CHROMA = 25
"""H&E and PAS tissue differs by more than this between its colour channels; glass does not."""
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
"""Both slides store JPEG tiles: the viewer asks for any syntax and gets them as stored."""


@pytest.fixture(scope="module")
def dmv_dist() -> Path:
    return build_page()


@pytest.fixture(scope="module")
def slides_server(
    samples_dir: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A live server holding the Aperio SVS and the DICOM sample."""
    root = copy_slides({f"libvips/{SVS}": SVS}, tmp_path_factory.mktemp("dmv-slides"))
    shutil.copytree(samples_dir[DICOM_SAMPLE], root / DICOM_SAMPLE)
    with live_server([root]) as base:
        yield base


def series_uid(base: str, accession: str | None) -> str:
    """The SeriesInstanceUID of the one SM series with this AccessionNumber (QIDO-RS)."""
    found = httpx.get(f"{base}/dicomweb/series", params={"Modality": "SM"}, timeout=30).json()
    (uid,) = [
        s["0020000E"]["Value"][0]
        for s in found
        if s.get("00080050", {}).get("Value", [None])[0] == accession
    ]
    return str(uid)


def serve_page_from(context: Any, base: str, dist: Path) -> None:
    """Answer ``base + /__dmv__/<file>`` from ``dist`` inside the browser (same origin)."""

    def fulfill(route: Any) -> None:
        name = route.request.url.split("?")[0][len(base + PAGE_PREFIX) :] or "index.html"
        path = (dist / name).resolve()
        if dist.resolve() not in path.parents or not path.is_file():
            route.fulfill(status=404, body="not in the test page")
            return
        kind = "application/wasm" if path.suffix == ".wasm" else mimetypes.guess_type(path)[0]
        route.fulfill(status=200, body=path.read_bytes(), content_type=kind or "text/plain")

    context.route(base + PAGE_PREFIX + "**", fulfill)


def stained_fraction(png: bytes) -> float:
    """The share of opaque pixels with the colour of stained tissue (glass, white, black and
    transparent pixels are grey or clear, and do not count)."""
    with Image.open(io.BytesIO(png)) as img:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.int16)
    rgb, alpha = rgba[..., :3], rgba[..., 3]
    chroma = rgb.max(axis=-1) - rgb.min(axis=-1)
    return float(((alpha > 0) & (chroma > STAIN_CHROMA)).mean())


def assert_frames_came_compressed(frames: list[tuple[int, str, str, int]]) -> None:
    """The viewer asked for any transfer syntax and received the stored JPEG frames: each
    answer it got is as long as the same request's answer here, whose parts are JPEG, labelled
    with their syntax (uncompressed frames would be over ten times longer)."""
    for _, url, accept, length in frames[:3]:
        assert "transfer-syntax=*" in accept.replace('"', ""), accept
        again = httpx.get(url, headers={"Accept": accept}, timeout=30)
        assert length == len(again.content)
        for label, body in parts(again):
            assert label.replace('"', "") == (
                f"application/octet-stream; transfer-syntax={JPEG_BASELINE}"
            )
            assert body[:3] == b"\xff\xd8\xff"


@pytest.mark.parametrize("case", sorted(ACCESSION))
def test_dicom_microscopy_viewer_shows_a_slide_over_dicomweb(
    chromium: Any, slides_server: str, dmv_dist: Path, tmp_path: Path, case: str
) -> None:
    base = slides_server
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(FRAMES_TIMEOUT_MS)
    serve_page_from(context, base, dmv_dist)
    page = context.new_page()
    errors: list[str] = []
    frames: list[tuple[int, str, str, int]] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))

    def on_response(resp: Any) -> None:
        if "/dicomweb/" in resp.url and "/frames/" in resp.url:
            accept = resp.request.headers.get("accept", "")
            length = int(resp.headers.get("content-length", "-1"))
            frames.append((resp.status, resp.url, accept, length))

    context.on("response", on_response)
    try:
        page.goto(f"{base}{PAGE_PREFIX}index.html?series={series_uid(base, ACCESSION[case])}")
        page.wait_for_function(
            "() => window.dmvState && ['rendered', 'failed'].includes(window.dmvState.stage)"
        )
        state = page.evaluate("window.dmvState")
        assert state["stage"] == "rendered", f"{state}\nconsole errors: {errors}"
        assert state["instances"] >= 1

        canvas = page.locator("#viewport canvas").first
        fraction = 0.0
        for _ in range(FRAMES_TIMEOUT_MS // POLL_MS):
            if frames:
                fraction = stained_fraction(canvas.screenshot())
                if fraction > MIN_SLIDE_FRACTION:
                    break
            page.wait_for_timeout(POLL_MS)
        page.screenshot(path=str(tmp_path / "dicom-microscopy-viewer.png"))
        assert frames, f"the viewer requested no frames; console errors: {errors}"
        assert all(status == 200 for status, *_ in frames), frames
        assert fraction > MIN_SLIDE_FRACTION, f"canvas is {fraction:.0%} slide; console: {errors}"
        assert not errors
        assert_frames_came_compressed(frames)
    finally:
        context.close()
