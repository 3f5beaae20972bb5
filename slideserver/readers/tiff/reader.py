"""The reader for what OpenSlide does not open: OME-TIFF and generic pyramidal TIFF, via tifffile.

tifffile parses the structure once, at open (:mod:`.metadata`); afterwards every read is an
``os.pread`` on our own file descriptor plus tifffile's per-page decode function
(:mod:`.segments`), so readers share no file position and are safe to use from many threads.
A region decodes only the tiles (or strips) it covers; stored JPEG tiles go out as they are
(:mod:`slideserver.readers.passthrough`).
"""

from __future__ import annotations

import math

import tifffile
from PIL import Image

from slideserver.errors import (
    AssociatedImageNotFound,
    InvalidRegion,
    SlideUnreadable,
    TileNotFound,
)
from slideserver.models import EncodedTile, Level, SlideInfo, SlideSource
from slideserver.readers.base import SlideReader
from slideserver.readers.passthrough import Passthrough
from slideserver.readers.tiff.metadata import check_complete, read_structure
from slideserver.readers.tiff.segments import ImageLayout, SegmentFile


class TiffReader(SlideReader):
    """OME-TIFF and generic pyramidal TIFF through tifffile: pixels, metadata and passthrough."""

    name = "tiff"
    priority = 20

    @classmethod
    def detect(cls, source: SlideSource) -> str | None:
        """Claim OME-TIFF and tiled TIFF files (OpenSlide, tried first, takes those it knows)."""
        path = source.path
        if source.files or not path.is_file():
            return None
        try:
            with tifffile.TiffFile(path) as tif:
                if tif.is_ome:
                    return "ome-tiff"
                first = tif.pages.first
                tiled = first.is_tiled or any(
                    lvl.keyframe is not None and lvl.keyframe.is_tiled
                    for s in tif.series[:1]
                    for lvl in s.levels
                )
                if not tiled:
                    return None
                return "aperio" if tif.is_svs else "generic-tiff"
        except Exception:
            return None

    def __init__(self, source: SlideSource) -> None:
        super().__init__(source)
        path = source.path
        try:
            with tifffile.TiffFile(path) as tif:
                self._structure = read_structure(tif, path)
        except SlideUnreadable:
            raise
        except Exception as exc:
            raise SlideUnreadable(f"{path.name!r} is not a readable TIFF: {exc}") from exc
        check_complete(path, self._structure.levels)
        self._file = SegmentFile(path)
        self._passthrough = Passthrough(self._file, self._structure.levels)
        base = self._structure.levels[0]
        self._info = SlideInfo(
            format=self._structure.format,
            vendor=self._structure.vendor,
            levels=tuple(
                Level(
                    width=lay.width,
                    height=lay.height,
                    downsample=(base.width / lay.width + base.height / lay.height) / 2,
                    tile_width=lay.seg_width if lay.tiled else None,
                    tile_height=lay.seg_height if lay.tiled else None,
                )
                for lay in self._structure.levels
            ),
            mpp_x=self._structure.mpp[0],
            mpp_y=self._structure.mpp[1],
            objective_power=self._structure.objective_power,
            associated=tuple(sorted(self._structure.associated)),
            properties=dict(self._structure.properties),
        )

    @property
    def info(self) -> SlideInfo:
        return self._info

    def _level(self, level: int) -> tuple[ImageLayout, float]:
        if not 0 <= level < len(self._structure.levels):
            raise TileNotFound(f"level {level} outside 0..{len(self._structure.levels) - 1}")
        return self._structure.levels[level], self._info.levels[level].downsample

    def read_region(
        self, l0_x: int, l0_y: int, level: int, l_width: int, l_height: int
    ) -> Image.Image:
        layout, downsample = self._level(level)
        if l_width <= 0 or l_height <= 0:
            raise InvalidRegion(f"region size {l_width}x{l_height} is empty")
        l_x = math.floor(l0_x / downsample + 0.5)
        l_y = math.floor(l0_y / downsample + 0.5)
        pixels = self._file.read(layout, l_x, l_y, l_width, l_height)
        return Image.fromarray(pixels, "RGB")

    def read_encoded_tile(
        self, level: int, t_col: int, t_row: int, *, nowait: bool = False
    ) -> EncodedTile | None:
        self._level(level)
        return self._passthrough.read(level, t_col, t_row, nowait=nowait)

    def associated(self, name: str) -> Image.Image:
        layout = self._structure.associated.get(name)
        if layout is None:
            raise AssociatedImageNotFound(f"no associated image {name!r}")
        pixels = self._file.read(layout, 0, 0, layout.width, layout.height)
        return Image.fromarray(pixels, "RGB")

    def close(self) -> None:
        self._file.close()
