"""Real DICOM WSI instances for the storage tests, and the ways senders send them.

:func:`write_slide` writes a small series with the project's sample writer (two pyramid levels,
the smaller one a single tile, plus label and overview); :func:`altered` rewrites one with
pydicom; :func:`multipart` builds a STOW-RS body as a DICOMweb client would.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path

import pydicom
from PIL import Image
from pydicom.dataset import Dataset

from slideserver.samples.dicom import write_dicom_wsi
from slideserver.samples.tissue import TissueImage

WIDTH, HEIGHT, TILE = 512, 384, 256
"""Level 0 is 2 x 2 tiles, level 1 (256 x 192) one tile: the pyramid is whole with both."""
LEVELS = ("level-0.dcm", "level-1.dcm")
ASSOCIATED = ("label.dcm", "overview.dcm")


def write_slide(
    folder: Path,
    *,
    accession: str = "S24-7001",
    patient_id: str = "MRN-7001",
    width: int = WIDTH,
    height: int = HEIGHT,
    level_count: int = 2,
) -> Path:
    """Write one slide's series into ``folder``: ``level-N.dcm``, label and overview."""
    return write_dicom_wsi(
        folder,
        TissueImage(width, height, seed=7),
        tile_size=TILE,
        level_count=level_count,
        mpp=0.5,
        patient_id=patient_id,
        patient_name="DOE^JANE",
        accession=accession,
        container_id=f"{accession}-A1-1",
        stain="hematoxylin and eosin",
        label=Image.new("RGB", (120, 80), (200, 30, 30)),
        macro=Image.new("RGB", (240, 80), (30, 30, 200)),
    )


def altered(data: bytes, change: Callable[[Dataset], None]) -> bytes:
    """Return the Part 10 file ``data`` after ``change`` was applied to its data set."""
    ds = pydicom.dcmread(io.BytesIO(data))
    change(ds)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def multipart(parts: Sequence[bytes]) -> tuple[bytes, str]:
    """A STOW-RS body of ``application/dicom`` parts and its Content-Type."""
    boundary = f"slideserver-{secrets.token_hex(8)}"
    body = b"".join(
        b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n"
        for part in parts
    )
    body += b"--" + boundary.encode() + b"--\r\n"
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return body, content_type


def slide_files(folder: Path) -> list[Path]:
    """The instance files of a written slide, pyramid first."""
    return [folder / name for name in (*LEVELS, *ASSOCIATED)]
