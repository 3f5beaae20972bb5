"""What goes over the wire, for both clients: paths, filters, and answers decoded.

No I/O here: the sync and async clients differ only in how they wait.
"""

from __future__ import annotations

import io
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import numpy as np
import numpy.typing as npt
from PIL import Image

from slideserver.client.errors import SlideServerError, error_for
from slideserver.client.geometry import RegionPlan

Pixels = npt.NDArray[np.uint8]

SLIDE_FILTERS = frozenset(
    {
        "q",
        "format",
        "vendor",
        "status",
        "patient",
        "accession",
        "specimen",
        "stain",
        "scanned_from",
        "scanned_to",
        "sort",
    }
)
"""The search parameters of ``GET /api/slides`` (the same as the API's)."""
PAGE_SIZE = 200


def slide_path(slide_id: str, *rest: str) -> str:
    """``/api/slides/{id}[/rest...]`` with the ID escaped."""
    return "/".join([f"/api/slides/{quote(slide_id, safe='')}", *rest])


def slide_filters(filters: Mapping[str, Any]) -> dict[str, str]:
    """The query parameters of a slide search; an unknown filter is a mistake, so refuse it."""
    unknown = set(filters) - SLIDE_FILTERS - {"limit"}
    if unknown:
        allowed = ", ".join(sorted(SLIDE_FILTERS))
        raise TypeError(f"unknown slide filter(s) {', '.join(sorted(unknown))}; use {allowed}")
    params = {key: str(value) for key, value in filters.items() if value is not None}
    params.setdefault("limit", str(PAGE_SIZE))
    return params


def raise_for_answer(status: int, content_type: str, body: bytes) -> None:
    """Raise the exception for an error answer; return for 2xx."""
    if status < 400:
        return
    decoded: Any = None
    if "json" in content_type:
        try:
            import json

            decoded = json.loads(body)
        except ValueError:
            decoded = None
    raise error_for(status, decoded)


def decode_image(data: bytes) -> Pixels:
    """An image answer (JPEG, PNG, WebP) as a ``(height, width, 3)`` uint8 RGB array."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise SlideServerError("bad_image", "the server's image could not be decoded") from exc


def assemble(plan: RegionPlan, pieces: list[Pixels]) -> Pixels:
    """Paste decoded pieces into a white output of the plan's size."""
    out = np.full((plan.out_height, plan.out_width, 3), 255, np.uint8)
    for piece, pixels in zip(plan.pieces, pieces, strict=True):
        h = min(piece.out_height, pixels.shape[0])
        w = min(piece.out_width, pixels.shape[1])
        out[piece.out_y : piece.out_y + h, piece.out_x : piece.out_x + w] = pixels[:h, :w]
    return out


@dataclass(frozen=True)
class DeepZoomInfo:
    """A slide's Deep Zoom descriptor (``/dz/{id}.dzi``)."""

    slide_id: str
    width: int
    height: int
    tile_size: int
    overlap: int
    format: str

    @property
    def max_level(self) -> int:
        """The full-resolution level (Deep Zoom counts up from a 1 x 1 level 0)."""
        return math.ceil(math.log2(max(self.width, self.height, 1)))

    def level_size(self, level: int) -> tuple[int, int]:
        """Width and height of a Deep Zoom level."""
        if not 0 <= level <= self.max_level:
            raise ValueError(f"Deep Zoom level must be 0 to {self.max_level}, not {level}")
        scale = 2 ** (self.max_level - level)
        return max(1, math.ceil(self.width / scale)), max(1, math.ceil(self.height / scale))

    def tile_grid(self, level: int) -> tuple[int, int]:
        """Columns and rows of tiles in a level."""
        width, height = self.level_size(level)
        return math.ceil(width / self.tile_size), math.ceil(height / self.tile_size)

    def tile_paths(self, level: int) -> Iterator[tuple[int, int, str]]:
        """Column, row and path of every tile of a level, row by row."""
        cols, rows = self.tile_grid(level)
        base = f"/dz/{quote(self.slide_id, safe='')}_files/{level}"
        for row in range(rows):
            for col in range(cols):
                yield col, row, f"{base}/{col}_{row}.{self.format}"


def parse_dzi(slide_id: str, text: bytes) -> DeepZoomInfo:
    """Parse a ``.dzi`` XML descriptor."""
    root = ET.fromstring(text)
    size = next(el for el in root.iter() if el.tag.endswith("Size"))
    return DeepZoomInfo(
        slide_id=slide_id,
        width=int(size.attrib["Width"]),
        height=int(size.attrib["Height"]),
        tile_size=int(root.attrib["TileSize"]),
        overlap=int(root.attrib.get("Overlap", "0")),
        format=root.attrib.get("Format", "jpeg"),
    )


@dataclass(frozen=True)
class DeepZoomTile:
    """One Deep Zoom tile and its place in its level."""

    level: int
    col: int
    row: int
    pixels: Pixels


@dataclass(frozen=True)
class Region:
    """A level-0 region of a slide, for :meth:`Client.read_regions`."""

    slide_id: str
    x: int
    y: int
    width: int
    height: int


def next_page(
    path: str, params: dict[str, str], page: dict[str, Any]
) -> tuple[str | None, dict[str, str]]:
    """Where the next page of a paged FeatureCollection is: a link or a cursor, or nowhere."""
    following = page.get("next")
    if not following:
        return None, params
    following = str(following)
    if following.startswith(("/", "http://", "https://")):
        return following, {}
    return path, {**params, "cursor": following}
