"""Encoding pixel arrays: JPEG with Pillow's tables and subsampling, other formats via Pillow."""

from __future__ import annotations

import io

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from slideserver.codecs import jpeg
from slideserver.imaging.encode import encode_image
from tests._reader_fixtures import tissue


def test_jpeg_of_an_rgb_array_round_trips_size_and_mode() -> None:
    pixels = tissue(300, 200)
    with Image.open(io.BytesIO(encode_image(pixels, "jpeg", 85))) as image:
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (300, 200)
        decoded = np.asarray(image, dtype=np.int16)
    assert np.abs(decoded - pixels).mean() < 4.0


def test_jpeg_of_an_array_uses_pillows_tables_and_subsampling() -> None:
    pixels = tissue(256, 256, seed=5)
    ours = encode_image(pixels, "jpeg", 80)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=80)

    def header(stream: bytes, marker: int) -> list[bytes]:
        segments = jpeg.iter_header_segments(stream)
        return [stream[s.start : s.end] for s in segments if s.marker == marker]

    for marker in (0xDB, 0xC0, 0xC4):  # quantisation tables, frame (sampling), Huffman tables
        assert header(ours, marker) == header(buf.getvalue(), marker), hex(marker)
    assert simplejpeg.decode_jpeg_header(ours)[3] == "420"


def test_jpeg_of_a_grayscale_array_is_grayscale() -> None:
    pixels = tissue(160, 120)[..., 1].copy()
    with Image.open(io.BytesIO(encode_image(pixels, "jpeg"))) as image:
        assert image.mode == "L" and image.size == (160, 120)
        assert np.abs(np.asarray(image, dtype=np.int16) - pixels).mean() < 3.0


def test_jpeg_of_an_rgba_array_is_flattened_onto_white() -> None:
    pixels = np.zeros((64, 64, 4), np.uint8)  # transparent black
    with Image.open(io.BytesIO(encode_image(pixels, "jpeg"))) as image:
        assert image.mode == "RGB"
        assert np.asarray(image).min() >= 250


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_other_formats_of_an_array_go_through_pillow(fmt: str) -> None:
    pixels = tissue(90, 70)
    with Image.open(io.BytesIO(encode_image(pixels, fmt))) as image:
        assert image.format == fmt.upper() and image.size == (90, 70)
        decoded = np.asarray(image.convert("RGB"), dtype=np.int16)
    assert np.abs(decoded - pixels).mean() < (0.01 if fmt == "png" else 4.0)
