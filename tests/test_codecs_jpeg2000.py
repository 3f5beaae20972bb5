"""JPEG 2000 main headers, and Aperio YCbCr codestreams relabelled as ICT codestreams."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import imagecodecs
import numpy as np
import pytest
from PIL import Image

from slideserver.codecs.jpeg2000 import Component, main_header, tile_parts_restyle, ycbcr_as_ict

SIDE = 64


def picture() -> np.ndarray[Any, np.dtype[np.uint8]]:
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    return np.stack([x * 4, y * 4, (x * y) % 256], -1).astype(np.uint8)


def ycbcr_codestream(**options: Any) -> bytes:
    """YCbCr samples (JFIF) coded with the transform off, as Aperio's 33003 tiles are."""
    ycbcr = np.asarray(Image.fromarray(picture()).convert("YCbCr"))
    settings = {"level": 80, "mct": False, "reversible": False, **options}
    if settings["reversible"]:
        settings.pop("level")
    return bytes(imagecodecs.jpeg2k_encode(ycbcr, codecformat="J2K", **settings))


def with_byte(data: bytes, offset: int, value: int) -> bytes:
    edited = bytearray(data)
    edited[offset] = value
    return bytes(edited)


def siz_component_offset(data: bytes, index: int) -> int:
    """Where the Ssiz byte of component ``index`` is (SIZ right after SOC)."""
    return 4 + 2 + 36 + 3 * index


def test_main_header_reads_size_components_and_coding_style() -> None:
    header = main_header(ycbcr_codestream())
    assert header is not None
    assert (header.width, header.height) == (SIDE, SIDE)
    assert header.components == (Component(8, False, 1, 1),) * 3
    assert (header.mct, header.wavelet, header.capabilities) == (0, 0, 0)
    assert not header.component_styles


def test_main_header_of_something_else_is_none() -> None:
    assert main_header(b"\xff\xd8\xff\xe0 not a codestream") is None
    assert main_header(ycbcr_codestream()[:40]) is None


def test_the_relabelled_codestream_differs_by_the_transform_flag_only() -> None:
    stored = ycbcr_codestream()
    header = main_header(stored)
    assert header is not None
    relabelled = ycbcr_as_ict(stored, SIDE, SIDE)
    assert relabelled is not None
    assert [i for i, (a, b) in enumerate(zip(stored, relabelled, strict=True)) if a != b] == [
        header.mct_offset
    ]
    assert main_header(relabelled) == replace(header, mct=1)


def test_a_padding_byte_after_the_end_of_codestream_is_kept_and_allowed() -> None:
    padded = ycbcr_codestream() + b"\x00"  # as a DICOM fragment of odd length carries it
    relabelled = ycbcr_as_ict(padded, SIDE, SIDE)
    assert relabelled is not None and relabelled.endswith(b"\xff\xd9\x00")


def test_the_relabelled_codestream_decodes_to_the_rgb_pixels() -> None:
    relabelled = ycbcr_as_ict(ycbcr_codestream(), SIDE, SIDE)
    assert relabelled is not None
    decoded = imagecodecs.jpeg2k_decode(relabelled).astype(int)
    assert np.abs(decoded - picture()).mean() < 1.5


@pytest.mark.parametrize(
    "options",
    [{"mct": True}, {"reversible": True}],
    ids=["transform already on (33005 style)", "reversible wavelet (its transform is the RCT)"],
)
def test_codestreams_the_flag_would_not_turn_exactly_into_ict_are_refused(
    options: dict[str, Any],
) -> None:
    assert ycbcr_as_ict(ycbcr_codestream(**options), SIDE, SIDE) is None


def test_subsampled_chroma_is_refused() -> None:
    stored = ycbcr_codestream()
    subsampled = with_byte(stored, siz_component_offset(stored, 1) + 1, 2)  # Cb XRsiz = 2
    assert ycbcr_as_ict(subsampled, SIDE, SIDE) is None


def test_part2_codestreams_are_refused() -> None:
    stored = ycbcr_codestream()
    assert ycbcr_as_ict(with_byte(stored, 6, 0x80), SIDE, SIDE) is None  # Rsiz bit 15


def test_a_codestream_of_another_size_than_the_tile_is_refused() -> None:
    assert ycbcr_as_ict(ycbcr_codestream(), SIDE * 2, SIDE) is None


def test_a_tile_part_with_its_own_coding_style_is_refused() -> None:
    stored = ycbcr_codestream()
    sot = stored.find(b"\xff\x90")
    cod_start = stored.find(b"\xff\x52")
    cod = stored[
        cod_start : cod_start + 2 + int.from_bytes(stored[cod_start + 2 : cod_start + 4], "big")
    ]
    psot = int.from_bytes(stored[sot + 6 : sot + 10], "big")
    header_end = sot + 12
    restyled = (
        stored[: sot + 6]
        + (psot + len(cod)).to_bytes(4, "big")
        + stored[sot + 10 : header_end]
        + cod
        + stored[header_end:]
    )
    assert tile_parts_restyle(stored) is False
    assert tile_parts_restyle(restyled) is True
    assert ycbcr_as_ict(restyled, SIDE, SIDE) is None
