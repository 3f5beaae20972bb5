"""DICOM Part 10 files written as a stream: the header at once, then the frames as they come.

The dataset (everything but Pixel Data) is written by pydicom; Pixel Data, always the last
element, is appended frame by frame: encapsulated (PS3.5 A.4: an empty basic offset table, one
fragment per frame, then the sequence delimiter) for compressed transfer syntaxes, or one native
OB value for Explicit VR Little Endian. So an instance of any size goes out without being held
in memory.
"""

from __future__ import annotations

import io
import struct

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"
ITEM = b"\xfe\xff\x00\xe0"
SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
UNDEFINED_LENGTH = 0xFFFFFFFF


def header(dataset: Dataset, syntax: UID) -> bytes:
    """Return the preamble, file meta and dataset of an instance, without its Pixel Data."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "SLIDESERVER"
    copy = Dataset()
    copy.update(dataset)
    if syntax != ExplicitVRLittleEndian:
        copy.LossyImageCompression = "01"
    copy.file_meta = meta
    buffer = io.BytesIO()
    dcmwrite(buffer, copy, enforce_file_format=True)
    return buffer.getvalue()


def pixel_data_start(syntax: UID, native_length: int) -> bytes:
    """Return the Pixel Data element's header (and, encapsulated, the empty offset table)."""
    if syntax == ExplicitVRLittleEndian:
        length = native_length + (native_length & 1)
        return PIXEL_DATA_TAG + b"OB\x00\x00" + struct.pack("<I", length)
    return PIXEL_DATA_TAG + b"OB\x00\x00" + struct.pack("<I", UNDEFINED_LENGTH) + ITEM + b"\0" * 4


def fragment(frame: bytes) -> bytes:
    """Return one encapsulated frame: an item of even length."""
    padded = frame + b"\0" if len(frame) & 1 else frame
    return ITEM + struct.pack("<I", len(padded)) + padded


def pixel_data_end(syntax: UID, native_length: int) -> bytes:
    """Return what ends Pixel Data: the padding byte (native) or the sequence delimiter."""
    if syntax == ExplicitVRLittleEndian:
        return b"\0" if native_length & 1 else b""
    return SEQUENCE_DELIMITER
