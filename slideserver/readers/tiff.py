"""tifffile-based reading: OME-TIFF and generic pyramidal TIFF, and stored JPEG tile passthrough.

Two public pieces:

- :class:`StoredTiles` reads the stored bytes of one tile of a TIFF pyramid level and makes them
  a stand-alone JPEG (tables merged, Adobe APP14 where the stream is RGB-coded). Any reader of a
  TIFF-based format (OpenSlide's Aperio and generic-tiff included) borrows it for the fast path.
- :class:`TiffReader` is the reader for what OpenSlide does not open: OME-TIFF (SubIFD or
  multi-series pyramids) and SubIFD pyramids.

tifffile parses the structure once, at open; afterwards every read is an ``os.pread`` on our own
file descriptor plus tifffile's per-page decode function, so readers share no file position and
are safe to use from many threads. A region decodes only the tiles (or strips) it covers.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from numpy.typing import NDArray
from PIL import Image

from slideserver.codecs import jpeg
from slideserver.errors import (
    AssociatedImageNotFound,
    BadRequest,
    SlideUnreadable,
    TileNotFound,
    TileUnreadable,
)
from slideserver.models import EncodedTile, Level, SlideInfo, SlideSource
from slideserver.readers.base import SlideReader, WouldBlock

RWF_NOWAIT: int = getattr(os, "RWF_NOWAIT", 0)
"""Linux's "fail rather than wait for the disk" read flag (0 where there is none)."""

RGBArray = NDArray[np.uint8]

ASSOCIATED_NAMES: Mapping[str, str] = {
    "label": "label",
    "macro": "macro",
    "overview": "macro",
    "thumbnail": "thumbnail",
}
"""Series names (lower case) that are associated images, and the name we publish them under."""

MAX_ASSOCIATED_PIXELS = 100_000_000
"""Associated images are decoded whole; anything larger is not a label or macro."""

_LENGTH_UNITS_UM: Mapping[str, float] = {
    "pm": 1e-6,
    "Å": 1e-4,
    "nm": 1e-3,
    "µm": 1.0,
    "um": 1.0,
    "μm": 1.0,  # Greek mu, as some writers spell it
    "micron": 1.0,
    "mm": 1e3,
    "cm": 1e4,
    "m": 1e6,
}
_RESOLUTION_UNIT_UM = {2: 25_400.0, 3: 10_000.0}  # TIFF ResolutionUnit: inch, centimetre
_PROPERTY_TAGS = (
    "ImageDescription",
    "Make",
    "Model",
    "Software",
    "DateTime",
    "Artist",
    "HostComputer",
    "Copyright",
    "DocumentName",
    "XResolution",
    "YResolution",
    "ResolutionUnit",
)


@dataclass(frozen=True)
class _Layout:
    """Everything needed to read one TIFF image (page) without tifffile's file handle."""

    width: int
    height: int
    tiled: bool
    seg_width: int
    """Tile width, or the image width for strips."""
    seg_height: int
    """Tile height, or rows per strip."""
    cols: int
    rows: int
    planes: int
    """1 for interleaved samples; samples per pixel for planar-separate images."""
    samples: int
    extrasamples: tuple[int, ...]
    photometric: int
    compression: int
    bits: int
    dtype: np.dtype[Any]
    offsets: tuple[int, ...]
    bytecounts: tuple[int, ...]
    jpegtables: bytes | None
    decode: Callable[..., tuple[Any, tuple[int, ...], tuple[int, ...]]]

    @property
    def passthrough(self) -> bool:
        """Whether stored tiles are 8-bit JPEG a browser can show as they are."""
        return (
            self.tiled
            and self.compression == jpeg.TIFF_COMPRESSION_JPEG
            and self.bits == 8
            and self.planes == 1
            and self.samples in (1, 3)
            and not self.extrasamples
        )


def _layout(page: Any) -> _Layout:
    """Describe a tifffile ``TiffPage`` (or ``TiffFrame``) for reads through our own descriptor."""
    key = page.keyframe
    width, height = int(key.imagewidth), int(key.imagelength)
    if width <= 0 or height <= 0 or int(getattr(key, "imagedepth", 1)) != 1:
        raise SlideUnreadable(f"unsupported TIFF image geometry {width}x{height}")
    tiled = bool(key.is_tiled)
    if tiled:
        seg_w, seg_h = int(key.tilewidth), int(key.tilelength)
    else:
        seg_w, seg_h = width, min(int(key.rowsperstrip) or height, height)
    if seg_w <= 0 or seg_h <= 0:
        raise SlideUnreadable("TIFF tile or strip size is zero")
    cols, rows = -(-width // seg_w), -(-height // seg_h)
    samples = int(key.samplesperpixel)
    planes = samples if int(key.planarconfig) == 2 else 1
    offsets = tuple(int(o) for o in page.dataoffsets)
    counts = tuple(int(c) for c in page.databytecounts)
    if len(offsets) != planes * cols * rows or len(counts) != len(offsets):
        raise SlideUnreadable(
            f"TIFF image has {len(offsets)} segments, its geometry needs {planes * cols * rows}"
        )
    dtype = key.dtype
    if dtype is None or np.dtype(dtype) not in (np.dtype(np.uint8), np.dtype(np.uint16)):
        raise SlideUnreadable(f"unsupported TIFF sample type {dtype}")
    photometric = int(key.photometric)
    if photometric not in (0, 1, 2, 6):  # min-is-white, min-is-black, RGB, YCbCr
        raise SlideUnreadable(f"unsupported TIFF photometric interpretation {photometric}")
    try:
        decode = key.decode  # built once here: tifffile caches it on a shared dict
    except Exception as exc:
        raise SlideUnreadable(f"TIFF image cannot be decoded: {exc}") from exc
    return _Layout(
        width=width,
        height=height,
        tiled=tiled,
        seg_width=seg_w,
        seg_height=seg_h,
        cols=cols,
        rows=rows,
        planes=planes,
        samples=samples,
        extrasamples=tuple(int(e) for e in key.extrasamples),
        photometric=photometric,
        compression=int(key.compression),
        bits=int(key.bitspersample) if isinstance(key.bitspersample, int) else 0,
        dtype=np.dtype(dtype),
        offsets=offsets,
        bytecounts=counts,
        jpegtables=bytes(key.jpegtables) if key.jpegtables else None,
        decode=decode,
    )


class _SegmentFile:
    """A file descriptor read with ``os.pread`` only: no shared position, safe across threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except OSError as exc:
            raise SlideUnreadable(f"cannot open {path.name!r}: {exc.strerror}") from exc
        self._lock = threading.Lock()
        self._nowait = RWF_NOWAIT != 0

    def segment(self, layout: _Layout, index: int, *, nowait: bool = False) -> bytes | None:
        """Return the stored bytes of one segment, ``None`` for a sparse (never written) one.

        With ``nowait``, the bytes come from the page cache or :class:`WouldBlock` is raised
        (``preadv`` with ``RWF_NOWAIT``): the event loop may call it, never waiting for a disk.
        """
        offset, count = layout.offsets[index], layout.bytecounts[index]
        if count == 0 or offset == 0:
            return None
        fd = self._fd
        if fd is None:
            raise SlideUnreadable(f"{self.path.name!r} is closed")
        if nowait:
            return self._segment_nowait(fd, offset, count)
        try:
            data = os.pread(fd, count, offset)
        except OSError as exc:
            raise TileUnreadable(f"cannot read a tile of {self.path.name!r}: {exc}") from exc
        if len(data) != count:
            raise TileUnreadable(f"tile at byte {offset} of {self.path.name!r} is truncated")
        return data

    def _segment_nowait(self, fd: int, offset: int, count: int) -> bytes:
        if not self._nowait:
            raise WouldBlock
        buffer = bytearray(count)
        try:
            got = os.preadv(fd, (buffer,), offset, RWF_NOWAIT)
        except BlockingIOError:
            raise WouldBlock from None
        except OSError:
            # No RWF_NOWAIT on this file system (or another fault): the blocking read decides.
            self._nowait = False
            raise WouldBlock from None
        if got != count:
            raise WouldBlock  # partly cached, or truncated: the blocking read tells which
        return bytes(buffer)

    def decode_segment(self, layout: _Layout, index: int) -> tuple[RGBArray | None, int, int]:
        """Decode one segment to RGB; return it with its level-pixel origin (x, y).

        Planar-separate images are assembled from the segment at ``index`` of every plane.
        """
        per_plane = layout.cols * layout.rows
        planes: list[NDArray[Any]] = []
        x = y = 0
        for plane in range(layout.planes):
            data = self.segment(layout, plane * per_plane + index)
            if data is None:
                return (
                    None,
                    (index % layout.cols) * layout.seg_width,
                    (index // layout.cols) * layout.seg_height,
                )
            try:
                arr, where, _shape = layout.decode(
                    data, plane * per_plane + index, jpegtables=layout.jpegtables
                )
            except Exception as exc:  # any codec error means this tile is corrupt
                raise TileUnreadable(
                    f"cannot decode a tile of {self.path.name!r}: {type(exc).__name__}"
                ) from exc
            if arr is None:
                raise TileUnreadable(f"empty tile in {self.path.name!r}")
            y, x = int(where[2]), int(where[3])
            arr = np.asarray(arr)
            planes.append(arr.reshape(arr.shape[-3], arr.shape[-2], -1))
        pixels = planes[0] if len(planes) == 1 else np.concatenate(planes, axis=-1)
        return _to_rgb(pixels, layout), x, y

    def read(self, layout: _Layout, l_x: int, l_y: int, l_w: int, l_h: int) -> RGBArray:
        """Return the ``l_w`` x ``l_h`` region at (``l_x``, ``l_y``), white outside the image."""
        out = np.full((l_h, l_w, 3), 255, np.uint8)
        x0, y0 = max(l_x, 0), max(l_y, 0)
        x1, y1 = min(l_x + l_w, layout.width), min(l_y + l_h, layout.height)
        if x0 >= x1 or y0 >= y1:
            return out
        for t_row in range(y0 // layout.seg_height, (y1 - 1) // layout.seg_height + 1):
            for t_col in range(x0 // layout.seg_width, (x1 - 1) // layout.seg_width + 1):
                pixels, s_x, s_y = self.decode_segment(layout, t_row * layout.cols + t_col)
                if pixels is None:
                    continue  # sparse tile: glass
                # intersection, in level pixels
                ix0, iy0 = max(x0, s_x), max(y0, s_y)
                ix1 = min(x1, s_x + pixels.shape[1])
                iy1 = min(y1, s_y + pixels.shape[0])
                if ix0 >= ix1 or iy0 >= iy1:
                    continue
                out[iy0 - l_y : iy1 - l_y, ix0 - l_x : ix1 - l_x] = pixels[
                    iy0 - s_y : iy1 - s_y, ix0 - s_x : ix1 - s_x
                ]
        return out

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _to_rgb(pixels: NDArray[Any], layout: _Layout) -> RGBArray:
    """Convert decoded samples to 8-bit RGB; alpha is composited on white."""
    if pixels.dtype != np.uint8:
        pixels = (pixels >> 8).astype(np.uint8)  # uint16: keep the high byte
    if layout.photometric == 0:  # min-is-white
        pixels = 255 - pixels
    channels = pixels.shape[-1]
    if channels in (1, 2):
        gray = pixels[..., :1]
        alpha = pixels[..., 1:2] if channels == 2 and layout.extrasamples else None
        rgb = np.repeat(gray, 3, axis=-1)
    else:
        rgb = pixels[..., :3]
        alpha = pixels[..., 3:4] if channels >= 4 and layout.extrasamples else None
    if alpha is not None:
        a = alpha.astype(np.float32) / 255.0
        color = rgb.astype(np.float32)
        if layout.extrasamples[0] != 1:  # unassociated alpha: colour not yet multiplied
            color *= a
        rgb = np.clip(color + 255.0 * (1.0 - a) + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def _check_jpeg_tile(data: bytes, layout: _Layout) -> bool:
    """Whether a stored tile is a complete JPEG of the native tile size (cheap header check).

    Raises :class:`TileUnreadable` for a stream that is cut or not JPEG at all; returns False
    for a well-formed stream of another size (it would not decode to the native tile).
    """
    try:
        header = jpeg.frame_header(data)
    except ValueError as exc:
        raise TileUnreadable(f"stored JPEG tile is corrupt: {exc}") from exc
    if not jpeg.ends_with_eoi(data):
        raise TileUnreadable("stored JPEG tile is truncated: no EOI marker")
    return (
        header.width == layout.seg_width
        and header.height == layout.seg_height
        and header.precision == 8
        and header.components == layout.samples
    )


def _slow_encoded_tile(data: bytes, layout: _Layout) -> EncodedTile | None:
    """The full header walk: check the tile, merge the tables, add APP14 where needed."""
    if not _check_jpeg_tile(data, layout):
        return None
    try:
        stream = jpeg.merge_jpeg_tables(data, layout.jpegtables)
        if jpeg.needs_adobe_rgb_marker(
            layout.photometric, layout.compression, layout.samples, stream
        ):
            stream = jpeg.add_adobe_rgb_marker(stream)
    except ValueError as exc:
        raise TileUnreadable(f"stored JPEG tile or tables are corrupt: {exc}") from exc
    return EncodedTile(stream, "image/jpeg", layout.seg_width, layout.seg_height)


@dataclass(frozen=True)
class _Splice:
    """How the tiles of one level become stand-alone JPEGs without walking their headers."""

    head: bytes
    """The sample tile from SOI through its SOF segment. A tile that starts with these bytes has
    the sample's (checked) frame header and the same segments before it."""
    prefix: bytes
    """:func:`jpeg.splice_prefix` of the level's tables."""


_SAMPLE_TILES = 8
"""Tiles tried, in order, for a level's sample (sparse and malformed ones are skipped)."""


def _plan_splice(file: _SegmentFile, layout: _Layout) -> _Splice | None:
    """Decide once per level, from its first readable tile, whether tiles can be spliced.

    None (the full header walk for every tile) when no sample is found, the sample does not
    match the level's tile geometry, the tables are malformed, or the sample carries a JFIF or
    Adobe segment while the colour marker is to be decided (that decision then depends on
    each tile's header).
    """
    mark_rgb = (
        layout.photometric == jpeg.TIFF_PHOTOMETRIC_RGB
        and layout.compression == jpeg.TIFF_COMPRESSION_JPEG
        and layout.samples == 3
    )
    for index in range(min(_SAMPLE_TILES, layout.cols * layout.rows)):
        try:
            data = file.segment(layout, index)
            if data is None or not _check_jpeg_tile(data, layout):
                continue
            sof = next(s for s in jpeg.iter_header_segments(data) if s.marker in jpeg.SOF_MARKERS)
            if mark_rgb and jpeg.carries_colour_marker(data):
                return None
            return _Splice(
                head=data[: sof.end],
                prefix=jpeg.splice_prefix(layout.jpegtables, mark_rgb=mark_rgb),
            )
        except (TileUnreadable, ValueError, StopIteration):
            continue
    return None


class _Passthrough:
    """Sends the stored JPEG tiles of a set of levels, each level's splice planned at open.

    Planning reads a sample tile, which the event loop must not wait for, so it is done when the
    slide is opened (in a worker thread): ``nowait`` reads then never need it.
    """

    def __init__(self, file: _SegmentFile, layouts: Sequence[_Layout | None]) -> None:
        self._file = file
        self._layouts = tuple(layouts)
        self._plans = tuple(
            _plan_splice(file, layout) if layout is not None and layout.passthrough else None
            for layout in self._layouts
        )

    def _plan(self, level: int, layout: _Layout) -> _Splice | None:
        """The splice planned for ``level`` at open (``layout`` is the level's, for callers)."""
        return self._plans[level]

    def read(
        self, level: int, t_col: int, t_row: int, *, nowait: bool = False
    ) -> EncodedTile | None:
        """Return the stored tile as a stand-alone JPEG, or None when it must be rendered."""
        layout = self._layouts[level]
        if layout is None or not layout.passthrough:
            return None
        if not (0 <= t_col < layout.cols and 0 <= t_row < layout.rows):
            raise TileNotFound(
                f"tile ({t_col}, {t_row}) outside the {layout.cols}x{layout.rows} tile grid"
            )
        data = self._file.segment(layout, t_row * layout.cols + t_col, nowait=nowait)
        if data is None:
            return None
        plan = self._plans[level]
        if plan is None or not data.startswith(plan.head):
            return _slow_encoded_tile(data, layout)
        # same frame header as the checked sample: only the end is left to check
        if len(data) < len(plan.head) + 4 or not jpeg.ends_with_eoi(data):
            raise TileUnreadable("stored JPEG tile is truncated: no EOI marker")
        return EncodedTile(
            jpeg.splice(plan.prefix, data), "image/jpeg", layout.seg_width, layout.seg_height
        )


def _all_pages(tif: tifffile.TiffFile) -> list[Any]:
    """Top-level pages, then the pages of every series level (SubIFDs included)."""
    pages: list[Any] = list(tif.pages)
    for series in tif.series:
        for level in series.levels:
            if level.pages:
                pages.append(level.pages[0])
    return [p for p in pages if p is not None]


class StoredTiles:
    """Stored JPEG tiles of a TIFF pyramid, ready to send: the passthrough fast path.

    ``level_sizes`` are the (width, height) of the caller's pyramid levels; each is matched to
    the TIFF image of exactly that size (tiled ones first, SubIFDs included). ``read`` answers
    ``None`` for levels that are not JPEG-tiled, so the caller renders those.
    """

    def __init__(self, path: Path, level_sizes: Sequence[tuple[int, int]]) -> None:
        self.path = Path(path)
        layouts: list[_Layout | None] = []
        try:
            with tifffile.TiffFile(self.path) as tif:
                pages = _all_pages(tif)
                for size in level_sizes:
                    layouts.append(self._match(pages, size))
        except SlideUnreadable:
            raise
        except Exception as exc:
            raise SlideUnreadable(f"{self.path.name!r} is not a readable TIFF: {exc}") from exc
        self._layouts = tuple(layouts)
        self._file = _SegmentFile(self.path)
        self._passthrough = _Passthrough(self._file, self._layouts)

    @staticmethod
    def _match(pages: Iterable[Any], size: tuple[int, int]) -> _Layout | None:
        candidates = [
            p for p in pages if (int(p.keyframe.imagewidth), int(p.keyframe.imagelength)) == size
        ]
        candidates.sort(key=lambda p: not p.keyframe.is_tiled)
        for page in candidates:
            try:
                return _layout(page)
            except SlideUnreadable:
                continue
        return None

    def tile_size(self, level: int) -> tuple[int, int] | None:
        """Return the stored tile size of ``level`` if its tiles can pass through, else None."""
        layout = self._layouts[level] if 0 <= level < len(self._layouts) else None
        if layout is None or not layout.passthrough:
            return None
        return layout.seg_width, layout.seg_height

    def read(
        self, level: int, t_col: int, t_row: int, *, nowait: bool = False
    ) -> EncodedTile | None:
        """Return the stored tile as a stand-alone JPEG, or None when it must be rendered.

        With ``nowait``, raise :class:`WouldBlock` rather than wait for the disk.
        """
        if not 0 <= level < len(self._layouts):
            raise TileNotFound(f"level {level} outside 0..{len(self._layouts) - 1}")
        return self._passthrough.read(level, t_col, t_row, nowait=nowait)

    def close(self) -> None:
        """Close the file descriptor."""
        self._file.close()


@dataclass(frozen=True)
class _Structure:
    """What TiffReader learns at open."""

    format: str
    vendor: str | None
    levels: tuple[_Layout, ...]
    associated: Mapping[str, _Layout]
    mpp: tuple[float | None, float | None]
    objective_power: float | None
    properties: Mapping[str, str]


def _ome_root(tif: tifffile.TiffFile) -> ET.Element | None:
    xml = tif.ome_metadata
    if not xml:
        return None
    try:
        return ET.fromstring(xml)
    except ET.ParseError:
        return None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _ome_image(root: ET.Element, name: str) -> ET.Element | None:
    images = [e for e in root if _local(e.tag) == "Image"]
    for image in images:
        if image.get("Name", "") == name:
            return image
    return images[0] if images else None


def _ome_optics(
    root: ET.Element | None, image_name: str
) -> tuple[float | None, float | None, float | None, dict[str, str]]:
    """Return (mpp_x, mpp_y, objective power, properties) from OME-XML."""
    props: dict[str, str] = {}
    if root is None:
        return None, None, None, props
    image = _ome_image(root, image_name)
    mpp: list[float | None] = [None, None]
    objective_power: float | None = None
    if image is not None:
        props["ome.Image.Name"] = image.get("Name", "")
        pixels = next((e for e in image if _local(e.tag) == "Pixels"), None)
        if pixels is not None:
            for i, axis in enumerate("XY"):
                value = pixels.get(f"PhysicalSize{axis}")
                unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
                if value is None:
                    continue
                props[f"ome.PhysicalSize{axis}"] = value
                props[f"ome.PhysicalSize{axis}Unit"] = unit
                try:
                    um = float(value) * _LENGTH_UNITS_UM[unit]
                except (KeyError, ValueError):
                    continue
                mpp[i] = um if um > 0 and math.isfinite(um) else None
        settings = next((e for e in image if _local(e.tag) == "ObjectiveSettings"), None)
        wanted = settings.get("ID") if settings is not None else None
        for objective in root.iter():
            if _local(objective.tag) != "Objective":
                continue
            if wanted is not None and objective.get("ID") != wanted:
                continue
            magnification = objective.get("NominalMagnification")
            if magnification:
                props["ome.Objective.NominalMagnification"] = magnification
                with contextlib.suppress(ValueError):
                    objective_power = float(magnification)
                break
    return mpp[0], mpp[1], objective_power, props


def _svs_optics(description: str) -> tuple[float | None, float | None, dict[str, str]]:
    """Return (mpp, objective power, properties) from an Aperio ImageDescription."""
    try:
        meta = tifffile.tifffile.svs_description_metadata(description)
    except Exception:
        return None, None, {}
    props = {f"aperio.{k}": str(v) for k, v in meta.items() if k != "Header"}
    mpp, app_mag = meta.get("MPP"), meta.get("AppMag")
    return (
        float(mpp) if isinstance(mpp, int | float) and mpp > 0 else None,
        float(app_mag) if isinstance(app_mag, int | float) and app_mag > 0 else None,
        props,
    )


def _tag_mpp(page: Any) -> tuple[float | None, float | None]:
    """Microns per pixel from the TIFF resolution tags, when they are in physical units."""
    unit_um = _RESOLUTION_UNIT_UM.get(int(page.tags.valueof(296, 2)))
    if unit_um is None:
        return None, None
    result: list[float | None] = []
    for code in (282, 283):
        value = page.tags.valueof(code)
        try:
            num, den = value
            per_unit = num / den
        except (TypeError, ValueError, ZeroDivisionError):
            result.append(None)
            continue
        mpp = unit_um / per_unit if per_unit > 0 else 0.0
        result.append(mpp if 0 < mpp < 50 else None)  # 72 dpi screenshots are no slides
    return result[0], result[1]


def _tag_properties(page: Any) -> dict[str, str]:
    props: dict[str, str] = {}
    for name in _PROPERTY_TAGS:
        tag = page.tags.get(name)
        if tag is None:
            continue
        value = tag.value
        if isinstance(value, tuple) and len(value) == 2 and name.endswith("Resolution"):
            num, den = value
            value = num / den if den else 0
        elif isinstance(value, bytes):
            value = value.decode("latin-1")
        elif hasattr(value, "value"):
            value = value.value  # enums
        props[f"tiff.{name}"] = str(value).replace("\x00", "")
    return props


def _series_pages(series: Any) -> list[Any]:
    """First page of every level of a series, largest first."""
    pages = [lvl.pages[0] for lvl in series.levels if lvl.pages and lvl.pages[0] is not None]
    return sorted(pages, key=lambda p: -int(p.keyframe.imagewidth))


def _pyramid_from_top_pages(tif: tifffile.TiffFile) -> list[Any]:
    """Tiled top-level pages of decreasing size with page 0's aspect: a plain TIFF pyramid."""
    first: Any = tif.pages.first
    pages: list[Any] = [first]
    w0, h0 = int(first.imagewidth), int(first.imagelength)
    for page in list(tif.pages)[1:]:
        key: Any = page.keyframe
        w, h = int(key.imagewidth), int(key.imagelength)
        if not key.is_tiled or w >= int(pages[-1].keyframe.imagewidth):
            continue
        if abs(w0 / w - h0 / h) / (w0 / w) > 0.02:
            continue
        if key.samplesperpixel != first.samplesperpixel or key.dtype != first.dtype:
            continue
        pages.append(page)
    return pages


def _structure(tif: tifffile.TiffFile, path: Path) -> _Structure:
    """Map a TIFF's series to pyramid levels and associated images."""
    is_ome = bool(tif.is_ome)
    series = list(tif.series)
    if not series:
        raise SlideUnreadable(f"{path.name!r} holds no images")
    assoc_series = {
        ASSOCIATED_NAMES[s.name.strip().lower()]: s
        for s in reversed(series)
        if (s.name or "").strip().lower() in ASSOCIATED_NAMES
    }
    main_candidates = [s for s in series if s not in assoc_series.values()]
    if not main_candidates:
        raise SlideUnreadable(f"{path.name!r} holds only associated images")
    main = max(main_candidates, key=lambda s: int(np.prod(s.levels[0].shape[:2])))
    pages = _series_pages(main)
    if len(pages) == 1 and not is_ome and main is series[0]:
        pages = _pyramid_from_top_pages(tif)
    levels = tuple(_layout(p) for p in pages)
    associated: dict[str, _Layout] = {}
    for name, s in assoc_series.items():
        try:
            layout = _layout(_series_pages(s)[-1 if name == "thumbnail" else 0])
        except (SlideUnreadable, IndexError):
            continue
        if layout.width * layout.height <= MAX_ASSOCIATED_PIXELS:
            associated[name] = layout

    first = pages[0].keyframe
    props = _tag_properties(first)
    mpp_x, mpp_y = _tag_mpp(first)
    objective: float | None = None
    if is_ome:
        o_x, o_y, objective, ome_props = _ome_optics(_ome_root(tif), main.name or "")
        props.update(ome_props)
        mpp_x, mpp_y = o_x or mpp_x, o_y or mpp_y
    if tif.is_svs:
        svs_mpp, objective, svs_props = _svs_optics(first.description)
        props.update(svs_props)
        mpp_x = mpp_y = svs_mpp or mpp_x
    fmt = "ome-tiff" if is_ome else ("aperio" if tif.is_svs else "generic-tiff")
    vendor = "aperio" if tif.is_svs else props.get("tiff.Make") or None
    props["slideserver.reader"] = "tiff"
    return _Structure(
        format=fmt,
        vendor=vendor,
        levels=levels,
        associated=associated,
        mpp=(mpp_x, mpp_y),
        objective_power=objective,
        properties=props,
    )


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
                self._structure = _structure(tif, path)
        except SlideUnreadable:
            raise
        except Exception as exc:
            raise SlideUnreadable(f"{path.name!r} is not a readable TIFF: {exc}") from exc
        _check_complete(path, self._structure.levels)
        self._file = _SegmentFile(path)
        self._passthrough = _Passthrough(self._file, self._structure.levels)
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

    def _level(self, level: int) -> tuple[_Layout, float]:
        if not 0 <= level < len(self._structure.levels):
            raise TileNotFound(f"level {level} outside 0..{len(self._structure.levels) - 1}")
        return self._structure.levels[level], self._info.levels[level].downsample

    def read_region(
        self, l0_x: int, l0_y: int, level: int, l_width: int, l_height: int
    ) -> Image.Image:
        layout, downsample = self._level(level)
        if l_width <= 0 or l_height <= 0:
            raise BadRequest(f"region size {l_width}x{l_height} is empty")
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


def _check_complete(path: Path, layouts: Sequence[_Layout]) -> None:
    """Refuse a truncated file at open: every level's data must lie inside the file.

    tifffile opens a truncated pyramid happily (it drops the IFDs it cannot reach), which would
    serve a slide missing its lower levels and failing on most tiles.
    """
    size = path.stat().st_size
    for index, layout in enumerate(layouts):
        ends = [o + b for o, b in zip(layout.offsets, layout.bytecounts, strict=False) if b]
        if ends and max(ends) > size:
            raise SlideUnreadable(
                f"{path.name!r} is truncated: level {index} runs past the end of the file"
            )
