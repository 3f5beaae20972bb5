"""Report figures draw the annotations in view: the right layers, in their colours, bounded.

Each report here is rendered for real (the draft's PDF, through the app) and its figures are read
back out of the PDF with pypdf: reportlab stores them losslessly, so a figure's pixels can be
compared with the slide region read straight from the sample SVS file.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pypdf import PdfReader

from slideserver.imaging.regions import read_scaled_region
from slideserver.models import SlideSource
from slideserver.readers.registry import default_registry
from slideserver.reports.figure_annotations import MAX_FIGURE_ANNOTATIONS, draw_annotations
from slideserver.reports.model import Region, parse_figure
from slideserver.reports.pdf import figure_pixels
from tests.helpers import SVS, assert_error
from tests.report_app import ReportApp, report_app

RED = (255, 0, 0)
BLUE = (0, 0, 255)
REGION = {"x": 1000, "y": 800, "width": 3000, "height": 2100}
"""A region printed smaller than it is (figures at 300 dpi are at most about 1,860 px wide)."""


@pytest.fixture(scope="module")
def app(samples_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReportApp]:
    with report_app(samples_root, tmp_path_factory.mktemp("figure-annotations")) as made:
        yield made


def _layer(app: ReportApp, layer_id: str, caller: str = "pathologist") -> None:
    answer = app.call(
        caller,
        "POST",
        f"/api/slides/{app.svs}/annotation-layers",
        json={"id": layer_id, "name": layer_id, "kind": "case"},
    )
    assert answer.status_code in (200, 201), answer.text


def _polygon(rings: list[list[tuple[float, float]]], colour: str, layer: str | None) -> Any:
    properties: dict[str, Any] = {"class": "tumour", "colour": colour}
    if layer is not None:
        properties["layer"] = layer
    coordinates = [[[x, y] for x, y in ring] for ring in rings]
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": coordinates},
        "properties": properties,
    }


def _square(x0: float, y0: float, side: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x0 + side, y0), (x0 + side, y0 + side), (x0, y0 + side), (x0, y0)]


def _post(app: ReportApp, features: list[Any], caller: str = "pathologist") -> None:
    answer = app.call(
        caller,
        "POST",
        f"/api/slides/{app.svs}/annotations",
        json={"type": "FeatureCollection", "features": features},
    )
    assert answer.status_code == 201, answer.text


def _figures(app: ReportApp, figures: list[dict[str, Any]]) -> tuple[list[np.ndarray], str]:
    """The figures of a draft with ``figures``, as pixels read out of its PDF, and its text."""
    report = app.draft({"diagnosis": "Invasive carcinoma", "figures": figures})
    answer = app.call("pathologist", "GET", f"/api/reports/{report['id']}/pdf")
    assert answer.status_code == 200, answer.text
    pdf = PdfReader(io.BytesIO(answer.content))
    images = [image.image for page in pdf.pages for image in page.images]
    text = " ".join(" ".join(page.extract_text().split()) for page in pdf.pages)
    assert len(images) == len(figures)
    return [np.asarray(image.convert("RGB")) for image in images if image is not None], text


def _at(region: dict[str, int], size: tuple[int, int], x: float, y: float) -> tuple[int, int]:
    """The figure pixel (column, row) showing level-0 point (x, y)."""
    sx, sy = size[0] / region["width"], size[1] / region["height"]
    return round((x - region["x"]) * sx), round((y - region["y"]) * sy)


def _is_red(pixel: np.ndarray) -> bool:
    return bool(pixel[0] >= 250 and pixel[1] <= 5 and pixel[2] <= 5)


def _figure_of(app: ReportApp, layers: list[str] | None, region: dict[str, int] = REGION) -> Any:
    figure: dict[str, Any] = {"slide_id": app.svs, "region": region}
    if layers is not None:
        figure["layers"] = layers
    return figure


def _region_pixels(samples_dir: dict[str, Path], region: dict[str, int]) -> np.ndarray:
    """The region as the report renders it without annotations, read from the file itself."""
    width, height = figure_pixels(region["width"], region["height"])
    width, height = min(width, region["width"]), min(height, region["height"])
    with default_registry().open(SlideSource(samples_dir[SVS])) as reader:
        image = read_scaled_region(
            reader, region["x"], region["y"], region["width"], region["height"], width, height
        )
    return np.asarray(image.convert("RGB"))


def test_a_red_polygon_is_drawn_along_its_edges_and_nowhere_else(
    app: ReportApp, samples_dir: dict[str, Path]
) -> None:
    _layer(app, "case-red")
    outer = _square(2000, 1500, 1000)
    hole = _square(2300, 1800, 400)
    _post(app, [_polygon([outer, hole], "#ff0000", "case-red")])
    (drawn,), _ = _figures(app, [_figure_of(app, None)])
    plain = _region_pixels(samples_dir, REGION)
    assert drawn.shape == plain.shape and drawn.shape[1] < REGION["width"]  # scaled down
    size = (drawn.shape[1], drawn.shape[0])
    # Red on every edge of the outline and of the hole, at the figure's scale.
    for x, y in [(2500, 1500), (3000, 2000), (2500, 2500), (2000, 2000), (2300, 2000)]:
        column, row = _at(REGION, size, x, y)
        assert _is_red(drawn[row, column]), (x, y, drawn[row, column])
    # Nothing else changed: not the inside, not the hole, not outside.
    changed = np.any(drawn != plain, axis=2)
    rows, columns = np.nonzero(changed)
    assert len(rows) > 0
    edges_x = [_at(REGION, size, x, 1500)[0] for x in (2000, 3000, 2300, 2700)]
    edges_y = [_at(REGION, size, 2000, y)[1] for y in (1500, 2500, 1800, 2200)]
    near_edge = np.min(np.abs(columns[:, None] - np.array(edges_x)), axis=1) <= 3
    near_edge |= np.min(np.abs(rows[:, None] - np.array(edges_y)), axis=1) <= 3
    assert near_edge.all()
    for x, y in [(2150, 2000), (2500, 2000), (1500, 1200), (3500, 2800)]:
        column, row = _at(REGION, size, x, y)
        assert (drawn[row, column] == plain[row, column]).all(), (x, y)


def test_a_figure_draws_only_the_layers_it_names(app: ReportApp) -> None:
    _layer(app, "case-shown")
    _layer(app, "case-hidden")
    region = {"x": 1000, "y": 4000, "width": 600, "height": 400}
    _post(
        app,
        [
            _polygon([_square(1100, 4100, 100)], "#ff0000", "case-shown"),
            _polygon([_square(1400, 4100, 100)], "#0000ff", "case-hidden"),
        ],
    )
    (drawn, plain), _ = _figures(
        app, [_figure_of(app, ["case-shown"], region), _figure_of(app, [], region)]
    )
    size = (drawn.shape[1], drawn.shape[0])
    column, row = _at(region, size, 1100, 4150)
    assert _is_red(drawn[row, column])
    column, row = _at(region, size, 1400, 4150)
    around = drawn[row - 4 : row + 5, column - 4 : column + 5]
    assert (around == plain[row - 4 : row + 5, column - 4 : column + 5]).all()


def test_another_pathologists_own_layer_is_neither_drawn_nor_accepted(app: ReportApp) -> None:
    region = {"x": 5000, "y": 800, "width": 600, "height": 400}
    _post(app, [_polygon([_square(5100, 900, 200)], "#ff0000", None)], caller="dr-b")
    layers = app.call("dr-b", "GET", f"/api/slides/{app.svs}/annotation-layers").json()["layers"]
    theirs = next(la["id"] for la in layers if la["kind"] == "personal")
    (drawn, plain), _ = _figures(app, [_figure_of(app, None, region), _figure_of(app, [], region)])
    assert (drawn == plain).all()
    answer = app.call(
        "pathologist",
        "POST",
        "/api/cases/S24-01234/reports",
        json={"figures": [_figure_of(app, [theirs], region)]},
    )
    assert_error(answer, 400, "invalid_report")


def test_the_authors_own_layer_is_drawn_by_default(app: ReportApp) -> None:
    region = {"x": 5000, "y": 2500, "width": 600, "height": 400}
    _post(app, [_polygon([_square(5100, 2600, 200)], "#ff0000", None)])
    (drawn,), _ = _figures(app, [_figure_of(app, None, region)])
    size = (drawn.shape[1], drawn.shape[0])
    column, row = _at(region, size, 5100, 2700)
    assert _is_red(drawn[row, column])


def test_an_amendment_by_another_pathologist_still_draws_the_authors_layer(
    app: ReportApp,
) -> None:
    region = {"x": 3000, "y": 5000, "width": 600, "height": 400}
    _post(app, [_polygon([_square(3100, 5100, 200)], "#ff0000", None)])
    signed = app.signed({"diagnosis": "Carcinoma", "figures": [_figure_of(app, None, region)]})
    amend = app.call(
        "dr-b",
        "POST",
        f"/api/reports/{signed['id']}/amend",
        json={"status": "amended", "reason": "grade added", "diagnosis": "Carcinoma, grade 2"},
    )
    assert amend.status_code == 201, amend.text
    answer = app.call("dr-b", "GET", f"/api/reports/{signed['id']}/pdf?version=2")
    pages = PdfReader(io.BytesIO(answer.content)).pages
    [image] = [image.image for page in pages for image in page.images]
    assert image is not None
    drawn = np.asarray(image.convert("RGB"))
    column, row = _at(region, (drawn.shape[1], drawn.shape[0]), 3100, 5200)
    assert _is_red(drawn[row, column])


def test_a_figure_without_annotations_is_the_slide_region_itself(
    app: ReportApp, samples_dir: dict[str, Path]
) -> None:
    region = {"x": 5400, "y": 4200, "width": 600, "height": 400}
    (figure,), _ = _figures(app, [_figure_of(app, None, region)])
    assert (figure == _region_pixels(samples_dir, region)).all()


def test_a_dense_region_draws_nothing_and_the_legend_says_so(app: ReportApp) -> None:
    _layer(app, "case-dense")
    region = {"x": 200, "y": 200, "width": 600, "height": 400}
    points = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [210 + i % 100 * 5, 210 + i // 100 * 7]},
            "properties": {"class": "mitosis", "colour": "#ff0000", "layer": "case-dense"},
        }
        for i in range(MAX_FIGURE_ANNOTATIONS + 1)
    ]
    _post(app, points)
    (drawn, plain), text = _figures(
        app, [_figure_of(app, ["case-dense"], region), _figure_of(app, [], region)]
    )
    assert (drawn == plain).all()
    assert "Annotations not drawn: more than 5,000" in text


def test_every_kind_of_shape_is_stroked_in_its_colour() -> None:
    from slideserver.annotations.model import Annotation

    image = Image.new("RGB", (200, 100), (255, 255, 255))
    region = Region(0, 0, 400, 200)  # drawn at half size

    def mark(geometry: dict[str, Any], colour: str) -> Annotation:
        return Annotation("a", "s", "l", "polygon", geometry, (0, 0, 0, 0), colour=colour)

    drawn = draw_annotations(
        image,
        region,
        [
            mark({"type": "LineString", "coordinates": [[20, 20], [180, 20]]}, "#0000ff"),
            mark({"type": "Point", "coordinates": [300, 100]}, "#ff0000"),
            mark({"type": "MultiPoint", "coordinates": [[300, 160]]}, "#ff0000"),
            mark(
                {
                    "type": "MultiPolygon",
                    "coordinates": [[[[220, 20], [380, 20], [380, 60], [220, 60], [220, 20]]]],
                },
                "#ff0000",
            ),
        ],
    )
    pixels = np.asarray(drawn)
    assert tuple(pixels[10, 50]) == BLUE  # the line, at half scale
    assert tuple(pixels[50, 150]) == RED and tuple(pixels[80, 150]) == RED  # the points
    assert tuple(pixels[10, 150]) == RED and tuple(pixels[20, 110]) == RED  # polygon edges
    assert tuple(pixels[20, 150]) == (255, 255, 255)  # its inside is not filled
    assert tuple(pixels[60, 20]) == (255, 255, 255)
    assert np.asarray(image).min() == 255  # the figure handed in is not changed


def test_figure_layers_are_kept_and_checked() -> None:
    base = {"slide_id": "s", "region": {"x": 0, "y": 0, "width": 9, "height": 9}}
    assert parse_figure(base).layers is None and "layers" not in parse_figure(base).to_json()
    named = parse_figure({**base, "layers": ["case", "case", "personal-1"]})
    assert named.layers == ("case", "personal-1")
    assert parse_figure(named.to_json()) == named
    assert parse_figure({**base, "layers": []}).layers == ()
    for bad in ("case", [1], ["bad id"], ["x"] * 51):
        with pytest.raises(Exception, match="layers"):
            parse_figure({**base, "layers": bad})
