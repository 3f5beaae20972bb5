"""OpenSlide reader: the vendor formats (Aperio, Hamamatsu, MIRAX, Leica, Philips, Ventana, ...).

OpenSlide decodes; for TIFF-based formats whose levels are plain tile grids the stored JPEG
tiles go out as they are through :class:`slideserver.readers.passthrough.StoredTiles`.

An OpenSlide handle that hit a decoding error stays in an error state: every later call fails.
So a handle is replaced by a fresh one after a failure, and the failed read is retried once on
it; only the request whose tile is really corrupt fails. Handles are reference counted so a
handle another thread is still reading from is closed only when that read ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import openslide
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
from slideserver.readers.passthrough import StoredTiles

T = TypeVar("T")

PASSTHROUGH_VENDORS = frozenset({"aperio", "generic-tiff", "philips"})
"""TIFF-based formats whose OpenSlide levels are exactly one TIFF image's tile grid.

Not Ventana (tiles overlap and are placed by OpenSlide), Leica (levels are placed within a
collection), Hamamatsu (JPEG restart intervals, not TIFF tiles) nor MIRAX (not TIFF).
"""
DELEGATED_VENDORS = frozenset({"dicom"})
"""Formats OpenSlide knows but another reader serves (wsidicom reads DICOM series)."""

_ERRORS: tuple[type[Exception], ...] = (openslide.OpenSlideError, OSError, ValueError)
"""What openslide-python raises for bad files and failed reads (its unsupported-format error
is an OpenSlideError)."""


@dataclass
class _Handle:
    """An OpenSlide handle with the number of reads in flight on it."""

    slide: openslide.OpenSlide
    users: int = 0
    retired: bool = False


def _has_subifd_pyramid_or_ome(path: str) -> bool:
    """Whether a TIFF OpenSlide calls generic-tiff is better read by TiffReader (QPI too)."""
    try:
        with tifffile.TiffFile(path) as tif:
            return bool(tif.is_ome or tif.is_qpi or tif.pages.first.subifds)
    except Exception:
        return False


def _parse_float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _background(properties: Any) -> tuple[int, int, int]:
    """Return ``openslide.background-color`` as RGB, white when absent or malformed."""
    value = properties.get(openslide.PROPERTY_NAME_BACKGROUND_COLOR)
    try:
        rgb = int(value, 16)
    except (TypeError, ValueError):
        return 255, 255, 255
    return (rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255


def _flatten(rgba: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Composite OpenSlide's RGBA (transparent outside the scanned area) on the background."""
    out = Image.new("RGB", rgba.size, background)
    out.paste(rgba, mask=rgba.getchannel("A"))
    return out


class OpenSlideReader(SlideReader):
    """Slides OpenSlide opens, with the stored-JPEG fast path for TIFF-based ones."""

    name = "openslide"
    priority = 10

    @classmethod
    def detect(cls, source: SlideSource) -> str | None:
        """Return OpenSlide's vendor name, or None for OME-TIFF, SubIFD pyramids and DICOM."""
        if source.files:
            return None  # multi-file slides (DICOM series) belong to their own reader
        path = str(source.path)
        try:
            vendor = openslide.OpenSlide.detect_format(path)
        except Exception:
            return None
        if not vendor or vendor in DELEGATED_VENDORS:
            return None
        if vendor == "generic-tiff" and _has_subifd_pyramid_or_ome(path):
            return None
        return str(vendor)

    def __init__(self, source: SlideSource) -> None:
        super().__init__(source)
        self._lock = threading.Lock()
        self._closed = False
        self._handle = _Handle(self._open())
        slide = self._handle.slide
        props = {str(k): str(v) for k, v in slide.properties.items()}
        self._background = _background(props)
        vendor = props.get(openslide.PROPERTY_NAME_VENDOR) or None
        levels: list[Level] = []
        for i, ((width, height), downsample) in enumerate(
            zip(slide.level_dimensions, slide.level_downsamples, strict=True)
        ):
            tile_w = props.get(f"openslide.level[{i}].tile-width")
            tile_h = props.get(f"openslide.level[{i}].tile-height")
            levels.append(
                Level(
                    width=int(width),
                    height=int(height),
                    downsample=float(downsample),
                    tile_width=int(tile_w) if tile_w else None,
                    tile_height=int(tile_h) if tile_h else None,
                )
            )
        if not levels:
            raise SlideUnreadable(f"{source.path.name!r} has no pyramid levels")
        self._info = SlideInfo(
            format=vendor or "openslide",
            vendor=vendor,
            levels=tuple(levels),
            mpp_x=_parse_float(props.get(openslide.PROPERTY_NAME_MPP_X)),
            mpp_y=_parse_float(props.get(openslide.PROPERTY_NAME_MPP_Y)),
            objective_power=_parse_float(props.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER)),
            associated=tuple(sorted(str(n) for n in slide.associated_images)),
            properties=props,
        )
        self._stored: StoredTiles | None = None
        self._stored_levels: frozenset[int] = frozenset()
        if vendor in PASSTHROUGH_VENDORS:
            # built here, off the request path (readers are opened in a worker thread): one
            # tifffile parse of a file OpenSlide has just read; other vendors never need it
            self._open_stored_tiles()

    def _open(self) -> openslide.OpenSlide:
        try:
            return openslide.OpenSlide(str(self.source.path))
        except _ERRORS as exc:
            raise SlideUnreadable(
                f"OpenSlide cannot open {self.source.path.name!r}: {exc}"
            ) from exc

    @property
    def info(self) -> SlideInfo:
        return self._info

    # --- handle management -------------------------------------------------------------------

    def _acquire(self) -> _Handle:
        with self._lock:
            if self._closed:
                raise SlideUnreadable(f"{self.source.path.name!r} is closed")
            handle = self._handle
            handle.users += 1
            return handle

    def _release(self, handle: _Handle) -> None:
        with self._lock:
            handle.users -= 1
            close = handle.retired and handle.users == 0
        if close:
            handle.slide.close()

    def _adopt(self, failed: _Handle, fresh: openslide.OpenSlide) -> None:
        """Make ``fresh`` the shared handle if ``failed`` still is; else close ``fresh``."""
        close_failed = False
        with self._lock:
            adopt = not self._closed and self._handle is failed
            if adopt:
                failed.retired = True
                self._handle = _Handle(fresh)
                close_failed = failed.users == 0
        if not adopt:
            fresh.close()
        elif close_failed:
            failed.slide.close()

    def _call(self, what: str, fn: Callable[[openslide.OpenSlide], T]) -> T:
        """Run ``fn`` on the shared handle; after an OpenSlide error, retry on a private one.

        The shared handle may have been put in the error state by another request's corrupt
        tile; a private fresh handle tells whether *this* read fails. Either way the shared
        handle is replaced, so the error stays with the request that caused it.
        """
        handle = self._acquire()
        try:
            return fn(handle.slide)
        except _ERRORS:
            pass  # handled below, once the handle is released
        finally:
            self._release(handle)
        private = self._open()
        try:
            result = fn(private)
        except _ERRORS as exc:
            private.close()
            self._adopt(handle, self._open())
            raise TileUnreadable(f"cannot read {what} of {self.source.path.name!r}: {exc}") from exc
        self._adopt(handle, private)
        return result

    # --- reading ---------------------------------------------------------------------------------

    def read_region(
        self, l0_x: int, l0_y: int, level: int, l_width: int, l_height: int
    ) -> Image.Image:
        if not 0 <= level < len(self._info.levels):
            raise TileNotFound(f"level {level} outside 0..{len(self._info.levels) - 1}")
        if l_width <= 0 or l_height <= 0:
            raise InvalidRegion(f"region size {l_width}x{l_height} is empty")
        rgba = self._call(
            f"region ({l0_x}, {l0_y}) level {level}",
            lambda slide: slide.read_region((l0_x, l0_y), level, (l_width, l_height)),
        )
        return _flatten(rgba, self._background)

    def associated(self, name: str) -> Image.Image:
        if name not in self._info.associated:
            raise AssociatedImageNotFound(f"no associated image {name!r}")
        rgba = self._call(f"associated image {name!r}", lambda s: s.associated_images[name])
        return _flatten(rgba.convert("RGBA"), self._background)

    def _open_stored_tiles(self) -> None:
        """Open the passthrough path for the levels whose tile grid is OpenSlide's."""
        try:
            stored = StoredTiles(
                self.source.path, [(lv.width, lv.height) for lv in self._info.levels]
            )
        except SlideUnreadable:
            return  # OpenSlide reads it; every tile is rendered
        self._stored_levels = frozenset(
            i
            for i, lv in enumerate(self._info.levels)
            if lv.tile_width is not None and stored.tile_size(i) == (lv.tile_width, lv.tile_height)
        )
        self._stored = stored

    def read_encoded_tile(
        self, level: int, t_col: int, t_row: int, *, nowait: bool = False
    ) -> EncodedTile | None:
        if not 0 <= level < len(self._info.levels):
            raise TileNotFound(f"level {level} outside 0..{len(self._info.levels) - 1}")
        if self._closed:
            raise SlideUnreadable(f"{self.source.path.name!r} is closed")
        stored = self._stored
        if stored is None or level not in self._stored_levels:
            return None
        return stored.read(level, t_col, t_row, nowait=nowait)

    def read_jpeg2000_tile(self, level: int, t_col: int, t_row: int) -> EncodedTile | None:
        if not 0 <= level < len(self._info.levels):
            raise TileNotFound(f"level {level} outside 0..{len(self._info.levels) - 1}")
        if self._closed:
            raise SlideUnreadable(f"{self.source.path.name!r} is closed")
        stored = self._stored
        info = self._info.levels[level]
        if stored is None or info.tile_width is None:
            return None
        if stored.jpeg2000_tile_size(level) != (info.tile_width, info.tile_height):
            return None  # not JPEG 2000, or not OpenSlide's tile grid
        return stored.read_jpeg2000(level, t_col, t_row)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            handle = self._handle
            handle.retired = True
            close_now = handle.users == 0
            stored, self._stored = self._stored, None
        if close_now:
            handle.slide.close()
        if stored is not None:
            stored.close()
