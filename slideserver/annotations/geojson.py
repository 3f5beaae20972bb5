"""Annotations as GeoJSON, the API's own shape (and the ``geojson`` import/export format).

Each Feature's ``properties`` carry ``id``, ``class``, ``layer``, ``author``, ``version`` and
``measurements`` (``length_um``, ``area_um2``, ``area_mm2``, ``perimeter_um`` as apply; ``null``
with ``measurements_unavailable`` when the slide has no MPP), then ``kind``, ``shape`` (rectangle
or ellipse), ``label``, ``note``, ``colour``, ``created``, ``updated``, and the properties the
server keeps without interpreting them (an import's own), so an export imports back the same.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from slideserver.annotations.measure import NO_MPP
from slideserver.annotations.model import SHAPES, Annotation


def feature(
    annotation: Annotation,
    *,
    author: str | None = None,
    show_note: bool = True,
    show_extra: bool = True,
) -> dict[str, Any]:
    """Return one annotation as a GeoJSON Feature.

    ``author`` replaces the stored author (a pseudonym for researchers); ``show_note`` and
    ``show_extra`` drop the free text and the uninterpreted properties (de-identified views).
    """
    a = annotation
    props: dict[str, Any] = finite(a.extra) if show_extra and a.extra else {}
    props.update(
        {
            "id": a.id,
            "class": a.cls,
            "layer": a.layer_id,
            "author": a.author if author is None else author,
            "version": a.version,
            "measurements": a.measurements,
            "kind": a.kind,
            "label": a.label,
            "note": a.note if show_note else None,
            "colour": a.colour,
            "created": a.created_at.isoformat() if a.created_at else None,
            "updated": a.updated_at.isoformat() if a.updated_at else None,
        }
    )
    if a.kind in SHAPES:
        props["shape"] = a.kind
    if a.measurements is None:
        props["measurements_unavailable"] = NO_MPP
    return {"type": "Feature", "id": a.id, "geometry": a.geometry, "properties": props}


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities as ``null`` (browsers' JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def collection(features: Iterable[Mapping[str, Any]], **members: Any) -> dict[str, Any]:
    """Return a FeatureCollection (``members``: foreign members such as ``next``, ``links``)."""
    return {"type": "FeatureCollection", "features": list(features), **members}
