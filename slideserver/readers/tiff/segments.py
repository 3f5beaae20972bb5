"""Positioned reads of TIFF segments (tiles or strips): no shared file position, thread-safe.

tifffile parses a file's structure once; :func:`image_layout` keeps what reading one image needs,
and :class:`SegmentFile` reads its segments with ``os.pread`` on a descriptor of our own (or,
for the event loop, ``preadv`` with ``RWF_NOWAIT``, which fails rather than wait for a disk)
and decodes them with tifffile's per-page decode function.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from slideserver.codecs import jpeg
from slideserver.errors import SlideUnreadable, TileUnreadable
from slideserver.readers.base import WouldBlock
from slideserver.readers.tiff.render import Photo, Render, palette_lut

RWF_NOWAIT: int = getattr(os, "RWF_NOWAIT", 0)
"""Linux's "fail rather than wait for the disk" read flag (0 where there is none)."""

RGBArray = NDArray[np.uint8]

TIFF_TAG_ORIENTATION = 274
ORIENTATION_TOPLEFT = 1
SUPPORTED_PHOTOMETRIC = (0, 1, 2, 3, 6)
"""Min-is-white, min-is-black, RGB, palette, YCbCr."""

_INVALID_ORIENTATION = re.compile(
    r"<tifffile\.TiffTag 274 @\d+> raised ValueError\('-?\d+ is not a valid ORIENTATION'\)"
)


class _InvalidOrientationFilter(logging.Filter):
    """Drop tifffile's warning about an Orientation value outside 1..8 (and nothing else).

    Writers leave Orientation 0 in files (large_image's test_orient0.tif); tifffile keeps the raw
    number, libtiff and OpenSlide read such a file as top-left, and so do we: nothing to report.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return _INVALID_ORIENTATION.fullmatch(record.getMessage()) is None


def _quiet_invalid_orientation() -> None:
    logger = logging.getLogger("tifffile")
    if not any(isinstance(f, _InvalidOrientationFilter) for f in logger.filters):
        logger.addFilter(_InvalidOrientationFilter())


_quiet_invalid_orientation()


@dataclass(frozen=True)
class ImageLayout:
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
    orientation: int = ORIENTATION_TOPLEFT
    """The raw TIFF Orientation value (pixels are read in stored order whatever it says)."""
    colormap: NDArray[np.uint8] | None = field(default=None, compare=False, repr=False)
    """A palette image's colour table, (entries, 3) 8-bit."""

    @property
    def photo(self) -> Photo:
        """How this image's samples become RGB when they are a photograph."""
        return Photo(self.photometric, self.extrasamples, self.colormap)

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


def image_layout(page: Any) -> ImageLayout:
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
    if dtype is None or not _supported_dtype(np.dtype(dtype)):
        raise SlideUnreadable(f"unsupported TIFF sample type {dtype}")
    photometric = int(key.photometric)
    if photometric not in SUPPORTED_PHOTOMETRIC:
        raise SlideUnreadable(f"unsupported TIFF photometric interpretation {photometric}")
    colormap = None
    if photometric == 3:
        own = page if hasattr(page, "colormap") else page.aspage()  # frames share a keyframe
        if own.colormap is None or samples != 1:
            raise SlideUnreadable("TIFF palette image without a usable colour map")
        colormap = palette_lut(own.colormap)
    try:
        decode = key.decode  # built once here: tifffile caches it on a shared dict
    except Exception as exc:
        raise SlideUnreadable(f"TIFF image cannot be decoded: {exc}") from exc
    return ImageLayout(
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
        orientation=int(key.tags.valueof(TIFF_TAG_ORIENTATION, ORIENTATION_TOPLEFT)),
        colormap=colormap,
    )


def _supported_dtype(dtype: np.dtype[Any]) -> bool:
    """8- and 16-bit integers (signed too: fluorescence), 32-bit integers and floats."""
    return (dtype.kind in "ui" and dtype.itemsize in (1, 2, 4)) or (
        dtype.kind == "f" and dtype.itemsize in (2, 4)
    )


class SegmentFile:
    """A file descriptor read with ``os.pread`` only: no shared position, safe across threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except OSError as exc:
            raise SlideUnreadable(f"cannot open {path.name!r}: {exc.strerror}") from exc
        self._lock = threading.Lock()
        self._nowait = RWF_NOWAIT != 0

    def segment(self, layout: ImageLayout, index: int, *, nowait: bool = False) -> bytes | None:
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

    def decode_samples(
        self, layout: ImageLayout, index: int
    ) -> tuple[NDArray[Any] | None, int, int]:
        """Decode one segment to (rows, columns, samples); return it with its origin (x, y).

        ``None`` for a sparse segment. Planar-separate images are assembled from the segment at
        ``index`` of every plane.
        """
        per_plane = layout.cols * layout.rows
        planes: list[NDArray[Any]] = []
        x = (index % layout.cols) * layout.seg_width
        y = (index // layout.cols) * layout.seg_height
        for plane in range(layout.planes):
            data = self.segment(layout, plane * per_plane + index)
            if data is None:
                return None, x, y
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
        return pixels, x, y

    def decode_channels(
        self, layouts: Sequence[ImageLayout], index: int
    ) -> tuple[NDArray[Any] | None, int, int]:
        """Decode segment ``index`` of images of one geometry (channel pages); stack samples."""
        parts: list[NDArray[Any]] = []
        x = y = 0
        for layout in layouts:
            pixels, x, y = self.decode_samples(layout, index)
            if pixels is None:
                return None, x, y
            parts.append(pixels)
        if len(parts) == 1:
            return parts[0], x, y
        rows = min(p.shape[0] for p in parts)
        cols = min(p.shape[1] for p in parts)
        return np.concatenate([p[:rows, :cols] for p in parts], axis=-1), x, y

    def decode_segment(self, layout: ImageLayout, index: int) -> tuple[RGBArray | None, int, int]:
        """Decode one segment to RGB; return it with its level-pixel origin (x, y)."""
        pixels, x, y = self.decode_samples(layout, index)
        return (None if pixels is None else layout.photo(pixels)), x, y

    def read(
        self,
        layout: ImageLayout,
        l_x: int,
        l_y: int,
        l_w: int,
        l_h: int,
        *,
        channels: Sequence[ImageLayout] = (),
        render: Render | None = None,
    ) -> RGBArray:
        """Return the ``l_w`` x ``l_h`` region at (``l_x``, ``l_y``), white outside the image.

        Only the segments (tiles, or strips) the region covers are read and decoded. With
        ``channels``, the same segment of each of those images (channel pages of ``layout``'s
        geometry) is stacked after ``layout``'s samples; ``render`` makes RGB of the samples
        (``layout``'s own photograph rendering by default).
        """
        layouts = (layout, *channels)
        to_rgb: Render = render if render is not None else layout.photo
        out = np.full((l_h, l_w, 3), 255, np.uint8)
        x0, y0 = max(l_x, 0), max(l_y, 0)
        x1, y1 = min(l_x + l_w, layout.width), min(l_y + l_h, layout.height)
        if x0 >= x1 or y0 >= y1:
            return out
        for t_row in range(y0 // layout.seg_height, (y1 - 1) // layout.seg_height + 1):
            for t_col in range(x0 // layout.seg_width, (x1 - 1) // layout.seg_width + 1):
                samples, s_x, s_y = self.decode_channels(layouts, t_row * layout.cols + t_col)
                if samples is None:
                    continue  # sparse tile: glass
                # intersection, in level pixels
                ix0, iy0 = max(x0, s_x), max(y0, s_y)
                ix1 = min(x1, s_x + samples.shape[1])
                iy1 = min(y1, s_y + samples.shape[0])
                if ix0 >= ix1 or iy0 >= iy1:
                    continue
                part = samples[iy0 - s_y : iy1 - s_y, ix0 - s_x : ix1 - s_x]
                out[iy0 - l_y : iy1 - l_y, ix0 - l_x : ix1 - l_x] = to_rgb(part)
        return out

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
