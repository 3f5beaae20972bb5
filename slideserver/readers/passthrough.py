"""Stored JPEG tiles sent as they are: the fast path that skips decoding and re-encoding.

A stored tile becomes a stand-alone JPEG a browser shows correctly: the level's shared tables
merged in, and an Adobe APP14 marker where the stream is RGB-coded. :class:`StoredTiles` does this
for a TIFF pyramid (any reader of a TIFF-based format borrows it: OpenSlide's Aperio and
generic-tiff included); :class:`Passthrough` is its per-level core, planned at open so that each
tile costs one positioned read and one splice; :func:`browser_ready_frame` does it for a DICOM
frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tifffile

from slideserver.codecs import jpeg
from slideserver.codecs.jpeg2000 import ycbcr_as_ict
from slideserver.errors import SlideUnreadable, TileNotFound, TileUnreadable
from slideserver.models import EncodedTile
from slideserver.readers.tiff.metadata import all_pages
from slideserver.readers.tiff.segments import ImageLayout, SegmentFile, image_layout

APERIO_JPEG2000_YCBCR = 33003
"""TIFF compression of Aperio's JPEG 2000 tiles of YCbCr samples (codestream transform off)."""
APERIO_JPEG2000_RGB = 33005
"""TIFF compression of Aperio's JPEG 2000 tiles with RGB components."""
JPEG2000_CODESTREAM = b"\xff\x4f\xff\x51"
"""SOC then SIZ: a raw JPEG 2000 codestream (what Aperio stores, what DICOM encapsulates)."""


def _check_jpeg_tile(data: bytes, layout: ImageLayout) -> bool:
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


def _slow_encoded_tile(data: bytes, layout: ImageLayout) -> EncodedTile | None:
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


_TOP_LEFT = (0, 1)
"""Orientation values libtiff reads as stored: top-left, and 0 (invalid, so the default)."""

_SAMPLE_TILES = 8
"""Tiles tried, in order, for a level's sample (sparse and malformed ones are skipped)."""


def _plan_splice(file: SegmentFile, layout: ImageLayout) -> _Splice | None:
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


class Passthrough:
    """Sends the stored JPEG tiles of a set of levels, each level's splice planned at open.

    Planning reads a sample tile, which the event loop must not wait for, so it is done when the
    slide is opened (in a worker thread): ``nowait`` reads then never need it.
    """

    def __init__(self, file: SegmentFile, layouts: Sequence[ImageLayout | None]) -> None:
        self._file = file
        self._layouts = tuple(layouts)
        self._plans = tuple(
            _plan_splice(file, layout) if layout is not None and layout.passthrough else None
            for layout in self._layouts
        )

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


class StoredTiles:
    """Stored JPEG tiles of a TIFF pyramid, ready to send: the passthrough fast path.

    ``level_sizes`` are the (width, height) of the caller's pyramid levels; each is matched to
    the TIFF image of exactly that size (tiled ones first, SubIFDs included). ``read`` answers
    ``None`` for levels that are not JPEG-tiled, so the caller renders those.
    """

    def __init__(self, path: Path, level_sizes: Sequence[tuple[int, int]]) -> None:
        self.path = Path(path)
        layouts: list[ImageLayout | None] = []
        try:
            with tifffile.TiffFile(self.path) as tif:
                pages = all_pages(tif)
                for size in level_sizes:
                    layouts.append(self._match(pages, size))
        except SlideUnreadable:
            raise
        except Exception as exc:
            raise SlideUnreadable(f"{self.path.name!r} is not a readable TIFF: {exc}") from exc
        self._layouts = tuple(layouts)
        self._file = SegmentFile(self.path)
        self._passthrough = Passthrough(self._file, self._layouts)

    @staticmethod
    def _match(pages: Iterable[Any], size: tuple[int, int]) -> ImageLayout | None:
        """The TIFF image of ``size`` whose stored tiles are what OpenSlide shows, if any.

        Not one with an Orientation other than top-left: libtiff (OpenSlide's decoder) mirrors
        such tiles (large_image's test_orient6.tif), the stored ones are not.
        """
        candidates = [
            p for p in pages if (int(p.keyframe.imagewidth), int(p.keyframe.imagelength)) == size
        ]
        candidates.sort(key=lambda p: not p.keyframe.is_tiled)
        for page in candidates:
            try:
                layout = image_layout(page)
            except SlideUnreadable:
                continue
            return layout if layout.orientation in _TOP_LEFT else None
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

    def jpeg2000_tile_size(self, level: int) -> tuple[int, int] | None:
        """The tile size of ``level`` when its tiles are Aperio JPEG 2000 (compression 33005, RGB
        components, or 33003, YCbCr; 8-bit, interleaved), else ``None``."""
        layout = self._layouts[level] if 0 <= level < len(self._layouts) else None
        if (
            layout is None
            or not layout.tiled
            or layout.compression not in (APERIO_JPEG2000_RGB, APERIO_JPEG2000_YCBCR)
            or (layout.samples, layout.planes, layout.bits) != (3, 1, 8)
        ):
            return None
        return layout.seg_width, layout.seg_height

    def read_jpeg2000(self, level: int, t_col: int, t_row: int) -> EncodedTile | None:
        """The stored codestream of a tile of a :meth:`jpeg2000_tile_size` level, else None.

        A YCbCr tile (33003) comes with the codestream's colour transform flag set, so that it
        decodes to RGB (:func:`~slideserver.codecs.jpeg2000.ycbcr_as_ict`), or not at all when
        that edit would not be exact.
        """
        if self.jpeg2000_tile_size(level) is None:
            return None
        layout = self._layouts[level]
        assert layout is not None
        if not (0 <= t_col < layout.cols and 0 <= t_row < layout.rows):
            raise TileNotFound(
                f"tile ({t_col}, {t_row}) outside the {layout.cols}x{layout.rows} tile grid"
            )
        data = self._file.segment(layout, t_row * layout.cols + t_col)
        if data is None or not data.startswith(JPEG2000_CODESTREAM):
            return None
        if layout.compression == APERIO_JPEG2000_YCBCR:
            data = ycbcr_as_ict(data, layout.seg_width, layout.seg_height)
            if data is None:
                return None
        return EncodedTile(data, "image/jp2", layout.seg_width, layout.seg_height)

    def close(self) -> None:
        """Close the file descriptor."""
        self._file.close()


def browser_ready_frame(data: bytes, *, rgb: bool, width: int, height: int) -> bytes | None:
    """Return a DICOM JPEG frame in a form browsers decode correctly, or ``None`` if it cannot be.

    Browsers (libjpeg-turbo) read three components as YCbCr unless an Adobe marker says
    transform 0, and a JFIF marker forces YCbCr. A YCbCr frame goes out as it is; an RGB frame
    gets the Adobe marker. Frames whose markers contradict the DICOM Photometric Interpretation,
    whose size is not the tile size, or that do not parse get ``None``: the caller re-encodes.
    """
    if data.endswith(b"\xff\xd9\x00"):
        data = data[:-1]  # the even-length padding of the DICOM fragment
    try:
        header = jpeg.frame_header(data)
        adobe_transform = jpeg.adobe_transform(data)
        jfif = jpeg.has_jfif_marker(data)
    except ValueError:
        return None
    if (header.width, header.height, header.components) != (width, height, 3):
        return None
    if not rgb:
        return None if adobe_transform == 0 else data
    if jfif or adobe_transform not in (None, 0):
        return None
    return jpeg.add_adobe_rgb_marker(data)
