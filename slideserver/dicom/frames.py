"""Frames and what they are sent as: transfer syntax negotiation and raw pixel frames.

A level's frame N is its stored tile N (TILED_FULL, row-major). Stored JPEG and JPEG 2000 tiles
go out as they are stored (``image/jpeg``, JPEG Baseline; ``image/jp2``, JPEG 2000); every frame
can also go out uncompressed (``application/octet-stream``, Explicit VR Little Endian:
interleaved 8-bit RGB). What a client gets is negotiated from its ``Accept`` header (PS3.18
8.7.3): the first acceptable media type and transfer syntax it names, in order of preference
(``q``, then the order written); none acceptable is :class:`~slideserver.errors.NotAcceptable`
(406). No ``Accept`` header or ``*/*`` means "as stored"; ``application/octet-stream`` with no
``transfer-syntax`` means uncompressed (its default, PS3.18 Table 8.7.3-5).

``transfer-syntax=*`` lets the server choose (PS3.18 8.7.3.5.2): the frames go out as stored,
whatever media type it is named with. Slim (``dicom-microscopy-viewer``) asks for
``type="application/octet-stream"; transfer-syntax=*`` and finds the codec from the bytes, as
Orthanc's and Google's servers expect. Each part is labelled with the transfer syntax it really
has: with the stored syntax's own media type (``image/jpeg``) when the client accepts that too,
else with the media type it named (``application/octet-stream; transfer-syntax=...4.50``)."""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydicom.uid import JPEG2000, UID, ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit

from slideserver.errors import BadRequest, NotAcceptable

OCTET_STREAM = "application/octet-stream"
JPEG = "image/jpeg"
JP2 = "image/jp2"
DICOM = "application/dicom"
MEDIA_OF_SYNTAX = {
    JPEGBaseline8Bit: JPEG,
    JPEG2000: JP2,
    JPEG2000Lossless: JP2,
    ExplicitVRLittleEndian: OCTET_STREAM,
}
"""The frame media type of each transfer syntax we send."""
DEFAULT_SYNTAX = {
    JPEG: JPEGBaseline8Bit,
    JP2: JPEG2000Lossless,
    OCTET_STREAM: ExplicitVRLittleEndian,
}
"""PS3.18 Table 8.7.3-5: a media type's transfer syntax when the client names none."""
MAX_FRAMES = 1000
"""Most frames one request may name."""


@dataclass(frozen=True)
class Offer:
    """A media type and transfer syntax a client may get."""

    media_type: str
    syntax: UID

    @property
    def content_type(self) -> str:
        return f"{self.media_type}; transfer-syntax={self.syntax}"


@dataclass(frozen=True)
class Accepted:
    """One entry of an ``Accept`` header."""

    media_type: str
    """The part's media type (``type=`` of ``multipart/related``), lower case."""
    syntax: str | None
    multipart: bool
    quality: float


def parse_accept(header: str) -> list[Accepted]:
    """Return the entries of an ``Accept`` header, best first (stable for equal quality)."""
    entries: list[Accepted] = []
    for raw in header.split(","):
        pieces = [p.strip() for p in raw.split(";")]
        media = pieces[0].lower()
        if not media:
            continue
        params: dict[str, str] = {}
        for piece in pieces[1:]:
            name, _, value = piece.partition("=")
            params[name.strip().lower()] = value.strip().strip('"')
        try:
            quality = float(params.get("q", "1"))
        except ValueError:
            quality = 0.0
        multipart = media == "multipart/related"
        if multipart:
            media = params.get("type", OCTET_STREAM).lower()
        entries.append(Accepted(media, params.get("transfer-syntax"), multipart, quality))
    entries.sort(key=lambda e: -e.quality)
    return [e for e in entries if e.quality > 0]


def _media_fits(accepted: str, media: str) -> bool:
    if accepted in ("*/*", "*"):
        return True
    if accepted.endswith("/*"):
        return media.startswith(accepted[:-1])
    return accepted == media


def _takes(entry: Accepted, offer: Offer) -> bool:
    """Tell whether one ``Accept`` entry accepts an offer (its media type and syntax)."""
    if not _media_fits(entry.media_type, offer.media_type):
        return False
    syntax = entry.syntax
    if syntax is None and entry.media_type in DEFAULT_SYNTAX:
        syntax = DEFAULT_SYNTAX[entry.media_type]
    return syntax in (None, "*") or syntax == offer.syntax


@functools.lru_cache(maxsize=256)
def negotiate_frames(accept: str, stored: UID) -> Offer:
    """Return what frames stored in ``stored`` are sent as, for an ``Accept`` header.

    Kept for the few headers a server sees (a viewer sends the same one for every frame);
    a header it cannot meet raises every time.
    """
    as_stored = Offer(MEDIA_OF_SYNTAX[stored], stored)
    offers = [as_stored]
    if stored != ExplicitVRLittleEndian:
        offers.append(Offer(OCTET_STREAM, ExplicitVRLittleEndian))
    if not accept.strip():
        return as_stored
    entries = parse_accept(accept)
    for entry in entries:
        if entry.syntax == "*" and entry.media_type == OCTET_STREAM:
            # Any syntax the server likes: the stored bytes, under the media type of their own
            # syntax if the client takes it, else under the one it named (PS3.18 8.7.3.5.2).
            if any(_takes(other, as_stored) for other in entries):
                return as_stored
            return Offer(OCTET_STREAM, stored)
        for offer in offers:
            if _takes(entry, offer):
                return offer
    wanted = ", ".join(sorted({f"{e.media_type} {e.syntax or ''}".strip() for e in entries}))
    wanted = wanted or "nothing (every type has q=0)"
    available = ", ".join(o.content_type for o in offers)
    raise NotAcceptable(f"frames cannot be sent as {wanted[:200]}; available: {available}")


def negotiate_instance(accept: str, stored: UID) -> tuple[UID, bool]:
    """Return the transfer syntax of a Part 10 instance and whether it goes in a multipart body."""
    if not accept.strip():
        return stored, False
    for entry in parse_accept(accept):
        if not _media_fits(entry.media_type, DICOM):
            continue
        if entry.syntax in (None, "*") or entry.syntax == stored:
            return stored, entry.multipart
        if entry.syntax == ExplicitVRLittleEndian:
            return ExplicitVRLittleEndian, entry.multipart
    raise NotAcceptable(
        f"this instance is sent as application/dicom with transfer-syntax {stored} or "
        f"{ExplicitVRLittleEndian}"
    )


def parse_frame_list(text: str, frame_count: int) -> list[int]:
    """Return the 1-based frame numbers of ``/frames/1,2,3``; 400 for a malformed list, 404-free.

    Numbers outside ``1..frame_count`` are a bad request (PS3.18: the frame does not exist).
    """
    parts = text.split(",")
    if not parts or len(parts) > MAX_FRAMES:
        raise BadRequest(f"name between 1 and {MAX_FRAMES} frames")
    numbers: list[int] = []
    for part in parts:
        part = part.strip()
        if not part.isdigit() or len(part) > 9:
            raise BadRequest("frame numbers are positive integers separated by commas")
        number = int(part)
        if not 1 <= number <= frame_count:
            raise BadRequest(f"frame {number} is outside 1..{frame_count}")
        numbers.append(number)
    return numbers


def raw_frame(image: Image.Image, width: int, height: int) -> bytes:
    """Return an RGB image as one uncompressed frame of ``width`` x ``height`` (white padded)."""
    rgb = image.convert("RGB")
    if rgb.size != (width, height):
        canvas = Image.new("RGB", (width, height), (255, 255, 255))
        canvas.paste(rgb.crop((0, 0, min(width, rgb.width), min(height, rgb.height))), (0, 0))
        rgb = canvas
    return np.asarray(rgb, dtype=np.uint8).tobytes()


def decode_jpeg(data: bytes) -> Image.Image:
    """Decode a stored JPEG frame to RGB (for uncompressed answers of stored tiles)."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.convert("RGB")


def jpeg2000_photometric(codestream: bytes) -> str | None:
    """The Photometric Interpretation of a 3-component JPEG 2000 codestream of RGB data:
    ``YBR_ICT`` or ``YBR_RCT`` when its COD segment turns the multiple component transform on
    (irreversible 9-7 or reversible 5-3 wavelet), ``RGB`` when it does not; ``None`` when no COD
    segment is found in the main header (PS3.5 8.2.4)."""
    position = 2  # after SOC (FF4F), marker segments: FF xx, 2-byte length, body
    while position + 4 <= len(codestream):
        marker = codestream[position : position + 2]
        length = int.from_bytes(codestream[position + 2 : position + 4], "big")
        if marker == b"\xff\x52":  # COD: Scod, progression (1), layers (2), MCT (1), ..., wavelet
            body = codestream[position + 4 : position + 2 + length]
            if len(body) < 10:
                return None
            mct, wavelet = body[4], body[9]
            if not mct:
                return "RGB"
            return "YBR_RCT" if wavelet == 1 else "YBR_ICT"
        if marker in (b"\xff\x90", b"\xff\x93") or length < 2:  # SOT, SOD: header over
            return None
        position += 2 + length
    return None
