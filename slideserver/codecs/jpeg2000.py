"""JPEG 2000 codestream surgery: read the main header, turn Aperio's YCbCr into an ICT stream.

Aperio stores two kinds of JPEG 2000 tiles. Compression 33005 codes RGB samples (usually with the
codestream's own irreversible colour transform, ICT), which DICOM labels ``YBR_ICT`` (or ``RGB``
without it). Compression 33003 codes samples the scanner already turned into YCbCr (the JPEG/JFIF
full-range BT.601 matrix) with the codestream's transform *off*: the components are Y, Cb, Cr.
PS3.5 8.2.4 would call those ``YBR_FULL``, a value the VL Whole Slide Microscopy Image IOD does
not allow (PS3.3 C.8.12.4.1.5: ``MONOCHROME2``, ``RGB``, ``YBR_FULL_422``, ``YBR_ICT``,
``YBR_RCT``; with JPEG 2000 only ``RGB``, ``YBR_ICT`` or ``YBR_RCT``).

The ICT *is* that matrix, applied after the DC level shift: an encoder with the transform on codes
the components (Y - 128, Cb - 128, Cr - 128), exactly what an encoder with it off codes for
YCbCr samples. So the same coded data with the COD segment's multiple component transform flag
set to 1 is a standard ``YBR_ICT`` codestream: any decoder returns RGB, the stored coefficients
are untouched. :func:`ycbcr_as_ict` does that one-byte edit, only where it is exact: a Part 1
codestream, three unsigned 8-bit components at full resolution (no chroma subsampling), the
irreversible 9-7 wavelet (the ICT's only partner), and no per-component or per-tile coding style
that could override the flag.
"""

from __future__ import annotations

from dataclasses import dataclass

SOC, SIZ, COD, COC, SOT, SOD, EOC = 0x4F, 0x51, 0x52, 0x53, 0x90, 0x93, 0xD9
PART2_CAPABILITIES = 0x8000
"""Rsiz bit saying the codestream uses ISO/IEC 15444-2 extensions (not a DICOM transfer syntax)."""
IRREVERSIBLE_9_7 = 0
"""COD SPcod transformation value of the irreversible wavelet (1 is the reversible 5-3)."""


@dataclass(frozen=True)
class Component:
    """One component of the SIZ segment."""

    bits: int
    signed: bool
    dx: int
    """Horizontal subsampling (XRsiz)."""
    dy: int


@dataclass(frozen=True)
class MainHeader:
    """What the main header of a codestream says about its samples and coding."""

    width: int
    height: int
    capabilities: int
    """Rsiz."""
    components: tuple[Component, ...]
    mct: int
    """COD multiple component transform: 0 off, 1 on (ICT or RCT by the wavelet)."""
    wavelet: int
    """COD transformation: 0 irreversible 9-7, 1 reversible 5-3."""
    mct_offset: int
    """Where the MCT byte of the main COD segment is in the codestream."""
    component_styles: bool
    """A COC segment overrides the default coding style of some component."""


def main_header(codestream: bytes) -> MainHeader | None:
    """Parse SIZ and COD of a raw codestream's main header; ``None`` when it is not one."""
    if codestream[:2] != b"\xff\x4f" or codestream[2:4] != b"\xff\x51":
        return None
    siz: tuple[int, int, int, tuple[Component, ...]] | None = None
    cod: tuple[int, int, int] | None = None
    coc = False
    position = 2
    while position + 4 <= len(codestream):
        if codestream[position] != 0xFF:
            return None
        marker = codestream[position + 1]
        if marker in (SOT, SOD, EOC):
            break
        length = int.from_bytes(codestream[position + 2 : position + 4], "big")
        body = codestream[position + 4 : position + 2 + length]
        if length < 2 or len(body) != length - 2:
            return None
        if marker == SIZ:
            siz = _siz(body)
        elif marker == COD and len(body) >= 10:
            cod = (body[4], body[9], position + 4 + 4)
        elif marker == COC:
            coc = True
        position += 2 + length
    if siz is None or cod is None:
        return None
    width, height, capabilities, components = siz
    mct, wavelet, mct_offset = cod
    return MainHeader(width, height, capabilities, components, mct, wavelet, mct_offset, coc)


def _siz(body: bytes) -> tuple[int, int, int, tuple[Component, ...]] | None:
    """Image size, Rsiz and the components of a SIZ segment body."""
    if len(body) < 36:
        return None
    capabilities = int.from_bytes(body[0:2], "big")
    xsiz, ysiz, xosiz, yosiz = (int.from_bytes(body[i : i + 4], "big") for i in (2, 6, 10, 14))
    count = int.from_bytes(body[34:36], "big")
    if len(body) < 36 + 3 * count:
        return None
    components = tuple(
        Component(
            bits=(body[36 + 3 * i] & 0x7F) + 1,
            signed=bool(body[36 + 3 * i] & 0x80),
            dx=body[37 + 3 * i],
            dy=body[38 + 3 * i],
        )
        for i in range(count)
    )
    return xsiz - xosiz, ysiz - yosiz, capabilities, components


def tile_parts_restyle(codestream: bytes) -> bool | None:
    """Whether a tile-part header carries its own COD or COC (which could undo the main
    header's flag); ``None`` when the tile-parts cannot be walked. What follows EOC (a DICOM
    fragment's padding byte) is ignored."""
    position = codestream.find(b"\xff\x90")
    while position >= 0:
        if position >= len(codestream) or codestream[position : position + 2] == b"\xff\xd9":
            return False
        if position + 12 > len(codestream) or codestream[position : position + 2] != b"\xff\x90":
            return None
        tile_part_length = int.from_bytes(codestream[position + 6 : position + 10], "big")
        header = position + 12  # after SOT (marker, Lsot 10: Isot, Psot, TPsot, TNsot)
        while header + 4 <= len(codestream):
            marker = codestream[header : header + 2]
            if marker == b"\xff\x93":  # SOD: the tile-part's data follow
                break
            if marker in (b"\xff\x52", b"\xff\x53"):
                return True
            if marker[:1] != b"\xff":
                return None
            header += 2 + int.from_bytes(codestream[header + 2 : header + 4], "big")
        if tile_part_length == 0:  # the last tile-part runs to EOC
            return False
        position += tile_part_length
    return None


def ycbcr_as_ict(codestream: bytes, width: int, height: int) -> bytes | None:
    """Return a codestream of YCbCr components (transform off) as the same coded data with the
    irreversible colour transform on: a ``YBR_ICT`` codestream that decodes to RGB.

    ``None`` when the edit would not be exact or the stream is not a ``width`` x ``height``
    Part 1 codestream of three unsigned 8-bit full-resolution components coded with the 9-7
    wavelet and the transform off (the caller then decodes and re-encodes).
    """
    header = main_header(codestream)
    if (
        header is None
        or (header.width, header.height) != (width, height)
        or header.capabilities & PART2_CAPABILITIES
        or len(header.components) != 3
        or any(c != Component(8, False, 1, 1) for c in header.components)
        or header.mct != 0
        or header.wavelet != IRREVERSIBLE_9_7
        or header.component_styles
        or tile_parts_restyle(codestream) is not False
    ):
        return None
    edited = bytearray(codestream)
    edited[header.mct_offset] = 1
    return bytes(edited)
