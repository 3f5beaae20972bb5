"""Read any level-0 region at any output size from the best stored level.

Deep Zoom tiles that have no stored copy, IIIF regions and thumbnails all come through here, so
the choice of level and the fast paths live in one place.
"""

from __future__ import annotations

import io
import math

import numpy as np
import simplejpeg
from PIL import Image

from slideserver.errors import TileUnreadable, TooLarge
from slideserver.imaging.encode import Pixels
from slideserver.models import SlideInfo
from slideserver.readers.base import SlideReader

MAX_READ_PIXELS = 64 * 1024 * 1024
"""Largest stored-level region read for one request (slides without a pyramid)."""


def best_level(info: SlideInfo, downsample: float) -> int:
    """Return the coarsest stored level whose downsample does not exceed ``downsample``.

    A small tolerance keeps rounding in vendor level sizes from forcing a finer level.
    """
    best = 0
    for index, level in enumerate(info.levels):
        if level.downsample <= downsample * 1.01:
            best = index
    return best


def read_scaled_region(
    reader: SlideReader,
    l0_x: int,
    l0_y: int,
    l0_width: int,
    l0_height: int,
    z_width: int,
    z_height: int,
) -> Image.Image:
    """Return the level-0 rectangle resampled to ``z_width`` x ``z_height`` RGB pixels.

    The rectangle may extend past the slide; that part is white.
    """
    pixels = _read_scaled(reader, l0_x, l0_y, l0_width, l0_height, z_width, z_height)
    if isinstance(pixels, Image.Image):
        return pixels
    return Image.fromarray(pixels, "RGB")


def read_scaled_array(
    reader: SlideReader,
    l0_x: int,
    l0_y: int,
    l0_width: int,
    l0_height: int,
    z_width: int,
    z_height: int,
) -> Pixels:
    """Like :func:`read_scaled_region`, as a ``(z_height, z_width, 3)`` uint8 RGB array.

    For callers that only encode the result (:func:`slideserver.imaging.encode.encode_image` takes
    arrays): the stored-tile fast path then never builds a PIL image.
    """
    pixels = _read_scaled(reader, l0_x, l0_y, l0_width, l0_height, z_width, z_height)
    if isinstance(pixels, np.ndarray):
        return pixels
    if pixels.mode != "RGB":
        pixels = pixels.convert("RGB")
    return np.asarray(pixels)


def _read_scaled(
    reader: SlideReader,
    l0_x: int,
    l0_y: int,
    l0_width: int,
    l0_height: int,
    z_width: int,
    z_height: int,
) -> Pixels | Image.Image:
    """Read through the stored-tile fast path when it applies (an array), else resample (PIL)."""
    downsample = max(l0_width / max(z_width, 1), l0_height / max(z_height, 1))
    level = best_level(reader.info, downsample)
    fast = read_from_stored_tiles(reader, level, l0_x, l0_y, l0_width, l0_height, z_width, z_height)
    if fast is not None:
        return fast
    return _read_resampled(reader, level, l0_x, l0_y, l0_width, l0_height, z_width, z_height)


def _read_resampled(
    reader: SlideReader,
    level: int,
    l0_x: int,
    l0_y: int,
    l0_width: int,
    l0_height: int,
    z_width: int,
    z_height: int,
) -> Image.Image:
    """The general path: read the region of ``level`` and resample it to the output size."""
    l_down = reader.info.levels[level].downsample
    l_width = max(1, math.ceil(l0_width / l_down))
    l_height = max(1, math.ceil(l0_height / l_down))
    if l_width * l_height > MAX_READ_PIXELS:
        raise TooLarge(
            f"this request would read {l_width} x {l_height} pixels of a stored level; "
            "ask for a smaller region or size"
        )
    region = reader.read_region(l0_x, l0_y, level, l_width, l_height)
    if region.size == (z_width, z_height):
        return region
    return resample(region, (z_width, z_height))


def resample(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize with a filter fit for histology: box-reduce big integer steps, then Lanczos."""
    width, height = image.size
    factor = min(width // max(size[0], 1), height // max(size[1], 1))
    if factor >= 2:
        image = image.reduce(factor)
    if image.size == size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)


def read_from_stored_tiles(
    reader: SlideReader,
    level: int,
    l0_x: int,
    l0_y: int,
    l0_width: int,
    l0_height: int,
    z_width: int,
    z_height: int,
) -> Pixels | None:
    """Assemble the output from stored JPEG tiles decoded at full or reduced DCT scale.

    libjpeg-turbo decodes a JPEG at 1/2, 1/4 or 1/8 scale for a fraction of the cost of a full
    decode plus resize; this is what makes Deep Zoom levels without a stored copy (every second
    level of an Aperio pyramid) cheap. At full scale it serves the partial tiles at the right and
    bottom edges of stored levels (a crop of one or two stored tiles) without the backend's
    general region read. Tiles are decoded by simplejpeg straight into numpy arrays
    and copied into one white ``(z_height, z_width, 3)`` array; Pillow decodes the streams
    simplejpeg does not take. Returns ``None`` when the fast path does not apply. Public so the
    tests and the bench can run this path on a level of their choosing.
    """
    info = reader.info
    lvl = info.levels[level]
    if not lvl.tile_width or not lvl.tile_height:
        return None
    l_down = lvl.downsample
    # The output must be the level's pixel grid or an exact power-of-two reduction of it.
    scale_x = l0_width / l_down / z_width
    scale_y = l0_height / l_down / z_height
    scale = round(scale_x)
    if scale not in (1, 2, 4, 8) or abs(scale_x - scale) > 1e-6 or abs(scale_y - scale) > 1e-6:
        return None
    if l0_x % 1 or l0_y % 1:
        return None
    l_x = l0_x / l_down
    l_y = l0_y / l_down
    if abs(l_x - round(l_x)) > 1e-6 or abs(l_y - round(l_y)) > 1e-6:
        return None
    l_x, l_y = round(l_x), round(l_y)
    tw, th = lvl.tile_width, lvl.tile_height
    if tw % (scale * 8) or th % (scale * 8) or l_x % scale or l_y % scale:
        return None
    l_w = z_width * scale
    l_h = z_height * scale
    t_col0, t_row0 = l_x // tw, l_y // th
    t_col1 = (min(l_x + l_w, lvl.width) - 1) // tw
    t_row1 = (min(l_y + l_h, lvl.height) - 1) // th
    if l_x >= lvl.width or l_y >= lvl.height:
        return np.full((z_height, z_width, 3), 255, np.uint8)
    if l_x + l_w <= lvl.width and l_y + l_h <= lvl.height:
        out = np.empty((z_height, z_width, 3), np.uint8)  # the tiles below cover all of it
    else:
        out = np.full((z_height, z_width, 3), 255, np.uint8)
    stw, sth = tw // scale, th // scale
    for t_row in range(t_row0, t_row1 + 1):
        for t_col in range(t_col0, t_col1 + 1):
            encoded = reader.read_encoded_tile(level, t_col, t_row)
            if encoded is None or encoded.media_type != "image/jpeg":
                return None
            try:
                tile = _decode_scaled(encoded.data, stw, sth)
            except (OSError, ValueError, SyntaxError) as exc:
                raise TileUnreadable(
                    f"stored tile {t_col},{t_row} of level {level} cannot be decoded"
                ) from exc
            if tile is None:
                return None
            # Where the tile lands in the output; its padding beyond the level edge stays white.
            z_x = (t_col * tw - l_x) // scale
            z_y = (t_row * th - l_y) // scale
            valid_w = -(-min(tw, lvl.width - t_col * tw) // scale)
            valid_h = -(-min(th, lvl.height - t_row * th) // scale)
            x0, x1 = max(z_x, 0), min(z_x + valid_w, z_width)
            y0, y1 = max(z_y, 0), min(z_y + valid_h, z_height)
            if x1 > x0 and y1 > y0:
                out[y0:y1, x0:x1] = tile[y0 - z_y : y1 - z_y, x0 - z_x : x1 - z_x]
    return out


_SIMPLEJPEG_COLORSPACES = frozenset({"RGB", "YCbCr", "Gray"})
"""Colour spaces simplejpeg (TurboJPEG) converts to RGB; CMYK and YCCK are left to Pillow."""


def _decode_scaled(data: bytes, width: int, height: int) -> Pixels | None:
    """Decode a stand-alone JPEG of a stored tile at reduced DCT scale to ``width`` x ``height``.

    Returns an RGB array, or ``None`` when the decoder cannot produce exactly that size (the
    caller then takes the general path). A stream simplejpeg refuses goes to Pillow, whose
    ``OSError``/``ValueError``/``SyntaxError`` on a corrupt stream propagates.
    """
    try:
        colorspace = simplejpeg.decode_jpeg_header(data)[2]
        if colorspace in _SIMPLEJPEG_COLORSPACES:
            pixels: Pixels = simplejpeg.decode_jpeg(data, "RGB", min_width=width, min_height=height)
            return pixels if pixels.shape == (height, width, 3) else None
    except ValueError:
        pass  # Pillow has the last word: it reads some streams TurboJPEG refuses.
    with Image.open(io.BytesIO(data)) as stored:
        stored.draft("RGB", (width, height))
        if stored.size != (width, height):
            return None
        return np.asarray(stored.convert("RGB"))
