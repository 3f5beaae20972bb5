"""Measurements in micrometres from level-0 pixels and the slide's MPP (x and y may differ).

Lengths and areas are computed on coordinates scaled by ``mpp_x`` and ``mpp_y`` (shoelace for
areas, segment sums for lengths; plain floats, as most features have a few vertices), so a slide
with non-square pixels measures right. An ellipse is measured as the ellipse its bounding box
holds (area pi*a*b, Ramanujan's perimeter), not as the polygon that approximates it. Without MPP
nothing is measured and :data:`NO_MPP` says why.
"""

from __future__ import annotations

import math
from itertools import pairwise
from math import hypot
from typing import Any

from slideserver.annotations.model import ELLIPSE, LINE, POLYGON, RECTANGLE, SlideFrame

NO_MPP = "the slide has no microns-per-pixel (MPP) calibration; nothing can be measured in µm"
UM2_PER_MM2 = 1_000_000.0


def _scaled(positions: Any, frame: SlideFrame) -> list[tuple[float, float]]:
    mx, my = float(frame.mpp_x or 0), float(frame.mpp_y or 0)
    return [(x * mx, y * my) for x, y in positions]


def _path_length(points: list[tuple[float, float]]) -> float:
    return sum(hypot(b[0] - a[0], b[1] - a[1]) for a, b in pairwise(points))


def _ring_area(ring: list[tuple[float, float]]) -> float:
    twice = sum(a[0] * b[1] - b[0] * a[1] for a, b in pairwise(ring))
    return abs(twice) / 2.0


def _polygons(geometry: dict[str, Any]) -> list[Any]:
    return [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]


def measure(
    kind: str,
    geometry: dict[str, Any],
    bbox: tuple[float, float, float, float],
    frame: SlideFrame,
) -> dict[str, float] | None:
    """Return the measurements that apply to ``kind``; ``None`` when the slide has no MPP.

    Points have none (``{}``); lines a ``length_um``; areas ``area_um2``, ``area_mm2`` and
    ``perimeter_um`` (holes take from the area and add to the perimeter).
    """
    if not frame.has_mpp:
        return None
    if kind == LINE:
        return {"length_um": _path_length(_scaled(geometry["coordinates"], frame))}
    if kind == ELLIPSE:
        a = (bbox[2] - bbox[0]) / 2 * float(frame.mpp_x or 0)
        b = (bbox[3] - bbox[1]) / 2 * float(frame.mpp_y or 0)
        area = math.pi * a * b
        h = ((a - b) / (a + b)) ** 2 if a + b else 0.0
        perimeter = math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))
        return _area(area, perimeter)
    if kind in (POLYGON, RECTANGLE):
        area = perimeter = 0.0
        for polygon in _polygons(geometry):
            rings = [_scaled(r, frame) for r in polygon]
            area += _ring_area(rings[0]) - sum(_ring_area(r) for r in rings[1:])
            perimeter += sum(_path_length(r) for r in rings)
        return _area(area, perimeter)
    return {}


def _area(area_um2: float, perimeter_um: float) -> dict[str, float]:
    return {
        "area_um2": area_um2,
        "area_mm2": area_um2 / UM2_PER_MM2,
        "perimeter_um": perimeter_um,
    }
