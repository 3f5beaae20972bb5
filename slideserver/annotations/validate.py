"""Check a GeoJSON Feature before it is stored: shape, numbers, place on the slide, class, sizes.

Every refusal is an :class:`InvalidAnnotation` (422) naming the feature and what is wrong, so a
batch of 100,000 is refused whole with the first fault found, and nothing is half-written.
Coordinates are checked with numpy (finite, inside the slide); polygons with shapely (closed
rings, no self-intersection: its ``explain_validity`` says where).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from math import isfinite
from typing import Any

import numpy as np
import shapely
from shapely.validation import explain_validity

from slideserver.annotations.model import (
    DEFAULT_CLASSES,
    ELLIPSE,
    GEOMETRY_KINDS,
    POLYGON,
    RECTANGLE,
    SHAPES,
    AnnotationIn,
    SlideFrame,
)
from slideserver.errors import Unprocessable

MAX_VERTICES = 100_000
"""Most positions one feature may have (a freehand outline of a whole section fits)."""
MAX_LABEL = 200
MAX_NOTE = 10_000
MAX_CLASS = 64
MAX_EXTRA = 64 * 1024
"""Largest JSON of the uninterpreted properties kept with one feature (QuPath measurements)."""
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
"""A client-given feature or layer id (QuPath's UUIDs fit)."""
COLOUR_PATTERN = re.compile(r"#[0-9a-fA-F]{6}")
READ_ONLY = frozenset(
    {
        "id",
        "author",
        "version",
        "kind",
        "measurements",
        "measurements_unavailable",
        "created",
        "updated",
    }
)
"""Properties the server computes: ignored on input."""
KNOWN = frozenset({"class", "label", "note", "colour", "color", "layer", "shape", "extra"})


class InvalidAnnotation(Unprocessable):
    """A feature the server will not store (answered 422 with what is wrong)."""

    code = "invalid_annotation"


def plain_text(value: str) -> bool:
    """Tell whether a string can be stored: no NUL, and valid UTF-8 (JSON's ``\\ud800``
    escapes decode to unpaired surrogates, which no database encodes)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def known_classes(setting: str) -> dict[str, str]:
    """Return the known classes, lower-cased to their spelling, from ``annotation_classes``."""
    names = [c.strip() for c in setting.split(",") if c.strip()] or list(DEFAULT_CLASSES)
    return {name.lower(): name for name in names}


def check_id(value: Any, what: str = "id") -> str:
    """Return a client-given identifier, or refuse it."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise InvalidAnnotation(f"{what} must be 1 to 64 letters, digits or . _ : -")
    return value


def _text(props: Mapping[str, Any], name: str, limit: int, where: str) -> str | None:
    value = props.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidAnnotation(f"{where}: {name} must be a string")
    if len(value) > limit:
        raise InvalidAnnotation(f"{where}: {name} is longer than {limit} characters")
    if not plain_text(value):
        raise InvalidAnnotation(f"{where}: {name} holds a NUL or an unpaired surrogate")
    return value


def _positions(value: Any, where: str) -> list[tuple[float, float]]:
    """Return a list of (x, y) positions, or refuse what is not one (finite numbers only)."""
    if not isinstance(value, list) or not value:
        raise InvalidAnnotation(f"{where}: expected a non-empty list of [x, y] positions")
    if len(value) > MAX_VERTICES:
        raise InvalidAnnotation(f"{where}: more than {MAX_VERTICES} positions")
    out = []
    for position in value:
        if not isinstance(position, list) or len(position) != 2:
            raise InvalidAnnotation(f"{where}: every position must be [x, y] numbers")
        x, y = position
        if type(x) not in (int, float) or type(y) not in (int, float):
            raise InvalidAnnotation(f"{where}: every position must be [x, y] numbers")
        try:
            finite = isfinite(x) and isfinite(y)
        except OverflowError:  # an integer with hundreds of digits
            finite = False
        if not finite:
            raise InvalidAnnotation(f"{where}: coordinates must be finite numbers (no NaN)")
        out.append((x, y))
    return out


def _ring(value: Any, where: str) -> list[tuple[float, float]]:
    ring = _positions(value, where)
    if len(ring) < 4:
        raise InvalidAnnotation(f"{where}: a ring needs at least 4 positions")
    if ring[0] != ring[-1]:
        raise InvalidAnnotation(f"{where}: the ring is not closed (first and last differ)")
    return ring


Rings = list[list[list[tuple[float, float]]]]
"""Polygons of rings of positions (a point set or a line: one polygon of one 'ring')."""


def _arrays(geometry: Mapping[str, Any], where: str) -> Rings:
    """Return the geometry's positions as polygons of rings."""
    kind = geometry.get("type")
    coords = geometry.get("coordinates")
    if kind == "Point":
        return [[_positions([coords], where)]]
    if kind in ("MultiPoint", "LineString"):
        return [[_positions(coords, where)]]
    if kind == "Polygon":
        if not isinstance(coords, list) or not coords:
            raise InvalidAnnotation(f"{where}: a Polygon needs at least one ring")
        return [[_ring(r, where) for r in coords]]
    if kind == "MultiPolygon":
        if not isinstance(coords, list) or not coords:
            raise InvalidAnnotation(f"{where}: a MultiPolygon needs at least one polygon")
        polygons = []
        for polygon in coords:
            if not isinstance(polygon, list) or not polygon:
                raise InvalidAnnotation(f"{where}: a polygon needs at least one ring")
            polygons.append([_ring(r, where) for r in polygon])
        return polygons
    names = ", ".join(GEOMETRY_KINDS)
    raise InvalidAnnotation(f"{where}: geometry type must be one of {names}")


def _shapely(geometry: Mapping[str, Any], polygons: Rings) -> Any:
    if geometry["type"] == "Polygon":
        return shapely.Polygon(polygons[0][0], polygons[0][1:])
    return shapely.MultiPolygon([(p[0], p[1:]) for p in polygons])


def _simple_polygons(shells: Sequence[list[tuple[float, float]]]) -> Any:
    """Build polygons without holes in one vectorized call (detections: thousands at once)."""
    sizes = np.fromiter((len(s) for s in shells), dtype=np.int64, count=len(shells))
    flat = np.array([p for shell in shells for p in shell], dtype=np.float64)
    rings = shapely.linearrings(flat, indices=np.repeat(np.arange(len(shells)), sizes))
    return shapely.polygons(rings)


def _parse_geometry(
    geometry: Any, frame: SlideFrame, where: str, shape: str | None
) -> tuple[str, dict[str, Any], tuple[float, float, float, float], Any]:
    """Check all but polygon validity; return (kind, geometry, bbox, shapely polygon | None)."""
    if not isinstance(geometry, Mapping):
        raise InvalidAnnotation(f"{where}: geometry must be a GeoJSON geometry object")
    polygons = _arrays(geometry, where)
    count = sum(len(ring) for polygon in polygons for ring in polygon)
    if count > MAX_VERTICES:
        raise InvalidAnnotation(f"{where}: more than {MAX_VERTICES} positions")
    xs = [x for polygon in polygons for ring in polygon for x, _ in ring]
    ys = [y for polygon in polygons for ring in polygon for _, y in ring]
    low_x, low_y, high_x, high_y = min(xs), min(ys), max(xs), max(ys)
    if low_x < 0 or low_y < 0 or high_x > frame.width or high_y > frame.height:
        raise InvalidAnnotation(
            f"{where}: coordinates must lie inside the slide (0..{frame.width}, "
            f"0..{frame.height} level-0 pixels)"
        )
    kind = GEOMETRY_KINDS[str(geometry["type"])]
    if geometry["type"] == "LineString" and len(set(polygons[0][0])) < 2:
        raise InvalidAnnotation(f"{where}: a line needs two distinct positions")
    polygon: Any = None
    if kind == POLYGON:
        simple = geometry["type"] == "Polygon" and len(polygons[0]) == 1
        polygon = polygons[0][0] if simple else _shapely(geometry, polygons)
    if shape is not None:
        kind = _check_shape(shape, geometry, polygons, where)
    clean = {"type": geometry["type"], "coordinates": geometry["coordinates"]}
    bbox = (float(low_x), float(low_y), float(high_x), float(high_y))
    return kind, clean, bbox, polygon


def _check_polygons(polygons: Sequence[Any], wheres: Sequence[str]) -> None:
    """Refuse the first polygon that is invalid or has no area (vectorized over a batch).

    ``polygons``: shapely polygons, or the shell (a list of positions) of one without holes.
    """
    if not polygons:
        return
    shells = [i for i, p in enumerate(polygons) if isinstance(p, list)]
    array = np.empty(len(polygons), dtype=object)
    array[:] = [None if isinstance(p, list) else p for p in polygons]
    if shells:
        array[shells] = _simple_polygons([polygons[i] for i in shells])
    valid = shapely.is_valid(array) & (shapely.area(array) > 0)
    if valid.all():
        return
    index = int(np.argmin(valid))
    polygon = array[index]
    if not polygon.is_valid:
        raise InvalidAnnotation(f"{wheres[index]}: invalid polygon: {explain_validity(polygon)}")
    raise InvalidAnnotation(f"{wheres[index]}: the polygon has no area")


def check_geometry(
    geometry: Any, frame: SlideFrame, where: str, shape: str | None = None
) -> tuple[str, dict[str, Any], tuple[float, float, float, float]]:
    """Return (kind, geometry, bbox) of a valid geometry inside the slide, or refuse it."""
    kind, clean, bbox, polygon = _parse_geometry(geometry, frame, where, shape)
    if polygon is not None:
        _check_polygons([polygon], [where])
    return kind, clean, bbox


def _check_shape(shape: Any, geometry: Mapping[str, Any], polygons: Any, where: str) -> str:
    if shape not in SHAPES:
        raise InvalidAnnotation(f"{where}: shape must be rectangle or ellipse")
    if geometry["type"] != "Polygon" or len(polygons[0]) != 1:
        raise InvalidAnnotation(f"{where}: a {shape} is a Polygon without holes")
    ring = polygons[0][0]
    if shape == RECTANGLE:
        xs, ys = {x for x, _ in ring}, {y for _, y in ring}
        if len(ring) != 5 or len(xs) != 2 or len(ys) != 2:
            raise InvalidAnnotation(f"{where}: a rectangle is 5 positions on its 4 corners")
    elif len(ring) < 9:
        raise InvalidAnnotation(f"{where}: an ellipse needs at least 8 vertices")
    return str(shape) if shape == RECTANGLE else ELLIPSE


def check_feature(
    feature: Any, frame: SlideFrame, classes: Mapping[str, str], index: int = 0
) -> AnnotationIn:
    """Return a GeoJSON Feature as an :class:`AnnotationIn`, or refuse it."""
    item, polygon = _feature(feature, frame, classes, index)
    if polygon is not None:
        _check_polygons([polygon], [f"feature {index}"])
    return item


def _feature(
    feature: Any, frame: SlideFrame, classes: Mapping[str, str], index: int
) -> tuple[AnnotationIn, Any]:
    where = f"feature {index}"
    if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
        raise InvalidAnnotation(f"{where}: expected a GeoJSON Feature")
    props = feature.get("properties") or {}
    if not isinstance(props, Mapping):
        raise InvalidAnnotation(f"{where}: properties must be an object")
    raw_id = feature.get("id")  # GeoJSON's place; properties.id is the server's echo
    feature_id = check_id(raw_id, f"{where}: id") if raw_id is not None else None
    kind, geometry, bbox, polygon = _parse_geometry(
        feature.get("geometry"), frame, where, props.get("shape")
    )
    cls = _text(props, "class", MAX_CLASS, where)
    if cls is not None:
        known = classes.get(cls.lower())
        if known is None:
            raise InvalidAnnotation(
                f"{where}: unknown class {cls!r}; known: {', '.join(classes.values())}"
            )
        cls = known
    colour = props.get("colour", props.get("color"))
    if colour is not None and (not isinstance(colour, str) or not COLOUR_PATTERN.fullmatch(colour)):
        raise InvalidAnnotation(f"{where}: colour must be #rrggbb")
    layer = props.get("layer")
    extra = props.get("extra") or {}
    if not isinstance(extra, Mapping):
        raise InvalidAnnotation(f"{where}: extra must be an object")
    extra = dict(extra)
    extra.update({k: v for k, v in props.items() if k not in KNOWN and k not in READ_ONLY})
    try:
        size = len(json.dumps(extra)) if extra else 0
    except (TypeError, ValueError):
        raise InvalidAnnotation(f"{where}: other properties are not plain JSON") from None
    if size > MAX_EXTRA:
        raise InvalidAnnotation(f"{where}: other properties are larger than {MAX_EXTRA} bytes")
    item = AnnotationIn(
        kind=kind,
        geometry=geometry,
        bbox=bbox,
        id=feature_id,
        layer_id=check_id(layer, f"{where}: layer") if layer is not None else None,
        cls=cls,
        label=_text(props, "label", MAX_LABEL, where),
        note=_text(props, "note", MAX_NOTE, where),
        colour=colour.lower() if isinstance(colour, str) else None,
        extra=extra,
    )
    return item, polygon


def features_of(body: Any, limit: int) -> list[Any]:
    """Return the features of one Feature or a FeatureCollection (at most ``limit``)."""
    if isinstance(body, Mapping) and body.get("type") == "Feature":
        return [body]
    if isinstance(body, Mapping) and body.get("type") == "FeatureCollection":
        features = body.get("features")
        if not isinstance(features, list):
            raise InvalidAnnotation("a FeatureCollection needs a features list")
        if len(features) > limit:
            from slideserver.errors import TooLarge

            raise TooLarge(f"at most {limit} features in one request")
        return features
    raise InvalidAnnotation("the body must be a GeoJSON Feature or FeatureCollection")


def check_features(
    features: Iterable[Any], frame: SlideFrame, classes: Mapping[str, str]
) -> list[AnnotationIn]:
    """Check every feature (the first fault refuses the whole batch)."""
    checked = []
    polygons = []
    wheres = []
    for index, feature in enumerate(features):
        item, polygon = _feature(feature, frame, classes, index)
        checked.append(item)
        if polygon is not None:
            polygons.append(polygon)
            wheres.append(f"feature {index}")
    _check_polygons(polygons, wheres)
    ids = [a.id for a in checked if a.id is not None]
    if len(ids) != len(set(ids)):
        raise InvalidAnnotation("two features in the request have the same id")
    return checked
