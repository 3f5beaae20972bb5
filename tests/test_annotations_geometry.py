"""Annotation geometries: every kind accepted, measured against hand-computed values, and every
kind of bad input refused with a 422-class error naming the feature (never a crash).

The frame is 2048 x 1536 pixels with MPP 0.5 across and 0.25 down: a pixel is 0.5 x 0.25 µm,
so a measurement that mixes up x and y, or assumes square pixels, comes out wrong.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from slideserver.annotations.measure import measure
from slideserver.annotations.model import SlideFrame
from slideserver.annotations.validate import (
    MAX_VERTICES,
    InvalidAnnotation,
    check_feature,
    check_features,
    known_classes,
)

FRAME = SlideFrame(2048, 1536, 0.5, 0.25)
NO_MPP = SlideFrame(2048, 1536)
CLASSES = known_classes("")


def feature(geometry: dict[str, Any], **props: Any) -> dict[str, Any]:
    return {"type": "Feature", "geometry": geometry, "properties": props}


def square(x: float, y: float, size: float) -> list[list[float]]:
    return [[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]


def measured(f: dict[str, Any], frame: SlideFrame = FRAME) -> dict[str, float] | None:
    item = check_feature(f, frame, CLASSES)
    return measure(item.kind, item.geometry, item.bbox, frame)


def test_a_point_is_accepted_and_has_no_measurements() -> None:
    f = feature({"type": "Point", "coordinates": [10, 20]}, **{"class": "mitosis"})
    item = check_feature(f, FRAME, CLASSES)
    assert (item.kind, item.bbox, item.cls) == ("point", (10, 20, 10, 20), "mitosis")
    assert measured(f) == {}


def test_a_multipoint_is_accepted_with_the_bbox_of_its_points() -> None:
    f = feature({"type": "MultiPoint", "coordinates": [[10, 20], [30, 5], [25, 40]]})
    item = check_feature(f, FRAME, CLASSES)
    assert (item.kind, item.bbox) == ("multipoint", (10, 5, 30, 40))


def test_a_line_is_measured_in_micrometres_with_different_x_and_y_spacing() -> None:
    # 30 px across = 15 µm, 40 px down = 10 µm: sqrt(15² + 10²); then 100 px down = 25 µm.
    f = feature({"type": "LineString", "coordinates": [[0, 0], [30, 40], [30, 140]]})
    assert measured(f) == pytest.approx({"length_um": math.hypot(15, 10) + 25})


def test_a_polygon_with_a_hole_is_measured_without_the_hole() -> None:
    # 100 x 100 px = 50 x 25 µm (1250 µm², perimeter 150 µm); hole 20 x 20 px = 10 x 5 µm.
    f = feature({"type": "Polygon", "coordinates": [square(0, 0, 100), square(40, 40, 20)]})
    assert measured(f) == pytest.approx(
        {"area_um2": 1250 - 50, "area_mm2": 1200e-6, "perimeter_um": 150 + 30}
    )


def test_a_multipolygon_adds_up_its_pieces() -> None:
    f = feature(
        {"type": "MultiPolygon", "coordinates": [[square(0, 0, 100)], [square(200, 0, 100)]]}
    )
    assert measured(f) == pytest.approx({"area_um2": 2500, "area_mm2": 0.0025, "perimeter_um": 300})


def test_a_rectangle_is_a_polygon_with_a_shape() -> None:
    f = feature({"type": "Polygon", "coordinates": [square(10, 10, 200)]}, shape="rectangle")
    item = check_feature(f, FRAME, CLASSES)
    assert item.kind == "rectangle"
    assert measured(f) == pytest.approx(
        {"area_um2": 100 * 50, "area_mm2": 0.005, "perimeter_um": 300}
    )


def test_an_ellipse_is_measured_as_the_ellipse_its_bounds_hold() -> None:
    # Bounds 200 x 400 px = 100 x 100 µm: a circle of radius 50 µm.
    ring = [
        [100 + 100 * math.cos(t), 300 + 200 * math.sin(t)]
        for t in (2 * math.pi * i / 64 for i in range(64))
    ]
    ring.append(ring[0])
    f = feature({"type": "Polygon", "coordinates": [ring]}, shape="ellipse")
    assert check_feature(f, FRAME, CLASSES).kind == "ellipse"
    result = measured(f)
    assert result is not None
    assert result["area_um2"] == pytest.approx(math.pi * 50 * 50)
    assert result["perimeter_um"] == pytest.approx(2 * math.pi * 50)


def test_nothing_is_measured_on_a_slide_without_mpp() -> None:
    f = feature({"type": "Polygon", "coordinates": [square(0, 0, 100)]})
    assert measured(f, NO_MPP) is None


def test_classes_are_matched_without_case_and_stored_in_the_known_spelling() -> None:
    f = feature({"type": "Point", "coordinates": [1, 1]}, **{"class": "TUMOUR"})
    assert check_feature(f, FRAME, CLASSES).cls == "tumour"


def test_a_lab_can_name_its_own_classes() -> None:
    f = feature({"type": "Point", "coordinates": [1, 1]}, **{"class": "Lymphovascular invasion"})
    own = known_classes("tumour, Lymphovascular invasion")
    assert check_feature(f, FRAME, own).cls == "Lymphovascular invasion"
    with pytest.raises(InvalidAnnotation, match="unknown class"):
        check_feature(f, FRAME, CLASSES)


BAD: dict[str, tuple[dict[str, Any], str]] = {
    "self-intersecting polygon": (
        feature(
            {"type": "Polygon", "coordinates": [[[0, 0], [100, 100], [100, 0], [0, 100], [0, 0]]]}
        ),
        "Self-intersection",
    ),
    "ring not closed": (
        feature({"type": "Polygon", "coordinates": [[[0, 0], [100, 0], [100, 100], [0, 100]]]}),
        "not closed",
    ),
    "NaN coordinate": (
        feature({"type": "Point", "coordinates": [float("nan"), 3]}),
        "finite",
    ),
    "infinite coordinate": (
        feature({"type": "LineString", "coordinates": [[0, 0], [float("inf"), 3]]}),
        "finite",
    ),
    "an integer too large for a float": (
        feature({"type": "Point", "coordinates": [10**400, 3]}),
        "finite",
    ),
    "outside the slide": (
        feature({"type": "Point", "coordinates": [2049, 3]}),
        "inside the slide",
    ),
    "negative coordinate": (
        feature({"type": "Polygon", "coordinates": [square(-1, 0, 10)]}),
        "inside the slide",
    ),
    "unknown class": (
        feature({"type": "Point", "coordinates": [1, 1]}, **{"class": "unicorn"}),
        "unknown class",
    ),
    "string coordinates": (
        feature({"type": "Point", "coordinates": ["1", "2"]}),
        "numbers",
    ),
    "boolean coordinates": (
        feature({"type": "Point", "coordinates": [True, 2]}),
        "numbers",
    ),
    "unsupported geometry": (
        feature({"type": "GeometryCollection", "geometries": []}),
        "geometry type",
    ),
    "no geometry": ({"type": "Feature", "properties": {}}, "geometry"),
    "not a feature": ({"type": "Point", "coordinates": [1, 1]}, "Feature"),
    "a line of one position": (
        feature({"type": "LineString", "coordinates": [[1, 1], [1, 1]]}),
        "two distinct",
    ),
    "a polygon without area": (
        feature({"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [20, 0], [0, 0]]]}),
        "invalid polygon",
    ),
    "a rectangle that is not one": (
        feature(
            {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [12, 9], [0, 10], [0, 0]]]},
            shape="rectangle",
        ),
        "rectangle",
    ),
    "too many vertices": (
        feature({"type": "MultiPoint", "coordinates": [[1, 1]] * (MAX_VERTICES + 1)}),
        "more than",
    ),
    "bad colour": (
        feature({"type": "Point", "coordinates": [1, 1]}, colour="red"),
        "#rrggbb",
    ),
    "bad id": (
        {"type": "Feature", "id": "a b/c", "geometry": {"type": "Point", "coordinates": [1, 1]}},
        "id",
    ),
    "a note too long": (
        feature({"type": "Point", "coordinates": [1, 1]}, note="x" * 10_001),
        "longer",
    ),
}


@pytest.mark.parametrize("case", BAD, ids=str)
def test_bad_input_is_refused_with_what_is_wrong(case: str) -> None:
    bad, message = BAD[case]
    with pytest.raises(InvalidAnnotation, match=message) as refused:
        check_features([feature({"type": "Point", "coordinates": [1, 1]}), bad], FRAME, CLASSES)
    assert refused.value.detail.startswith("feature 1")


def test_two_features_with_one_id_are_refused() -> None:
    f = {"type": "Feature", "id": "a1", "geometry": {"type": "Point", "coordinates": [1, 1]}}
    with pytest.raises(InvalidAnnotation, match="same id"):
        check_features([f, f], FRAME, CLASSES)
