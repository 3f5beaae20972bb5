"""Annotations drawn on a report figure: each shape stroked in its colour over the region's pixels.

The figure is a level-0 rectangle rendered at print size; shapes come in level-0 pixels (the
annotation store's coordinates) and are scaled to the figure's pixels and clipped to it with
shapely, then stroked with Pillow, as the viewer's overlay strokes them: polygons (holes
included) and rectangles and ellipses (stored as polygons) as outlines, lines as lines, points as
dots. Which annotations, and whether the caller may see them, is decided before (the report
service asks the annotation store); this module only draws. A view holding more than
:data:`MAX_FIGURE_ANNOTATIONS` is not drawn at all: the figure's legend says so instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import shapely
from PIL import Image, ImageColor, ImageDraw
from shapely import affinity
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from slideserver.annotations.model import CLASS_COLOURS, DEFAULT_COLOUR, Annotation
from slideserver.reports.model import Region

MAX_FIGURE_ANNOTATIONS = 5000
"""Most annotations drawn on one figure; a denser view draws none and says so in the legend."""


@dataclass(frozen=True)
class FigureAnnotations:
    """The annotations a figure shows: at most the cap, or none and ``too_many``."""

    annotations: tuple[Annotation, ...] = ()
    too_many: bool = False

    @property
    def note(self) -> str:
        """What the legend says of annotations left out (empty when all are drawn)."""
        if not self.too_many:
            return ""
        return (
            f"Annotations not drawn: more than {MAX_FIGURE_ANNOTATIONS:,} in this region; "
            "choose a smaller region or fewer layers."
        )


NO_ANNOTATIONS = FigureAnnotations()


def colour_of(annotation: Annotation) -> tuple[int, int, int]:
    """The annotation's own colour, else its class's, else the default (as the viewer)."""
    for value in (
        annotation.colour,
        CLASS_COLOURS.get((annotation.cls or "").lower()),
        DEFAULT_COLOUR,
    ):
        if value:
            try:
                red, green, blue = ImageColor.getrgb(value)[:3]
            except ValueError:
                continue
            return red, green, blue
    return 255, 255, 0


def stroke_width(image: Image.Image) -> int:
    """Outline width in pixels: about 0.25 mm at the print resolution, never thinner than 2."""
    return max(2, round(max(image.size) / 700))


def _parts(geometry: BaseGeometry) -> Iterable[BaseGeometry]:
    if hasattr(geometry, "geoms"):
        for part in geometry.geoms:
            yield from _parts(part)
    elif not geometry.is_empty:
        yield geometry


def _in_pixels(annotation: Annotation, region: Region, size: tuple[int, int]) -> BaseGeometry:
    """The annotation's geometry in the figure's pixels, clipped to the figure (with a margin)."""
    sx = size[0] / region.width
    sy = size[1] / region.height
    geometry = affinity.affine_transform(
        shape(annotation.geometry), [sx, 0.0, 0.0, sy, -region.x * sx, -region.y * sy]
    )
    margin = 16.0
    return shapely.clip_by_rect(geometry, -margin, -margin, size[0] + margin, size[1] + margin)


def draw_annotations(
    image: Image.Image, region: Region, annotations: Sequence[Annotation]
) -> Image.Image:
    """Return ``image`` (the figure of ``region``) with the annotations stroked over it.

    With no annotations the image is returned as it is, untouched.
    """
    if not annotations:
        return image
    out = image.convert("RGB") if image.mode != "RGB" else image.copy()
    draw = ImageDraw.Draw(out)
    width = stroke_width(out)
    dot = width * 2
    for annotation in annotations:
        colour = colour_of(annotation)
        for part in _parts(_in_pixels(annotation, region, out.size)):
            if part.geom_type == "Point":
                x, y = part.coords[0][:2]
                draw.ellipse((x - dot, y - dot, x + dot, y + dot), fill=colour)
            elif part.geom_type in ("LineString", "LinearRing"):
                draw.line([c[:2] for c in part.coords], fill=colour, width=width, joint="curve")
            elif part.geom_type == "Polygon":
                for ring in (part.exterior, *part.interiors):
                    draw.line([c[:2] for c in ring.coords], fill=colour, width=width, joint="curve")
    return out


__all__ = [
    "MAX_FIGURE_ANNOTATIONS",
    "NO_ANNOTATIONS",
    "FigureAnnotations",
    "colour_of",
    "draw_annotations",
    "stroke_width",
]
