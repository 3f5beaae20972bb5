"""Slide label and macro (whole-glass overview) pictures for the sample slides.

Real labels carry PHI (patient name, MRN, birth date) and a barcode; the server must treat label
and macro images as PHI, so the samples put the synthetic patient on them for tests to look for.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

__all__ = ["LabelText", "make_label", "make_macro"]

LABEL_SIZE = (560, 600)
"""Label picture size (width, height), about what Aperio scanners store."""
MACRO_SIZE = (1280, 432)
"""Macro picture size: a 75 x 25 mm glass slide at about 17 px/mm."""
_INK = (20, 20, 28)
_PAPER = (250, 250, 246)


class _Thumbnailer(Protocol):
    width: int
    height: int

    def thumbnail(self, max_size: int) -> npt.NDArray[np.uint8]: ...


@dataclass(frozen=True)
class LabelText:
    """What a lab's label printer puts on a slide."""

    patient_name: str
    """Display form, e.g. ``Jane Doe``."""
    mrn: str
    birth_date: str
    accession: str
    block: str
    """Part and block, e.g. ``A1``."""
    stain: str

    def lines(self) -> list[str]:
        return [
            f"{self.accession} {self.block}",
            self.stain,
            self.patient_name,
            self.mrn,
            f"DOB {self.birth_date}",
        ]

    @property
    def barcode_payload(self) -> str:
        return f"{self.accession}-{self.block}"


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _matrix_code(payload: str, modules: int = 18) -> npt.NDArray[np.bool_]:
    """A DataMatrix-looking pattern derived from ``payload`` (finder L plus clock track).

    Not decodable: it only has to look like a 2-D barcode and change with the payload.
    """
    bits = np.unpackbits(
        np.frombuffer(hashlib.sha256(payload.encode()).digest() * 2, dtype=np.uint8)
    )[: modules * modules].reshape(modules, modules)
    code = bits.astype(bool)
    code[:, 0] = True  # solid left edge
    code[-1, :] = True  # solid bottom edge
    code[0, :] = np.arange(modules) % 2 == 0  # clock track, top
    code[:, -1] = np.arange(modules) % 2 == 1  # clock track, right
    return code


def make_label(text: LabelText) -> Image.Image:
    """Render a printed slide label: text lines and a 2-D barcode on white paper."""
    image = Image.new("RGB", LABEL_SIZE, _PAPER)
    draw = ImageDraw.Draw(image)
    code = _matrix_code(text.barcode_payload)
    module = 12
    side = code.shape[0] * module
    left, top = (LABEL_SIZE[0] - side) // 2, 24
    for row, col in zip(*np.nonzero(code), strict=True):
        x0, y0 = left + int(col) * module, top + int(row) * module
        draw.rectangle((x0, y0, x0 + module - 1, y0 + module - 1), fill=_INK)
    y = top + side + 22
    for index, line in enumerate(text.lines()):
        font = _font(40 if index < 2 else 34)
        width = draw.textlength(line, font=font)
        draw.text(((LABEL_SIZE[0] - width) / 2, y), line, fill=_INK, font=font)
        y += 48 if index < 2 else 42
    return image


def make_macro(tissue: _Thumbnailer, label: Image.Image) -> Image.Image:
    """Render the macro camera picture: the whole glass slide, label end on the left."""
    width, height = MACRO_SIZE
    rng = np.random.default_rng(7)
    stage = np.full((height, width, 3), (38, 40, 44), dtype=np.uint8)
    image = Image.fromarray(stage)
    draw = ImageDraw.Draw(image)
    glass = (10, 8, width - 10, height - 8)
    draw.rounded_rectangle(glass, radius=10, fill=(236, 237, 240))
    label_box = (18, 16, 18 + (height - 32) * LABEL_SIZE[0] // LABEL_SIZE[1], height - 16)
    label_small = label.resize(
        (label_box[2] - label_box[0], label_box[3] - label_box[1]), Image.Resampling.LANCZOS
    )
    image.paste(label_small, label_box[:2])
    # The scanned area (the tissue image) sits in the middle of the remaining glass.
    area_left, area_right = label_box[2] + 40, width - 40
    area_top, area_bottom = 40, height - 40
    thumb = Image.fromarray(tissue.thumbnail(max(area_right - area_left, area_bottom - area_top)))
    thumb.thumbnail((area_right - area_left, area_bottom - area_top), Image.Resampling.LANCZOS)
    x = area_left + (area_right - area_left - thumb.width) // 2
    y = area_top + (area_bottom - area_top - thumb.height) // 2
    image.paste(thumb, (x, y))
    # A faint coverslip edge and a little camera noise, as on real macro pictures.
    draw.rectangle((label_box[2] + 20, 22, width - 24, height - 22), outline=(200, 202, 208))
    pixels = np.asarray(image, dtype=np.int16)
    pixels = pixels + rng.normal(0.0, 2.0, pixels.shape).astype(np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
