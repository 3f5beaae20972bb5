"""Deep Zoom grid geometry, pure.

Variables name their space as in openslide-python's ``deepzoom.py``: ``z_`` Deep Zoom level
pixels, ``t_`` tile indices, ``l_`` stored-level pixels, ``l0_`` level-0 pixels.

The grid is chosen per slide (:func:`choose_tile_size`) so that stored tiles can be sent as they
are, but only when they make a reasonable grid:

- stored tiles square and from ``MIN_NATIVE_TILE`` (128) to ``MAX_NATIVE_TILE`` (1024) pixels, on
  every level or at least on level 0: the Deep Zoom tile size equals them and the overlap is 0,
  and each Deep Zoom level whose size equals a stored level's maps tile for tile onto it;
- anything else (tiles under 128 px, over 1024 px, not square, or a file in strips): the
  ``DEFAULT_TILE_SIZE`` 254 px grid with ``DEFAULT_OVERLAP`` 1, every tile rendered. Tiny stored
  tiles would cost too many requests (a 64 px grid asks for 16 times as many tiles as a 256 px
  one, each with its HTTP and decode overhead), and huge ones too many bytes per request.

The README ("How tiles are made") states the same rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from slideserver.errors import TileNotFound
from slideserver.models import SlideInfo

DEFAULT_TILE_SIZE = 254
DEFAULT_OVERLAP = 1
MIN_NATIVE_TILE = 128
MAX_NATIVE_TILE = 1024


@dataclass(frozen=True)
class TileRequestGeometry:
    """Where one Deep Zoom tile comes from."""

    l0_x: int
    l0_y: int
    l0_width: int
    l0_height: int
    z_width: int
    z_height: int
    stored_level: int | None
    """The stored level whose tile (``t_col``, ``t_row``) is this Deep Zoom tile, if any."""


@dataclass(frozen=True)
class DeepZoomGrid:
    """The Deep Zoom pyramid of one slide."""

    l0_width: int
    l0_height: int
    tile_size: int
    overlap: int
    z_dimensions: tuple[tuple[int, int], ...]
    """Size of every Deep Zoom level, from 1x1 (level 0) to full resolution."""
    stored_by_z: tuple[int | None, ...]
    """For each Deep Zoom level, the stored level with the same pixel grid and tiles, if any."""

    @classmethod
    def for_slide(cls, info: SlideInfo) -> DeepZoomGrid:
        """Choose tile size and overlap for ``info`` and map Deep Zoom levels to stored ones."""
        tile_size, overlap = choose_tile_size(info)
        z_dims = [(info.width, info.height)]
        while z_dims[-1] != (1, 1):
            w, h = z_dims[-1]
            z_dims.append((max(1, math.ceil(w / 2)), max(1, math.ceil(h / 2))))
        z_dims.reverse()
        stored: list[int | None] = []
        for z_w, z_h in z_dims:
            match = None
            if overlap == 0:
                for index, level in enumerate(info.levels):
                    if (
                        level.tile_width == tile_size
                        and level.tile_height == tile_size
                        and abs(level.width - z_w) <= 1
                        and abs(level.height - z_h) <= 1
                    ):
                        match = index
                        break
            stored.append(match)
        return cls(info.width, info.height, tile_size, overlap, tuple(z_dims), tuple(stored))

    @property
    def level_count(self) -> int:
        return len(self.z_dimensions)

    def tile_count(self, z_level: int) -> tuple[int, int]:
        """Return (columns, rows) of a Deep Zoom level."""
        z_w, z_h = self.z_dimensions[z_level]
        return math.ceil(z_w / self.tile_size), math.ceil(z_h / self.tile_size)

    def check(self, z_level: int, t_col: int, t_row: int) -> None:
        """Raise :class:`TileNotFound` unless the tile exists."""
        if not 0 <= z_level < self.level_count:
            raise TileNotFound(
                f"level {z_level} is outside 0..{self.level_count - 1} for this slide"
            )
        cols, rows = self.tile_count(z_level)
        if not (0 <= t_col < cols and 0 <= t_row < rows):
            raise TileNotFound(
                f"tile {t_col}_{t_row} is outside level {z_level} ({cols} x {rows} tiles)"
            )

    def geometry(self, z_level: int, t_col: int, t_row: int) -> TileRequestGeometry:
        """Return the level-0 rectangle and output size of a tile (checked first)."""
        self.check(z_level, t_col, t_row)
        z_w, z_h = self.z_dimensions[z_level]
        l0_z_downsample = 2 ** (self.level_count - 1 - z_level)
        # Tile box in Deep Zoom pixels, overlap included where there is a neighbour.
        z_x0 = t_col * self.tile_size - (self.overlap if t_col else 0)
        z_y0 = t_row * self.tile_size - (self.overlap if t_row else 0)
        z_x1 = min(z_w, (t_col + 1) * self.tile_size + self.overlap)
        z_y1 = min(z_h, (t_row + 1) * self.tile_size + self.overlap)
        l0_x = z_x0 * l0_z_downsample
        l0_y = z_y0 * l0_z_downsample
        # The last row and column may cover less than a whole downsample step of level 0.
        l0_w = min((z_x1 - z_x0) * l0_z_downsample, self.l0_width - l0_x)
        l0_h = min((z_y1 - z_y0) * l0_z_downsample, self.l0_height - l0_y)
        stored = self.stored_by_z[z_level]
        full_tile = (z_x1 - z_x0) == self.tile_size and (z_y1 - z_y0) == self.tile_size
        return TileRequestGeometry(
            l0_x=l0_x,
            l0_y=l0_y,
            l0_width=max(1, l0_w),
            l0_height=max(1, l0_h),
            z_width=z_x1 - z_x0,
            z_height=z_y1 - z_y0,
            stored_level=stored if stored is not None and full_tile else None,
        )

    def dzi_xml(self, fmt: str) -> str:
        """Return the ``.dzi`` descriptor."""
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" '
            f'Format="{fmt}" Overlap="{self.overlap}" TileSize="{self.tile_size}">'
            f'<Size Height="{self.l0_height}" Width="{self.l0_width}"/></Image>'
        )


def choose_tile_size(info: SlideInfo) -> tuple[int, int]:
    """Return (tile size, overlap): the native square tile size if usable, else (254, 1).

    Native means square and within ``MIN_NATIVE_TILE``..``MAX_NATIVE_TILE``, shared by every
    level or else at least level 0's; see the module docstring for why.
    """
    sizes = {(lv.tile_width, lv.tile_height) for lv in info.levels}
    if len(sizes) == 1:
        tw, th = next(iter(sizes))
        if tw and tw == th and MIN_NATIVE_TILE <= tw <= MAX_NATIVE_TILE:
            return tw, 0
    # Mixed tiling: use the level-0 tile when square, to pass at least the finest level through.
    l0 = info.levels[0]
    if (
        l0.tile_width
        and l0.tile_width == l0.tile_height
        and MIN_NATIVE_TILE <= l0.tile_width <= MAX_NATIVE_TILE
    ):
        return l0.tile_width, 0
    return DEFAULT_TILE_SIZE, DEFAULT_OVERLAP
