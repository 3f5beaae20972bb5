"""The UIDs a DICOM slide's own files carry, so DICOMweb serves them under their own identity."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from slideserver.dicom.virtual import FileUids

HEADER_TAGS = (
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "ImageType",
    "TotalPixelMatrixColumns",
    "TotalPixelMatrixRows",
)


def file_uids(files: Sequence[Path], level_sizes: Sequence[tuple[int, int]]) -> FileUids | None:
    """Read the headers of a DICOM slide's files: its study, series and instance UIDs.

    A level is the VOLUME instance of its size; ``label`` and ``overview`` the LABEL and
    OVERVIEW ones. ``None`` when no file has a study UID (then UIDs are derived).
    """
    study = series = frame = None
    instances: dict[str, str] = {}
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(HEADER_TAGS))
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        image_type = [str(v).upper() for v in ds.get("ImageType", [])]
        flavour = image_type[2] if len(image_type) > 2 else ""
        uid = str(ds.get("SOPInstanceUID", ""))
        if not uid:
            continue
        if flavour == "VOLUME":
            size = (
                int(ds.get("TotalPixelMatrixColumns", 0)),
                int(ds.get("TotalPixelMatrixRows", 0)),
            )
            if size in level_sizes:
                instances.setdefault(f"level-{level_sizes.index(size)}", uid)
                study = study or str(ds.get("StudyInstanceUID", "")) or None
                series = series or str(ds.get("SeriesInstanceUID", "")) or None
                frame = frame or str(ds.get("FrameOfReferenceUID", "")) or None
        elif flavour in ("LABEL", "OVERVIEW"):
            instances.setdefault(flavour.lower(), uid)
    if study is None or series is None:
        return None
    return FileUids(study, series, frame, instances)
