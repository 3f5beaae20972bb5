"""JPEG stream surgery for stored-tile passthrough: pure functions on bytes, no I/O, no decoding.

TIFF files store JPEG tiles as *abbreviated* streams: the quantisation and Huffman tables that
all tiles share live once in the ``JPEGTables`` tag (347). Before such a tile can be sent to a
browser the tables must be put back into the stream (:func:`merge_jpeg_tables`).

Aperio (and some other scanners) compress the RGB samples directly, without the usual YCbCr
transform, and say so only through the TIFF ``Photometric`` tag. A stand-alone JPEG decoder has
no TIFF tags: without a hint it assumes YCbCr and shows wrong colours. An Adobe APP14 segment
with transform 0 is that hint, understood by libjpeg(-turbo), browsers and Pillow
(:func:`add_adobe_rgb_marker`, decided by :func:`needs_adobe_rgb_marker`).

Both edits only insert bytes right after the tile's SOI (or rewrite bytes of the tables), and the
tables are shared by every tile of a level. So for tiles whose own header has no JFIF or Adobe
segment the result is ``splice_prefix(tables) + tile[2:]``: :func:`splice_prefix` does the header
work once per level and :func:`splice` is plain byte concatenation per tile.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"

_SOI, _EOI, _SOS, _APP0, _APP14, _TEM = 0xD8, 0xD9, 0xDA, 0xE0, 0xEE, 0x01
_STANDALONE = {_SOI, _EOI, _TEM, *range(0xD0, 0xD8)}
"""Markers without a length field."""
SOF_MARKERS = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
"""Start-of-frame markers (not DHT 0xC4, JPG 0xC8 nor DAC 0xCC)."""

ADOBE_RGB_SEGMENT = (
    b"\xff\xee"  # APP14
    + (14).to_bytes(2, "big")  # length, itself included
    + b"Adobe"
    + (100).to_bytes(2, "big")  # DCTEncode version
    + b"\x00\x00"  # flags0
    + b"\x00\x00"  # flags1
    + b"\x00"  # transform 0: components are not colour-transformed (RGB, not YCbCr)
)
"""An Adobe APP14 segment that tells decoders the three components are RGB."""

TIFF_COMPRESSION_JPEG = 7
TIFF_PHOTOMETRIC_RGB = 2


@dataclass(frozen=True)
class Segment:
    """One marker segment of a JPEG header: ``stream[start:end]`` holds marker and payload."""

    marker: int
    start: int
    end: int
    payload: int
    """Offset of the payload, after the marker and its length field."""


@dataclass(frozen=True)
class FrameHeader:
    """What the SOF segment says about the image."""

    width: int
    height: int
    components: int
    precision: int


def iter_header_segments(stream: bytes) -> Iterator[Segment]:
    """Yield the marker segments from SOI up to and including SOS (or EOI).

    Raises ``ValueError`` on a malformed header: the caller decides what corruption means.
    """
    if not stream.startswith(SOI):
        raise ValueError("not a JPEG stream: no SOI marker")
    pos = 0
    size = len(stream)
    while pos < size:
        if stream[pos] != 0xFF:
            raise ValueError(f"expected a marker at byte {pos}")
        start = pos
        while pos < size and stream[pos] == 0xFF:  # fill bytes may precede a marker
            pos += 1
        if pos >= size:
            break
        marker = stream[pos]
        pos += 1
        if marker in _STANDALONE:
            yield Segment(marker, start, pos, pos)
            if marker == _EOI:
                return
            continue
        if pos + 2 > size:
            raise ValueError("truncated marker segment")
        length = int.from_bytes(stream[pos : pos + 2], "big")
        if length < 2 or pos + length > size:
            raise ValueError(f"bad length {length} of marker 0x{marker:02X}")
        yield Segment(marker, start, pos + length, pos + 2)
        pos += length
        if marker == _SOS:
            return
    raise ValueError("JPEG header ends before SOS or EOI")


def merge_jpeg_tables(tile: bytes, tables: bytes | None) -> bytes:
    """Return ``tile`` with the DQT/DHT (and other) segments of a TIFF JPEGTables stream inserted.

    ``tables`` is itself a JPEG stream (SOI, tables, EOI); everything between its SOI and EOI
    goes right after the tile's SOI, so tables the tile defines itself still take precedence.
    """
    if not tables:
        return tile
    if not tile.startswith(SOI):
        raise ValueError("not a JPEG stream: no SOI marker")
    body_end = 2
    for seg in iter_header_segments(tables):
        if seg.marker == _SOI:
            continue
        if seg.marker in (_EOI, _SOS):
            break
        body_end = seg.end
    return tile[:2] + tables[2:body_end] + tile[2:]


def has_marker(stream: bytes, marker: int, ident: bytes = b"") -> bool:
    """Whether the header has a ``marker`` segment whose payload starts with ``ident``."""
    for seg in iter_header_segments(stream):
        if seg.marker == marker and stream[seg.payload : seg.payload + len(ident)] == ident:
            return True
    return False


def _adobe_segment(stream: bytes) -> Segment | None:
    for seg in iter_header_segments(stream):
        if seg.marker == _APP14 and stream[seg.payload : seg.payload + 5] == b"Adobe":
            return seg
    return None


def adobe_transform(stream: bytes) -> int | None:
    """Return the transform of the stream's Adobe APP14 segment (0 RGB, 1 YCbCr), or None."""
    seg = _adobe_segment(stream)
    if seg is None or seg.end - seg.payload < 12:
        return None
    return stream[seg.payload + 11]


def has_jfif_marker(stream: bytes) -> bool:
    """Whether the stream has a JFIF APP0 segment (which implies YCbCr to every decoder)."""
    return has_marker(stream, _APP0, b"JFIF\x00")


def add_adobe_rgb_marker(stream: bytes) -> bytes:
    """Mark the stream's three components as RGB: insert an Adobe APP14 segment after SOI.

    An existing APP14 segment is rewritten to transform 0 instead, so there is only one.
    """
    seg = _adobe_segment(stream)
    if seg is None:
        return stream[:2] + ADOBE_RGB_SEGMENT + stream[2:]
    where = seg.payload + 11
    if seg.end - seg.payload < 12 or stream[where] == 0:
        return stream
    return stream[:where] + b"\x00" + stream[where + 1 :]


def needs_adobe_rgb_marker(
    photometric: int, compression: int, samples_per_pixel: int, stream: bytes
) -> bool:
    """Whether a stored TIFF JPEG tile must be marked RGB before a stand-alone decoder sees it.

    TIFF readers decode it as RGB on the word of the Photometric tag; other decoders need the
    stream to say so. True for Photometric RGB, JPEG compression and three samples, unless the
    stream already carries APP14 transform 0, or JFIF (which TIFF readers also take as YCbCr).
    """
    if (
        photometric != TIFF_PHOTOMETRIC_RGB
        or compression != TIFF_COMPRESSION_JPEG
        or samples_per_pixel != 3
    ):
        return False
    return not (adobe_transform(stream) == 0 or has_jfif_marker(stream))


def frame_header(stream: bytes) -> FrameHeader:
    """Return the SOF frame header; ``ValueError`` when there is none before SOS."""
    for seg in iter_header_segments(stream):
        if seg.marker in SOF_MARKERS:
            p = seg.payload
            if seg.end - p < 6:
                raise ValueError("truncated SOF segment")
            return FrameHeader(
                precision=stream[p],
                height=int.from_bytes(stream[p + 1 : p + 3], "big"),
                width=int.from_bytes(stream[p + 3 : p + 5], "big"),
                components=stream[p + 5],
            )
    raise ValueError("no SOF segment before SOS")


def ends_with_eoi(stream: bytes) -> bool:
    """Whether the stream ends with EOI (ignoring zero padding some writers append)."""
    return stream.endswith(EOI) or stream.rstrip(b"\x00").endswith(EOI)


def carries_colour_marker(stream: bytes) -> bool:
    """Whether the header has a JFIF APP0 or an Adobe APP14 segment (either decides colour)."""
    return _adobe_segment(stream) is not None or has_jfif_marker(stream)


def splice_prefix(tables: bytes | None, *, mark_rgb: bool) -> bytes:
    """Return what goes before ``tile[2:]``: SOI, [Adobe APP14 transform 0], the tables' segments.

    For a tile whose header has no JFIF or Adobe segment, ``splice(prefix, tile)`` equals
    ``merge_jpeg_tables(tile, tables)`` followed, when ``mark_rgb`` and
    :func:`needs_adobe_rgb_marker` says so, by :func:`add_adobe_rgb_marker`. APP14 goes right
    after SOI, where libjpeg(-turbo), browsers and Pillow all read it. ``ValueError`` when the
    tables are malformed.
    """
    stream = merge_jpeg_tables(SOI + EOI, tables)
    if mark_rgb and not (adobe_transform(stream) == 0 or has_jfif_marker(stream)):
        stream = add_adobe_rgb_marker(stream)
    return stream[:-2]


def splice(prefix: bytes, tile: bytes) -> bytes:
    """Return ``prefix`` (from :func:`splice_prefix`) followed by the tile after its SOI."""
    return prefix + memoryview(tile)[2:]
