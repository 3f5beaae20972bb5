"""What an annotation and a layer are: plain values, independent of storage and transport.

Geometries are GeoJSON geometries in level-0 pixel coordinates (x right, y down, origin at the
top-left of the full-resolution image, as QuPath and OpenSeadragon count). A rectangle or an
ellipse is a GeoJSON ``Polygon`` whose ``shape`` says what it was drawn as (QuPath writes both as
polygons too); ``kind`` is what the server measures it as.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

POINT = "point"
MULTIPOINT = "multipoint"
LINE = "line"
POLYGON = "polygon"
RECTANGLE = "rectangle"
ELLIPSE = "ellipse"
KINDS = (POINT, MULTIPOINT, LINE, POLYGON, RECTANGLE, ELLIPSE)
"""Every geometry kind an annotation can have."""
SHAPES = (RECTANGLE, ELLIPSE)
"""Kinds stored as a GeoJSON Polygon with a ``shape`` property."""

GEOMETRY_KINDS = {
    "Point": POINT,
    "MultiPoint": MULTIPOINT,
    "LineString": LINE,
    "Polygon": POLYGON,
    "MultiPolygon": POLYGON,
}
"""GeoJSON geometry types accepted, and the kind each is measured as (a MultiPolygon is one
polygon annotation in several pieces, as QuPath writes a split region)."""

PERSONAL = "personal"
CASE = "case"
RESEARCH = "research"
ALGORITHM = "algorithm"
LAYER_KINDS = (PERSONAL, CASE, RESEARCH, ALGORITHM)
"""A pathologist's own marks, the case's shared layer, a research set, an algorithm's output."""

DEFAULT_CLASSES = (
    "tumour",
    "stroma",
    "necrosis",
    "mitosis",
    "margin",
    # QuPath's default classes, so a QuPath project's annotations import as they are.
    "Tumor",
    "Immune cells",
    "Other",
    "Region*",
    "Ignore*",
    "Positive",
    "Negative",
)
"""Classes known when the settings name none (``annotation_classes``)."""

CLASS_COLOURS = {
    "tumour": "#c83232",
    "tumor": "#c83232",
    "stroma": "#96c896",
    "necrosis": "#323232",
    "mitosis": "#f0a000",
    "margin": "#0064c8",
    "immune cells": "#a05aa0",
    "other": "#ffc800",
    "region*": "#0000b4",
    "ignore*": "#b4b4b4",
    "positive": "#c83232",
    "negative": "#7070e1",
}
"""Default colour of each built-in class (QuPath's, where it has one), lower-case keys."""
DEFAULT_COLOUR = "#ffff00"


@dataclass(frozen=True)
class Layer:
    """A group of annotations on one slide, kept for one purpose."""

    id: str
    slide_id: str
    name: str
    kind: str
    owner: str
    """The subject that created it (a personal layer's only writer besides admins)."""
    research_safe: bool = False
    """Notes may be shown to researchers (someone checked they hold no PHI)."""
    grants: tuple[str, ...] = ()
    """Researchers (subjects) who may write to it."""
    locked: bool = False
    version: int = 1
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class Annotation:
    """One mark on one slide."""

    id: str
    slide_id: str
    layer_id: str
    kind: str
    geometry: dict[str, Any]
    """A GeoJSON geometry, level-0 pixels."""
    bbox: tuple[float, float, float, float]
    """``min_x, min_y, max_x, max_y`` of the geometry."""
    cls: str | None = None
    label: str | None = None
    note: str | None = None
    colour: str | None = None
    author: str = ""
    version: int = 1
    created_at: datetime | None = None
    updated_at: datetime | None = None
    measurements: dict[str, float] | None = None
    """``length_um``, ``area_um2``, ``area_mm2``, ``perimeter_um`` as they apply; ``None`` when
    the slide has no MPP."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Properties the server keeps but does not interpret (QuPath's ``objectType``,
    ``isLocked``, ``measurements``, ``metadata``...), so an import exports with nothing lost."""


@dataclass(frozen=True)
class AnnotationIn:
    """An annotation as a client sends it, checked (:mod:`.validate`) but not yet stored."""

    kind: str
    geometry: dict[str, Any]
    bbox: tuple[float, float, float, float]
    id: str | None = None
    layer_id: str | None = None
    cls: str | None = None
    label: str | None = None
    note: str | None = None
    colour: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SlideFrame:
    """What validation and measurement need of a slide: its size and pixel spacing."""

    width: int
    height: int
    mpp_x: float | None = None
    mpp_y: float | None = None

    @property
    def has_mpp(self) -> bool:
        return bool(self.mpp_x and self.mpp_y and self.mpp_x > 0 and self.mpp_y > 0)


@dataclass(frozen=True)
class Change:
    """One version of one annotation: who changed it, when, and what it was before and after."""

    annotation_id: str
    version: int
    action: str
    """``create``, ``update`` or ``delete``."""
    actor: str
    at: datetime
    before: dict[str, Any] | None
    after: dict[str, Any] | None
