"""A CSV of points, for counts (mitoses, cells): one row per point, ``x,y`` in level-0 pixels.

Columns: ``id,x,y,class,label,layer``. On import only ``x`` and ``y`` are required (names
compared without case); rows with the same ``id`` form one multipoint annotation, rows without
an id one point each. On export point and multipoint annotations are written, a multipoint as
one row per point under its id; lines and areas are not points and are left out.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

from slideserver.annotations.model import MULTIPOINT, POINT, Annotation
from slideserver.annotations.validate import InvalidAnnotation

COLUMNS = ("id", "x", "y", "class", "label", "layer")
MAX_ROWS = 1_000_000


def _number(value: str, where: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise InvalidAnnotation(f"{where}: x and y must be numbers") from None
    return int(number) if number.is_integer() else number


def to_features(text: str) -> list[dict[str, Any]]:
    """Read a CSV of points into API input Features."""
    reader = csv.DictReader(io.StringIO(text))
    fields = {name.strip().lower(): name for name in reader.fieldnames or ()}
    if "x" not in fields or "y" not in fields:
        raise InvalidAnnotation("the CSV needs a header with x and y columns")
    grouped: dict[str, dict[str, Any]] = {}
    features: list[dict[str, Any]] = []
    for number, row in enumerate(reader, start=2):
        if number > MAX_ROWS:
            raise InvalidAnnotation(f"more than {MAX_ROWS} rows")
        where = f"row {number}"

        def cell(name: str, row: dict[str, Any] = row) -> str:
            return (row.get(fields[name]) or "").strip() if name in fields else ""

        position = [_number(cell("x"), where), _number(cell("y"), where)]
        props = {k: cell(k) for k in ("class", "label", "layer") if cell(k)}
        feature_id = cell("id")
        if feature_id and feature_id in grouped:
            geometry = grouped[feature_id]["geometry"]
            if geometry["type"] == "Point":
                geometry["type"] = "MultiPoint"
                geometry["coordinates"] = [geometry["coordinates"]]
            geometry["coordinates"].append(position)
            continue
        feature: dict[str, Any] = {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": position},
            "properties": props,
        }
        if feature_id:
            feature["id"] = feature_id
            grouped[feature_id] = feature
        features.append(feature)
    return features


def export(annotations: Iterable[Annotation]) -> str:
    """Write the point annotations as CSV (lines and areas are left out)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for a in annotations:
        if a.kind == POINT:
            positions = [a.geometry["coordinates"]]
        elif a.kind == MULTIPOINT:
            positions = a.geometry["coordinates"]
        else:
            continue
        for x, y in positions:
            writer.writerow([a.id, x, y, a.cls or "", a.label or "", a.layer_id])
    return out.getvalue()
