"""QuPath's GeoJSON: read what QuPath exports, write what QuPath imports, nothing lost.

QuPath (0.4 and later) writes each object as a Feature whose ``id`` is the object's UUID and
whose ``properties`` hold ``objectType`` (``annotation``, ``detection``, ``cell``, ``tile``,
``tmaCore``), ``name``, ``color`` ``[r, g, b]``, ``classification`` (``{"name", "color"}``, or
``{"names": [...], "color"}`` for a derived class), ``isLocked`` (only when true),
``measurements`` (an object; a list of ``{"name", "value"}`` before 0.4) and ``metadata``; cells
carry a ``nucleusGeometry`` beside ``geometry``. QuPath 0.2 put the object type in ``id``
(``PathAnnotationObject``) and the class colour in ``colorRGB`` (a packed integer). Exports are a
FeatureCollection or a bare array of Features; both are read.

On import ``name`` becomes the label, the class name the class, an object's own ``color`` its
colour; every QuPath property is also kept as it was (in the annotation's uninterpreted
properties), and written back unchanged on export, so a QuPath export comes back identical.
What QuPath has no field for (the note, a rectangle's or ellipse's shape) travels in the
object's ``metadata`` as ``slideserver.note`` and ``slideserver.shape`` (QuPath keeps metadata).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slideserver.annotations.model import CLASS_COLOURS, DEFAULT_COLOUR, SHAPES, Annotation
from slideserver.annotations.validate import InvalidAnnotation

NOTE = "slideserver.note"
SHAPE = "slideserver.shape"
KEPT = "qupath"
"""The key of an annotation's uninterpreted properties holding QuPath's own, as read."""
LEGACY_TYPE_IDS = frozenset(
    {
        "PathTileObject",
        "PathCellObject",
        "TMACoreObject",
        "PathDetectionObject",
        "PathRootObject",
        "PathAnnotationObject",
    }
)
"""QuPath 0.2 wrote the object type in the feature's ``id``."""


def rgb_to_hex(value: Any) -> str | None:
    """``[r, g, b]`` (or QuPath's packed integer) as ``#rrggbb``; ``None`` if neither."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [(value >> 16) & 255, (value >> 8) & 255, value & 255]
    if (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(c, int) and 0 <= c <= 255 for c in value)
    ):
        return "#{:02x}{:02x}{:02x}".format(*value)
    return None


def hex_to_rgb(colour: str) -> list[int]:
    return [int(colour[i : i + 2], 16) for i in (1, 3, 5)]


def class_name(classification: Any) -> str | None:
    """The class of a QuPath ``classification`` (derived classes joined with ``: ``)."""
    if not isinstance(classification, Mapping):
        return None
    names = classification.get("names")
    if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
        return ": ".join(names)
    name = classification.get("name")
    return name if isinstance(name, str) and name else None


def features_in(body: Any) -> list[Any]:
    """The Features of a QuPath export: a FeatureCollection, an array, or one Feature."""
    if isinstance(body, list):
        return body
    if isinstance(body, Mapping) and body.get("type") == "FeatureCollection":
        features = body.get("features")
        if isinstance(features, list):
            return features
    if isinstance(body, Mapping) and body.get("type") == "Feature":
        return [body]
    raise InvalidAnnotation("a QuPath export is a FeatureCollection or an array of Features")


def to_feature(qupath: Any, index: int = 0) -> dict[str, Any]:
    """One QuPath Feature as the API's input Feature (see :mod:`.validate`)."""
    if not isinstance(qupath, Mapping) or qupath.get("type") != "Feature":
        raise InvalidAnnotation(f"feature {index}: expected a GeoJSON Feature")
    props = qupath.get("properties") or {}
    if not isinstance(props, Mapping):
        raise InvalidAnnotation(f"feature {index}: properties must be an object")
    kept: dict[str, Any] = {"properties": dict(props)}
    members = {k: v for k, v in qupath.items() if k not in ("type", "id", "geometry", "properties")}
    if members:
        kept["members"] = members  # nucleusGeometry and anything else beside the geometry
    raw_id = qupath.get("id")
    feature_id = None
    if isinstance(raw_id, str) and raw_id in LEGACY_TYPE_IDS:
        kept["legacy_id"] = raw_id
    elif raw_id is not None:
        feature_id = raw_id
    out: dict[str, Any] = {KEPT: kept}
    name = props.get("name")
    if isinstance(name, str) and name:
        out["label"] = name
    cls = class_name(props.get("classification"))
    if cls is not None:
        out["class"] = cls
    colour = rgb_to_hex(props.get("color"))
    if colour is not None:
        out["colour"] = colour
    metadata = props.get("metadata")
    if isinstance(metadata, Mapping):
        if isinstance(metadata.get(NOTE), str):
            out["note"] = metadata[NOTE]
        if metadata.get(SHAPE) in SHAPES:
            out["shape"] = metadata[SHAPE]
    feature: dict[str, Any] = {
        "type": "Feature",
        "geometry": qupath.get("geometry"),
        "properties": out,
    }
    if feature_id is not None:
        feature["id"] = feature_id
    return feature


def to_features(body: Any) -> list[dict[str, Any]]:
    """Every Feature of a QuPath export, as API input Features."""
    return [to_feature(f, i) for i, f in enumerate(features_in(body))]


def from_annotation(annotation: Annotation) -> dict[str, Any]:
    """One annotation as QuPath writes it (and reads it back)."""
    a = annotation
    kept = a.extra.get(KEPT) if isinstance(a.extra.get(KEPT), Mapping) else {}
    assert isinstance(kept, Mapping)
    props: dict[str, Any] = dict(kept.get("properties") or {})
    if not kept:  # drawn here, not read from QuPath (whose own objectType, if any, is kept)
        props["objectType"] = "annotation"
    if a.label:
        props["name"] = a.label
    else:
        props.pop("name", None)
    if a.colour:
        props["color"] = hex_to_rgb(a.colour)
    else:
        props.pop("color", None)
    if a.cls is None:
        props.pop("classification", None)
    elif (class_name(props.get("classification")) or "").lower() != a.cls.lower():
        colour = CLASS_COLOURS.get(a.cls.lower(), DEFAULT_COLOUR)
        props["classification"] = {"name": a.cls, "color": hex_to_rgb(colour)}
    metadata = dict(props.get("metadata") or {})
    metadata.pop(NOTE, None)
    metadata.pop(SHAPE, None)
    if a.note:
        metadata[NOTE] = a.note
    if a.kind in SHAPES:
        metadata[SHAPE] = a.kind
    if metadata:
        props["metadata"] = metadata
    else:
        props.pop("metadata", None)
    feature: dict[str, Any] = {"type": "Feature"}
    legacy = kept.get("legacy_id")
    feature["id"] = legacy if isinstance(legacy, str) else a.id
    feature["geometry"] = a.geometry
    members = kept.get("members")
    if isinstance(members, Mapping):
        feature.update(members)
    feature["properties"] = props
    return feature


def export(annotations: list[Annotation]) -> dict[str, Any]:
    """A FeatureCollection QuPath imports (File > Import objects from file)."""
    return {"type": "FeatureCollection", "features": [from_annotation(a) for a in annotations]}
