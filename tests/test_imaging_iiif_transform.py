"""The IIIF pixel pipeline, run through a real SlideReader over an in-memory image.

The test image has four flat quadrants (red top-left, green top-right, blue bottom-left, yellow
bottom-right), so where each colour lands after mirroring and rotation is easy to check.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from slideserver.errors import AssociatedImageNotFound, InvalidIIIFParameter, UnsupportedTileFormat
from slideserver.imaging.iiif_transform import render_iiif
from slideserver.models import Level, SlideInfo, SlideSource
from slideserver.readers.base import SlideReader
from slideserver.tiling.iiif import IIIFLimits, IIIFPlan, parse_image_request, plan_image

RED, GREEN, BLUE, YELLOW = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)
W, H = 320, 240
LIMITS = IIIFLimits(max_width=2000, max_height=2000, max_area=2_000_000)


def quadrants(width: int = W, height: int = H) -> NDArray[np.uint8]:
    pixels = np.empty((height, width, 3), np.uint8)
    pixels[: height // 2, : width // 2] = RED
    pixels[: height // 2, width // 2 :] = GREEN
    pixels[height // 2 :, : width // 2] = BLUE
    pixels[height // 2 :, width // 2 :] = YELLOW
    return pixels


class ArrayReader(SlideReader):
    """A slide held in memory: level 0 is the array, each further level halves it."""

    name = "array"

    def __init__(self, pixels: NDArray[np.uint8], levels: int = 1) -> None:
        super().__init__(SlideSource(Path("memory")))
        self.pixels = [pixels]
        for _ in range(levels - 1):
            previous = Image.fromarray(self.pixels[-1])
            half = previous.reduce(2)
            self.pixels.append(np.asarray(half))
        self.levels_read: list[int] = []

    @classmethod
    def detect(cls, source: SlideSource) -> str | None:
        return None

    @property
    def info(self) -> SlideInfo:
        height, width = self.pixels[0].shape[:2]
        levels = tuple(Level(p.shape[1], p.shape[0], width / p.shape[1]) for p in self.pixels)
        assert levels[0] == Level(width, height, 1.0)
        return SlideInfo(format="array", vendor=None, levels=levels)

    def read_region(
        self, l0_x: int, l0_y: int, level: int, l_width: int, l_height: int
    ) -> Image.Image:
        self.levels_read.append(level)
        level_pixels = self.pixels[level]
        down = self.info.levels[level].downsample
        l_x, l_y = round(l0_x / down), round(l0_y / down)
        out = Image.new("RGB", (l_width, l_height), (255, 255, 255))
        out.paste(Image.fromarray(level_pixels[l_y : l_y + l_height, l_x : l_x + l_width]))
        return out

    def associated(self, name: str) -> Image.Image:
        raise AssociatedImageNotFound(f"no associated image {name!r}")


class RefusingReader(ArrayReader):
    """A reader whose pixels must not be touched: any read fails the test."""

    def read_region(
        self, l0_x: int, l0_y: int, level: int, l_width: int, l_height: int
    ) -> Image.Image:
        raise AssertionError("pixels were read")

    def read_encoded_tile(
        self, level: int, t_col: int, t_row: int, *, nowait: bool = False
    ) -> NoReturn:
        raise AssertionError("a stored tile was read")


def render(
    reader: SlideReader,
    region: str = "full",
    size: str = "max",
    rotation: str = "0",
    quality: str = "default",
    fmt: str = "png",
) -> tuple[Image.Image, str]:
    data, plan = render_request(reader, region, size, rotation, quality, fmt)
    image = Image.open(io.BytesIO(data))
    image.load()
    return image, plan.media_type


def render_request(
    reader: SlideReader, region: str, size: str, rotation: str, quality: str, fmt: str
) -> tuple[bytes, IIIFPlan]:
    """Parse, plan against the reader's image, then render: the order the IIIF service keeps."""
    request = parse_image_request(region, size, rotation, quality, fmt)
    plan = plan_image(request, reader.info.width, reader.info.height, LIMITS)
    return render_iiif(reader, plan), plan


def corners(image: Image.Image) -> tuple[object, ...]:
    """Colours at the quadrants' centres: top-left, top-right, bottom-left, bottom-right."""
    rgb = image.convert("RGB")
    w, h = rgb.size
    return tuple(rgb.getpixel((x, y)) for y in (h // 4, 3 * h // 4) for x in (w // 4, 3 * w // 4))


@pytest.fixture
def reader() -> ArrayReader:
    return ArrayReader(quadrants())


# ---------------------------------------------------------------------------------------------
# Region and size


def test_full_max_png_is_the_image_itself(reader: ArrayReader) -> None:
    image, media_type = render(reader)
    assert media_type == "image/png"
    assert image.size == (W, H)
    assert np.array_equal(np.asarray(image.convert("RGB")), quadrants())


def test_region_is_cut_from_the_right_place(reader: ArrayReader) -> None:
    image, _ = render(reader, region=f"{W // 2},0,{W // 2},{H // 2}")
    assert image.size == (W // 2, H // 2)
    assert set(corners(image)) == {GREEN}


def test_region_past_the_edge_is_cropped_not_padded(reader: ArrayReader) -> None:
    image, _ = render(reader, region=f"{W - 10},{H - 20},100,100")
    assert image.size == (10, 20)
    assert set(corners(image)) == {YELLOW}


def test_size_scales_the_region(reader: ArrayReader) -> None:
    image, _ = render(reader, size="80,")
    assert image.size == (80, 60)
    assert corners(image) == (RED, GREEN, BLUE, YELLOW)


def test_upscaling_with_caret(reader: ArrayReader) -> None:
    image, _ = render(reader, region="0,0,16,12", size="^pct:500")
    assert image.size == (80, 60)
    assert set(corners(image)) == {RED}


def test_reduced_request_reads_a_coarser_level() -> None:
    reader = ArrayReader(quadrants(640, 480), levels=3)
    image, _ = render(reader, size="160,")
    assert image.size == (160, 120)
    assert corners(image) == (RED, GREEN, BLUE, YELLOW)
    assert reader.levels_read == [2]


# ---------------------------------------------------------------------------------------------
# Mirroring and rotation (spec 4.3, applied after the size)


@pytest.mark.parametrize(
    ("rotation", "size", "expected"),
    [
        ("0", (W, H), (RED, GREEN, BLUE, YELLOW)),
        ("90", (H, W), (BLUE, RED, YELLOW, GREEN)),
        ("180", (W, H), (YELLOW, BLUE, GREEN, RED)),
        ("270", (H, W), (GREEN, YELLOW, RED, BLUE)),
        ("!0", (W, H), (GREEN, RED, YELLOW, BLUE)),
        ("!90", (H, W), (YELLOW, GREEN, BLUE, RED)),
        ("!180", (W, H), (BLUE, YELLOW, RED, GREEN)),
        ("!270", (H, W), (RED, BLUE, GREEN, YELLOW)),
    ],
)
def test_rotation_turns_clockwise_after_mirroring(
    reader: ArrayReader, rotation: str, size: tuple[int, int], expected: tuple[object, ...]
) -> None:
    image, _ = render(reader, rotation=rotation)
    assert image.size == size
    assert corners(image) == expected


def test_size_applies_before_rotation(reader: ArrayReader) -> None:
    image, _ = render(reader, size="160,", rotation="90")
    assert image.size == (120, 160)


# ---------------------------------------------------------------------------------------------
# Quality (spec 4.4)


@pytest.mark.parametrize("quality", ["default", "color"])
def test_colour_qualities_keep_rgb(reader: ArrayReader, quality: str) -> None:
    image, _ = render(reader, quality=quality)
    assert image.mode == "RGB"
    assert corners(image) == (RED, GREEN, BLUE, YELLOW)


def test_gray_is_luminance(reader: ArrayReader) -> None:
    image, _ = render(reader, quality="gray")
    assert image.mode == "L"
    expected = Image.fromarray(quadrants()).convert("L")
    assert np.array_equal(np.asarray(image), np.asarray(expected))


def test_bitonal_png_is_one_bit_black_and_white(reader: ArrayReader) -> None:
    image, _ = render(reader, quality="bitonal")
    assert image.mode == "1"
    values = set(np.unique(np.asarray(image.convert("L"))).tolist())
    assert values == {0, 255}
    # Luminance: red 76, green 150, blue 29, yellow 226 against the threshold 128.
    tl, tr, bl, br = corners(image)
    assert (tl, tr, bl, br) == ((0, 0, 0), (255, 255, 255), (0, 0, 0), (255, 255, 255))


@pytest.mark.parametrize(("fmt", "mode"), [("jpg", "L"), ("webp", "RGB")])
def test_bitonal_in_formats_without_one_bit_pixels(
    reader: ArrayReader, fmt: str, mode: str
) -> None:
    image, _ = render(reader, quality="bitonal", fmt=fmt)
    assert image.mode == mode
    pixels = np.asarray(image.convert("L")).astype(int)
    # Lossy codecs ring at the edges; the flat quadrants stay black or white.
    assert pixels[H // 4, W // 4] < 10
    assert pixels[H // 4, 3 * W // 4] > 245


def test_gray_jpeg_is_single_channel(reader: ArrayReader) -> None:
    image, media_type = render(reader, quality="gray", fmt="jpg")
    assert (image.mode, media_type) == ("L", "image/jpeg")


# ---------------------------------------------------------------------------------------------
# Format (spec 4.5)


@pytest.mark.parametrize(
    ("fmt", "media_type", "magic"),
    [
        ("jpg", "image/jpeg", b"\xff\xd8\xff"),
        ("png", "image/png", b"\x89PNG\r\n\x1a\n"),
        ("webp", "image/webp", b"RIFF"),
    ],
)
def test_formats_encode_with_their_media_type(
    reader: ArrayReader, fmt: str, media_type: str, magic: bytes
) -> None:
    plan = plan_image(parse_image_request("full", "64,", "0", "default", fmt), W, H, LIMITS)
    data = render_iiif(reader, plan)
    assert plan.media_type == media_type
    assert data.startswith(magic)
    assert Image.open(io.BytesIO(data)).size == (64, 48)


def test_encoder_quality_is_passed_through(reader: ArrayReader) -> None:
    plan = plan_image(parse_image_request("full", "max", "0", "default", "jpg"), W, H, LIMITS)
    small = render_iiif(reader, plan, quality=10)
    large = render_iiif(reader, plan, quality=95)
    assert len(small) < len(large)


# ---------------------------------------------------------------------------------------------
# Refusals happen before any pixel is read


@pytest.mark.parametrize(
    ("region", "size", "rotation", "quality", "fmt", "error"),
    [
        ("full", "^2001,", "0", "default", "jpg", InvalidIIIFParameter),  # maxWidth
        ("full", "^1500,1500", "0", "default", "jpg", InvalidIIIFParameter),  # maxArea
        ("full", "321,", "0", "default", "jpg", InvalidIIIFParameter),  # upscaling without ^
        ("320,0,10,10", "max", "0", "default", "jpg", InvalidIIIFParameter),  # outside
        ("full", "max", "45", "default", "png", InvalidIIIFParameter),  # arbitrary rotation
        ("full", "max", "0", "sepia", "jpg", InvalidIIIFParameter),
        ("full", "max", "0", "default", "tif", UnsupportedTileFormat),
        ("full", "bogus", "0", "default", "jpg", InvalidIIIFParameter),
    ],
)
def test_refused_requests_never_read_pixels(
    region: str, size: str, rotation: str, quality: str, fmt: str, error: type[Exception]
) -> None:
    refusing = RefusingReader(quadrants())
    with pytest.raises(error):
        render_request(refusing, region, size, rotation, quality, fmt)


def test_refusing_reader_does_refuse() -> None:
    """Guards the test above: an acceptable request does reach the reader."""
    with pytest.raises(AssertionError, match="read"):
        render_request(RefusingReader(quadrants()), "full", "max", "0", "default", "jpg")


def test_render_request_returns_the_plan(reader: ArrayReader) -> None:
    data, plan = render_request(reader, "full", "!100,100", "90", "gray", "webp")
    assert data.startswith(b"RIFF")
    assert plan.media_type == "image/webp"
    assert plan.canonical == "full/100,75/90/gray.webp"
    assert plan.output_size == (75, 100)
