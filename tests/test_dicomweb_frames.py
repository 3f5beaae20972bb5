"""Frame transfer syntax negotiation (PS3.18 8.7.3), frame lists and Part 10 streaming pieces."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, JPEGBaseline8Bit

from slideserver.dicom import part10
from slideserver.dicom.frames import (
    negotiate_frames,
    negotiate_instance,
    parse_frame_list,
    raw_frame,
)
from slideserver.errors import BadRequest, NotAcceptable

JPEG_FRAMES = 'multipart/related; type="image/jpeg"'
RAW_FRAMES = 'multipart/related; type="application/octet-stream"'
ANY_SYNTAX = f"{RAW_FRAMES}; transfer-syntax=*"
"""What Slim (dicom-microscopy-viewer) asks for: the server's choice, found from the bytes."""


@pytest.mark.parametrize(
    "accept",
    [
        "",
        "*/*",
        JPEG_FRAMES,
        f"{JPEG_FRAMES}; transfer-syntax=1.2.840.10008.1.2.4.50",
        f"{JPEG_FRAMES}; transfer-syntax=*",
        'multipart/related; type="image/*"',
    ],
)
def test_stored_jpeg_frames_go_out_as_stored(accept: str) -> None:
    offer = negotiate_frames(accept, JPEGBaseline8Bit)
    assert (offer.media_type, offer.syntax) == ("image/jpeg", JPEGBaseline8Bit)


@pytest.mark.parametrize(
    "accept",
    [
        RAW_FRAMES,
        f"{RAW_FRAMES}; transfer-syntax=1.2.840.10008.1.2.1",
        f'multipart/related; type="image/jp2", {RAW_FRAMES}',
        f"{JPEG_FRAMES}; q=0.5, {RAW_FRAMES}; q=0.9",
    ],
)
def test_uncompressed_frames_on_request(accept: str) -> None:
    offer = negotiate_frames(accept, JPEGBaseline8Bit)
    assert (offer.media_type, offer.syntax) == ("application/octet-stream", ExplicitVRLittleEndian)


@pytest.mark.parametrize("stored", [JPEGBaseline8Bit, JPEG2000, ExplicitVRLittleEndian])
def test_any_syntax_gets_the_frames_as_stored_labelled_with_their_syntax(stored: str) -> None:
    offer = negotiate_frames(ANY_SYNTAX, pydicom.uid.UID(stored))
    assert (offer.media_type, offer.syntax) == ("application/octet-stream", stored)
    assert offer.content_type == f"application/octet-stream; transfer-syntax={stored}"


@pytest.mark.parametrize(
    "accept",
    [
        f"{ANY_SYNTAX}, {JPEG_FRAMES}; transfer-syntax=1.2.840.10008.1.2.4.50; q=0.5",
        f"{ANY_SYNTAX}, */*; q=0.1",
        f'{ANY_SYNTAX}, multipart/related; type="image/*"',
    ],
)
def test_any_syntax_names_the_stored_media_type_when_the_client_takes_it(accept: str) -> None:
    offer = negotiate_frames(accept, JPEGBaseline8Bit)
    assert offer.content_type == "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"


def test_any_syntax_does_not_name_a_jpeg_syntax_the_client_refused() -> None:
    lossless_only = f"{JPEG_FRAMES}; transfer-syntax=1.2.840.10008.1.2.4.70"
    offer = negotiate_frames(f"{ANY_SYNTAX}, {lossless_only}", JPEGBaseline8Bit)
    assert offer.content_type == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.50"


@pytest.mark.parametrize(
    ("accept", "syntax"),
    [
        (f"{ANY_SYNTAX}; q=0.5, {RAW_FRAMES}; q=0.9", ExplicitVRLittleEndian),
        (f"{RAW_FRAMES}; q=0.5, {ANY_SYNTAX}; q=0.9", JPEGBaseline8Bit),
        (f"{RAW_FRAMES}, {ANY_SYNTAX}", ExplicitVRLittleEndian),
        (f"{ANY_SYNTAX}, {RAW_FRAMES}", JPEGBaseline8Bit),
        (f"{ANY_SYNTAX}; q=0, {RAW_FRAMES}; q=0.1", ExplicitVRLittleEndian),
    ],
)
def test_the_preferred_alternative_wins_then_the_first_written(accept: str, syntax: str) -> None:
    assert negotiate_frames(accept, JPEGBaseline8Bit).syntax == syntax


@pytest.mark.parametrize(
    ("accept", "stored"),
    [
        ('multipart/related; type="image/jp2"', JPEGBaseline8Bit),
        (f"{JPEG_FRAMES}; transfer-syntax=1.2.840.10008.1.2.4.91", JPEGBaseline8Bit),
        (JPEG_FRAMES, ExplicitVRLittleEndian),
        (f"{RAW_FRAMES}; transfer-syntax=1.2.840.10008.1.2.4.50", JPEGBaseline8Bit),
        (f"{JPEG_FRAMES}; q=0", JPEGBaseline8Bit),
    ],
)
def test_what_cannot_be_sent_is_not_acceptable(accept: str, stored: str) -> None:
    with pytest.raises(NotAcceptable):
        negotiate_frames(accept, pydicom.uid.UID(stored))


def test_instances_go_out_as_stored_unless_uncompressed_is_asked() -> None:
    assert negotiate_instance("", JPEGBaseline8Bit) == (JPEGBaseline8Bit, False)
    dicom = 'multipart/related; type="application/dicom"'
    assert negotiate_instance(dicom, JPEGBaseline8Bit) == (JPEGBaseline8Bit, True)
    raw = "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
    assert negotiate_instance(raw, JPEGBaseline8Bit) == (ExplicitVRLittleEndian, False)
    with pytest.raises(NotAcceptable):
        negotiate_instance(
            "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.90", JPEGBaseline8Bit
        )
    with pytest.raises(NotAcceptable):
        negotiate_instance("application/json", JPEGBaseline8Bit)


def test_frame_lists_are_one_based_and_bounded() -> None:
    assert parse_frame_list("1,3,2", 3) == [1, 3, 2]
    for text in ("0", "4", "1,,2", "a", "-1", "1.5", ",".join(["1"] * 1001)):
        with pytest.raises(BadRequest):
            parse_frame_list(text, 3)


def test_a_raw_frame_is_white_padded_interleaved_rgb() -> None:
    image = Image.new("RGB", (2, 1), (10, 20, 30))
    frame = raw_frame(image, 3, 2)
    pixels = np.frombuffer(frame, np.uint8).reshape(2, 3, 3)
    assert pixels[0, 0].tolist() == [10, 20, 30]
    assert pixels[0, 2].tolist() == [255, 255, 255]
    assert pixels[1, 0].tolist() == [255, 255, 255]


def _dataset() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.6"
    ds.SOPInstanceUID = "1.2.3.4"
    ds.Rows, ds.Columns, ds.NumberOfFrames = 2, 3, 2
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 3, "RGB"
    ds.PlanarConfiguration, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 0, 8, 8, 7
    ds.PixelRepresentation = 0
    return ds


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (3, 2), colour).save(out, "JPEG", quality=95)
    return out.getvalue()


def test_a_streamed_encapsulated_instance_reads_back_frame_by_frame() -> None:
    frames = [_jpeg((200, 10, 10)), _jpeg((10, 10, 200))]
    data = (
        part10.header(_dataset(), JPEGBaseline8Bit)
        + part10.pixel_data_start(JPEGBaseline8Bit, 0)
        + b"".join(part10.fragment(f) for f in frames)
        + part10.pixel_data_end(JPEGBaseline8Bit, 0)
    )
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.PhotometricInterpretation = "YBR_FULL_422"
    pixels = ds.pixel_array
    assert pixels.shape == (2, 2, 3, 3)
    assert pixels[0, 0, 0, 0] > 150 and pixels[1, 0, 0, 2] > 150


def test_a_streamed_native_instance_of_odd_length_is_padded() -> None:
    ds = _dataset()
    ds.NumberOfFrames = 1
    ds.Rows, ds.Columns = 1, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    data = (
        part10.header(ds, ExplicitVRLittleEndian)
        + part10.pixel_data_start(ExplicitVRLittleEndian, 1)
        + b"\x07"
        + part10.pixel_data_end(ExplicitVRLittleEndian, 1)
    )
    assert len(data) % 2 == 0
    assert pydicom.dcmread(io.BytesIO(data)).pixel_array.tolist() == [[7]]
