"""Check one incoming DICOM Part 10 file before it is stored: a whole, sane VL WSI instance.

STOW-RS parts and C-STORE data sets both come through :func:`read_instance`. What is refused is
refused with the failure reason PS3.18 (STOW-RS FailureReason) and PS3.4 (C-STORE status) share,
so each protocol answers in its own form. UIDs become folder and file names in the store, so they
must be well-formed UIDs (digits and dots, at most 64 characters): nothing else reaches a path.
Refusal details name no patient and no path.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import parse_fragments
from pydicom.uid import UID

from slideserver.errors import BadRequest

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
"""VL Whole Slide Microscopy Image Storage: the only SOP class the store takes."""

PROCESSING_FAILURE = 0x0110
"""The instance could not be stored (a disk error, say)."""
DUPLICATE_SOP_INSTANCE = 0x0111
"""An instance with this SOP Instance UID is stored already, with other content."""
SOP_CLASS_NOT_SUPPORTED = 0x0122
"""Not a VL Whole Slide Microscopy Image."""
OUT_OF_RESOURCES = 0xA700
"""Refused: out of resources (a full disk, an unwritable audit trail)."""
DATASET_MISMATCH = 0xA900
"""The data set does not match its SOP class (missing or malformed attributes, short pixels)."""
CANNOT_UNDERSTAND = 0xC000
"""Not a DICOM Part 10 file, or a truncated one."""

IMAGE_FLAVORS = frozenset({"VOLUME", "LABEL", "OVERVIEW", "THUMBNAIL"})
"""Third value of Image Type of the instances a slide is made of."""


class InstanceRefused(BadRequest):
    """One instance is refused; ``reason`` is its PS3.18/PS3.4 failure code."""

    code = "dicom_instance_refused"

    def __init__(self, reason: int, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class WsiInstance:
    """A checked VL WSI instance and the attributes the store files it under."""

    data: bytes
    """The Part 10 file, as received."""
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str | None
    image_flavor: str
    patient_id: str | None
    accession: str | None
    content_digest: str
    """SHA-256 of the data set after the file meta group: the same instance sent again through
    another route (new meta information, same data set) has the same digest."""

    @property
    def slide_key(self) -> str:
        """The folder of the scanned slide the instance belongs to, within its study.

        All images of one slide scan share its Frame of Reference (PS3.3 C.8.12.4), while the
        label and overview often sit in a series of their own: filed by frame of reference, they
        land beside the pyramid, where the DICOM reader finds them. Without one: the series.
        """
        return self.frame_of_reference_uid or self.series_uid


def read_instance(data: bytes, study_uid: str | None = None) -> WsiInstance:
    """Parse and check a Part 10 file; raise :class:`InstanceRefused` with the reason.

    ``study_uid``: the study the request names (``POST /studies/{study}``); an instance of
    another study is refused.
    """
    if len(data) < 132 or data[128:132] != b"DICM":
        raise InstanceRefused(CANNOT_UNDERSTAND, "not a DICOM Part 10 file")
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.get("PixelData")  # reads the pixel data element: a truncated file fails here
    except Exception as exc:
        raise InstanceRefused(
            CANNOT_UNDERSTAND, f"the DICOM file cannot be parsed ({type(exc).__name__})"
        ) from exc
    meta = ds.file_meta
    sop_class = str(ds.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID") or "")
    if sop_class != WSI_SOP_CLASS:
        raise InstanceRefused(
            SOP_CLASS_NOT_SUPPORTED,
            "only VL Whole Slide Microscopy Image Storage instances are stored",
        )
    sop = _uid(ds, "SOPInstanceUID")  # the data set's, even where its file meta says otherwise
    study, series = _uid(ds, "StudyInstanceUID"), _uid(ds, "SeriesInstanceUID")
    if study_uid is not None and study != study_uid:
        raise InstanceRefused(DATASET_MISMATCH, "the instance belongs to another study")
    frame_of_reference = _uid(ds, "FrameOfReferenceUID") if ds.get("FrameOfReferenceUID") else None
    image_type = list(ds.get("ImageType") or [])
    flavor = str(image_type[2]).upper() if len(image_type) >= 3 else ""
    if flavor not in IMAGE_FLAVORS:
        raise InstanceRefused(DATASET_MISMATCH, "Image Type names no WSI image flavor")
    _check_pixels(ds, flavor)
    return WsiInstance(
        data=data,
        sop_class_uid=sop_class,
        sop_instance_uid=sop,
        study_uid=study,
        series_uid=series,
        frame_of_reference_uid=frame_of_reference,
        image_flavor=flavor,
        patient_id=_text(ds.get("PatientID")),
        accession=_text(ds.get("AccessionNumber")),
        content_digest=hashlib.sha256(data[_dataset_offset(ds, data) :]).hexdigest(),
    )


def is_uid(value: str) -> bool:
    """Tell whether ``value`` is a well-formed UID (safe as a file or folder name)."""
    return 0 < len(value) <= 64 and UID(value).is_valid


def _uid(ds: Dataset, keyword: str) -> str:
    value = str(ds.get(keyword) or "").strip()
    if not is_uid(value):
        raise InstanceRefused(DATASET_MISMATCH, f"{keyword} is missing or not a valid UID")
    return value


def _text(value: object) -> str | None:
    text = str(value).strip() if value not in (None, "") else ""
    return text or None


def _positive(ds: Dataset, keyword: str, default: int | None = None) -> int:
    raw = ds.get(keyword, default)
    try:
        value = int(raw) if raw not in (None, "") else 0
    except (TypeError, ValueError):
        value = 0
    if value <= 0:
        raise InstanceRefused(DATASET_MISMATCH, f"{keyword} is missing or not positive")
    return value


def _check_pixels(ds: Dataset, flavor: str) -> None:
    """Geometry present and positive; as many frames in Pixel Data as Number of Frames says."""
    rows, columns = _positive(ds, "Rows"), _positive(ds, "Columns")
    frames = _positive(ds, "NumberOfFrames", 1)
    if flavor == "VOLUME":
        _positive(ds, "TotalPixelMatrixColumns")
        _positive(ds, "TotalPixelMatrixRows")
    pixels: bytes | None = ds.get("PixelData")
    if pixels is None:
        raise InstanceRefused(DATASET_MISMATCH, "the instance has no Pixel Data")
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        try:
            fragments, _ = parse_fragments(pixels[_offset_table_end(pixels) :])
        except Exception as exc:
            raise InstanceRefused(
                CANNOT_UNDERSTAND, "the Pixel Data fragments are damaged"
            ) from exc
        if fragments < frames:
            raise InstanceRefused(
                DATASET_MISMATCH, f"Pixel Data holds {fragments} fragments for {frames} frames"
            )
        return
    samples = int(ds.get("SamplesPerPixel") or 1)
    bits = int(ds.get("BitsAllocated") or 8)
    expected = math.ceil(rows * columns * samples * bits / 8) * frames
    if len(pixels) < expected:
        raise InstanceRefused(DATASET_MISMATCH, "Pixel Data is shorter than its frames")


def _offset_table_end(buffer: bytes) -> int:
    """Byte offset after the Basic Offset Table item that starts encapsulated Pixel Data."""
    if len(buffer) < 8 or buffer[:4] != b"\xfe\xff\x00\xe0":
        raise InstanceRefused(CANNOT_UNDERSTAND, "the Pixel Data fragments are damaged")
    return 8 + int.from_bytes(buffer[4:8], "little")


def _dataset_offset(ds: Dataset, data: bytes) -> int:
    """Where the data set starts after the preamble and the file meta group."""
    length = ds.file_meta.get("FileMetaInformationGroupLength")
    if not isinstance(length, int) or 144 + length > len(data):
        return 0  # no group length: the digest covers the whole file
    return 132 + 12 + length


__all__ = [
    "CANNOT_UNDERSTAND",
    "DATASET_MISMATCH",
    "DUPLICATE_SOP_INSTANCE",
    "OUT_OF_RESOURCES",
    "PROCESSING_FAILURE",
    "SOP_CLASS_NOT_SUPPORTED",
    "WSI_SOP_CLASS",
    "InstanceRefused",
    "WsiInstance",
    "is_uid",
    "read_instance",
]
