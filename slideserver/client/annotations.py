"""Annotation polygons as labels for patches: which class's area a patch's centre falls in.

Reads GeoJSON features as ``GET /api/slides/{id}/annotations`` answers them (level-0 pixel
coordinates, the class in ``properties.class``, or QuPath's ``properties.classification.name``).
Only areas count: Polygon and MultiPolygon (rectangles and ellipses are sent as polygons).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Ring = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ClassArea:
    """One polygon of one class: its exterior ring and its holes."""

    name: str
    exterior: Ring
    holes: tuple[Ring, ...] = ()


def feature_class(feature: dict[str, Any]) -> str | None:
    """The class a feature carries (slideserver's ``class`` or QuPath's classification)."""
    props = feature.get("properties") or {}
    name = props.get("class")
    if not name and isinstance(props.get("classification"), dict):
        name = props["classification"].get("name")
    return str(name) if name else None


def class_areas(features: Iterable[dict[str, Any]], classes: Sequence[str]) -> list[ClassArea]:
    """The polygons of ``features`` whose class is one of ``classes``."""
    wanted = set(classes)
    areas: list[ClassArea] = []
    for feature in features:
        name = feature_class(feature)
        geometry = feature.get("geometry") or {}
        if name not in wanted or not isinstance(geometry, dict):
            continue
        kind, coords = geometry.get("type"), geometry.get("coordinates") or []
        polygons = [coords] if kind == "Polygon" else coords if kind == "MultiPolygon" else []
        for rings in polygons:
            if not rings:
                continue
            arrays = [np.asarray(ring, np.float64)[:, :2] for ring in rings if len(ring) >= 3]
            if arrays:
                areas.append(ClassArea(str(name), arrays[0], tuple(arrays[1:])))
    return areas


def inside_ring(xs: npt.NDArray[np.float64], ys: npt.NDArray[np.float64], ring: Ring) -> Any:
    """Even-odd rule: which points lie inside the ring (vectorised over the points)."""
    inside = np.zeros(xs.shape, bool)
    x0, y0 = ring[:, 0], ring[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    for ax, ay, bx, by in zip(x0, y0, x1, y1, strict=True):
        if ay == by:
            continue
        crosses = (ay > ys) != (by > ys)
        at_x = ax + (ys - ay) * (bx - ax) / (by - ay)
        inside ^= crosses & (xs < at_x)
    return inside


def label_points(
    xs: npt.NDArray[np.float64], ys: npt.NDArray[np.float64], areas: Sequence[ClassArea]
) -> list[str | None]:
    """The class of the first area each point lies in, ``None`` for points in none."""
    labels: list[str | None] = [None] * len(xs)
    unlabelled = np.ones(len(xs), bool)
    for area in areas:
        inside = inside_ring(xs, ys, area.exterior)
        for hole in area.holes:
            inside &= ~inside_ring(xs, ys, hole)
        for index in np.nonzero(inside & unlabelled)[0]:
            labels[int(index)] = area.name
        unlabelled &= ~inside
    return labels
