"""The reader for what OpenSlide does not open (OME-TIFF, QPI, pyramidal or striped TIFF): tifffile.

tifffile parses the structure once, at open (:mod:`.metadata`); afterwards every read is an
``os.pread`` on our own file descriptor plus tifffile's per-page decode function
(:mod:`.segments`), so readers share no file position and are safe to use from many threads.
A region decodes only the tiles (or strips) it covers; stored JPEG tiles go out as they are
(:mod:`slideserver.readers.passthrough`). Fluorescence channels are composited to RGB
(:mod:`.render`), each windowed to the data range found in the smallest level at open.

The TIFF Orientation tag is not applied: pixels are served in stored order, as OpenSlide lays out
the levels of the TIFFs it reads.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import tifffile
from PIL import Image

from slideserver.errors import (
    AssociatedImageNotFound,
    InvalidRegion,
    SlideUnreadable,
    TileNotFound,
    TileUnreadable,
)
from slideserver.models import EncodedTile, Level, SlideInfo, SlideSource
from slideserver.readers.base import SlideReader
from slideserver.readers.passthrough import Passthrough
from slideserver.readers.tiff.metadata import check_complete, read_structure
from slideserver.readers.tiff.render import Channel, Channels, Render
from slideserver.readers.tiff.segments import ImageLayout, SegmentFile

WINDOW_SEGMENTS = 256
"""Segments of the smallest level read at open for the channels' data range (evenly spaced;
all of them when there are fewer)."""


class TiffReader(SlideReader):
    """OME-TIFF and generic pyramidal TIFF through tifffile: pixels, metadata and passthrough."""

    name = "tiff"
    priority = 20

    @classmethod
    def detect(cls, source: SlideSource) -> str | None:
        """Claim TIFF files tifffile reads (OpenSlide, tried first, takes those it knows)."""
        path = source.path
        if source.files or not path.is_file():
            return None
        try:
            with tifffile.TiffFile(path) as tif:
                if tif.is_ome:
                    return "ome-tiff"
                if tif.is_qpi:
                    return "qptiff"
                if not tif.pages or not tif.series:
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
        structure = self._structure
        check_complete(path, structure.levels)
        for others in structure.channel_pages:
            check_complete(path, others)
        self._file = SegmentFile(path)
        self._render: Render | None = None
        if structure.channels:
            self._render = Channels(self._windowed(structure.channels))
        # channel images are never sent as they are: one grey JPEG is not the composite
        self._passthrough = Passthrough(
            self._file, [None if structure.channels else lay for lay in structure.levels]
        )
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
        pixels = self._file.read(
            layout,
            l_x,
            l_y,
            l_width,
            l_height,
            channels=self._structure.channel_pages[level],
            render=self._render,
        )
        return Image.fromarray(pixels, "RGB")

    def _windowed(self, channels: Sequence[Channel]) -> tuple[Channel, ...]:
        """Set each non-palette channel's window to its data range in the smallest level."""
        if all(ch.lut is not None for ch in channels):
            return tuple(channels)
        layouts = (self._structure.levels[-1], *self._structure.channel_pages[-1])
        count = layouts[0].cols * layouts[0].rows
        picks = np.unique(np.linspace(0, count - 1, min(count, WINDOW_SEGMENTS)).astype(int))
        low = np.full(len(channels), np.inf)
        high = np.full(len(channels), -np.inf)
        for index in picks:
            try:
                samples, x, y = self._file.decode_channels(layouts, int(index))
            except TileUnreadable:
                continue  # the index-time pixel check reports broken segments
            if samples is None:
                continue
            if samples.shape[-1] < len(channels):
                continue
            # edge tiles are padded beyond the image: not data
            samples = samples[: layouts[0].height - y, : layouts[0].width - x]
            values = samples.reshape(-1, samples.shape[-1])[:, : len(channels)]
            values = values.astype(np.float64)
            values[~np.isfinite(values)] = np.nan
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a segment all NaN
                low = np.fmin(low, np.nanmin(values, axis=0))
                high = np.fmax(high, np.nanmax(values, axis=0))
        fallback = _dtype_range(layouts[0].dtype)
        return tuple(
            ch
            if ch.lut is not None
            else dataclasses.replace(
                ch,
                window=(float(lo), float(hi))
                if math.isfinite(lo) and math.isfinite(hi)
                else fallback,
            )
            for ch, lo, hi in zip(channels, low, high, strict=True)
        )

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


def _dtype_range(dtype: np.dtype[Any]) -> tuple[float, float]:
    """The window of a channel whose data range is unknown: the sample type's range."""
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return 0.0, 1.0
