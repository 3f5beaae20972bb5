"""Which resolution a region is read at, and how a large region is cut into IIIF requests.

Pure arithmetic on the slide's metadata (``GET /api/slides/{id}``) and the server's IIIF limits
(``info.json``): no I/O, shared by the sync and async clients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MAX_STORED_READ = 32 * 1024 * 1024
"""Stored-level pixels one request may read at most: half the server's 413 bound
(``imaging.regions.MAX_READ_PIXELS``), so that rounding never trips it."""
MAX_PIECE = 4096
"""Longest side of one IIIF request: larger regions are cut into pieces of at most this."""


@dataclass(frozen=True)
class SlideGeometry:
    """What region planning needs to know about a slide."""

    slide_id: str
    width: int
    height: int
    mpp: float | None
    """Level-0 µm per pixel (``mpp_x``), ``None`` when the slide does not say."""
    downsamples: tuple[float, ...]
    """Each stored level's downsample, finest first."""
    max_width: int = 10_000
    max_height: int = 10_000
    max_area: int = 40_000_000

    @classmethod
    def from_answers(cls, slide: dict[str, Any], info: dict[str, Any]) -> SlideGeometry:
        """Build from the slide's metadata and its IIIF ``info.json``."""
        levels = slide.get("levels") or [{"downsample": 1.0}]
        mpp = slide.get("mpp_x")
        return cls(
            slide_id=str(slide["id"]),
            width=int(slide.get("width") or info["width"]),
            height=int(slide.get("height") or info["height"]),
            mpp=float(mpp) if mpp else None,
            downsamples=tuple(float(level["downsample"]) for level in levels),
            max_width=int(info.get("maxWidth") or 10_000),
            max_height=int(info.get("maxHeight") or info.get("maxWidth") or 10_000),
            max_area=int(info.get("maxArea") or 40_000_000),
        )

    def downsample_for(self, mpp: float | None) -> float:
        """Level-0 pixels per output pixel for ``mpp`` µm/px (``None``: full resolution).

        Refuses a resolution finer than the slide's own: that would be upsampling.
        """
        if mpp is None:
            return 1.0
        if mpp <= 0 or not math.isfinite(mpp):
            raise ValueError(f"mpp must be a positive number, not {mpp!r}")
        if self.mpp is None:
            raise ValueError(f"slide {self.slide_id} has no µm per pixel; read it with mpp=None")
        downsample = mpp / self.mpp
        if downsample < 1 - 1e-6:
            raise ValueError(
                f"slide {self.slide_id} is scanned at {self.mpp:g} µm/px; "
                f"{mpp:g} µm/px would be upsampled"
            )
        return max(1.0, downsample)

    def thumbnail_side(self, target: int) -> int:
        """The long side of a thumbnail for finding tissue, near ``target``: a stored level's
        own size when one lies within a factor of two (read as stored, nothing resampled)."""
        longest = max(self.width, self.height)
        sides = [round(longest / d) for d in self.downsamples]
        near = [side for side in sides if target // 2 <= side <= target * 2]
        return min(near, key=lambda side: abs(side - target)) if near else min(target, longest)

    def stored_level(self, downsample: float) -> int:
        """The stored level the server reads for ``downsample``: the coarsest not coarser than it
        (the server's rule, ``imaging.regions.best_level``), so nothing is upsampled."""
        best = 0
        for index, level_downsample in enumerate(self.downsamples):
            if level_downsample <= downsample * 1.01:
                best = index
        return best


@dataclass(frozen=True)
class Piece:
    """One IIIF request: a level-0 box inside the slide and where its pixels go in the output."""

    x: int
    y: int
    width: int
    height: int
    out_x: int
    out_y: int
    out_width: int
    out_height: int

    def iiif_path(self, slide_id: str, fmt: str) -> str:
        """The IIIF image request for this piece (``^`` only where rounding left the level-0 box
        a pixel smaller than the output, which IIIF would otherwise refuse as upscaling)."""
        up = "^" if self.out_width > self.width or self.out_height > self.height else ""
        region = f"{self.x},{self.y},{self.width},{self.height}"
        return f"/iiif/3/{slide_id}/{region}/{up}{self.out_width},{self.out_height}/0/default.{fmt}"


@dataclass(frozen=True)
class RegionPlan:
    """The output size of a region read and the requests that fill it (white elsewhere)."""

    out_width: int
    out_height: int
    pieces: tuple[Piece, ...]


def plan_region(
    geometry: SlideGeometry, x: int, y: int, width: int, height: int, downsample: float
) -> RegionPlan:
    """Cut the level-0 region into requests the server accepts.

    The output is ``round(width / downsample)`` x ``round(height / downsample)``; the part of the
    region outside the slide is left to the caller to fill (white, as the server does).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive, not {width} x {height}")
    out_w = max(1, round(width / downsample))
    out_h = max(1, round(height / downsample))
    # The part inside the slide, in level-0 and in output pixels.
    x0, x1 = max(x, 0), min(x + width, geometry.width)
    y0, y1 = max(y, 0), min(y + height, geometry.height)
    if x1 <= x0 or y1 <= y0:
        return RegionPlan(out_w, out_h, ())
    ox0, ox1 = round((x0 - x) / downsample), min(out_w, round((x1 - x) / downsample))
    oy0, oy1 = round((y0 - y) / downsample), min(out_h, round((y1 - y) / downsample))
    if ox1 <= ox0 or oy1 <= oy0:
        return RegionPlan(out_w, out_h, ())
    side = _piece_side(geometry, downsample)
    pieces = []
    for oy in range(oy0, oy1, side):
        ob = min(oy + side, oy1)
        py0 = max(y0, y + math.floor(oy * downsample))
        py1 = min(y1, y + math.ceil(ob * downsample)) if ob < oy1 else y1
        for ox in range(ox0, ox1, side):
            oe = min(ox + side, ox1)
            px0 = max(x0, x + math.floor(ox * downsample))
            px1 = min(x1, x + math.ceil(oe * downsample)) if oe < ox1 else x1
            pieces.append(Piece(px0, py0, px1 - px0, py1 - py0, ox, oy, oe - ox, ob - oy))
    return RegionPlan(out_w, out_h, tuple(pieces))


def _piece_side(geometry: SlideGeometry, downsample: float) -> int:
    """Longest output side of one request: within the IIIF limits and the stored-read bound."""
    level_downsample = geometry.downsamples[geometry.stored_level(downsample)]
    read_bound = math.isqrt(MAX_STORED_READ) * level_downsample / downsample
    side = min(geometry.max_width, geometry.max_height, math.isqrt(geometry.max_area), MAX_PIECE)
    return max(1, min(side, int(read_bound)))
