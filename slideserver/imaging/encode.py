"""Pixels to bytes: the only place that encodes images."""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
import simplejpeg
from PIL import Image

from slideserver.errors import UnsupportedTileFormat

Pixels = npt.NDArray[np.uint8]
"""An image as a ``(height, width, 3)`` RGB or ``(height, width)`` grey uint8 array."""

MEDIA_TYPES: dict[str, str] = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
}
"""Formats we encode, by canonical name."""

ALIASES: dict[str, str] = {"jpg": "jpeg", "jpeg": "jpeg", "png": "png", "webp": "webp"}


def normalize_format(name: str) -> str:
    """Return the canonical format name for an extension (``jpg`` -> ``jpeg``)."""
    fmt = ALIASES.get(name.lower())
    if fmt is None:
        raise UnsupportedTileFormat(
            f"unsupported image format {name[:20]!r}; use one of jpeg, jpg, png, webp"
        )
    return fmt


def encode_image(image: Image.Image | Pixels, fmt: str, quality: int = 85) -> bytes:
    """Encode ``image`` as ``fmt`` (canonical name); JPEG drops alpha onto white.

    ``image`` is a PIL image or a uint8 array (``(h, w)`` grey, ``(h, w, 3)`` RGB, or
    ``(h, w, 4)`` RGBA). RGB and grey arrays are encoded to JPEG by simplejpeg (libjpeg-turbo),
    with what Pillow would write: the same quantisation tables for ``quality``, 4:2:0 chroma
    subsampling, standard Huffman tables. Everything else goes through Pillow.
    """
    fmt = normalize_format(fmt)
    if isinstance(image, np.ndarray):
        if fmt == "jpeg":
            encoded = _encode_jpeg_array(image, quality)
            if encoded is not None:
                return encoded
        image = Image.fromarray(image)
    if fmt == "jpeg" and image.mode not in ("RGB", "L", "CMYK"):
        image = flatten(image)
    buf = io.BytesIO()
    if fmt == "jpeg":
        image.save(buf, "JPEG", quality=quality)
    elif fmt == "png":
        image.save(buf, "PNG", compress_level=3)
    else:
        image.save(buf, "WEBP", quality=quality, method=2)
    return buf.getvalue()


def _encode_jpeg_array(pixels: Pixels, quality: int) -> bytes | None:
    """Encode an RGB or grey uint8 array as JPEG, or return ``None`` to leave it to Pillow."""
    if pixels.dtype != np.uint8 or not 1 <= quality <= 100 or 0 in pixels.shape:
        return None
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        colorspace, subsampling = "RGB", "420"  # libjpeg's default, which Pillow keeps
    elif pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 1):
        colorspace, subsampling = "GRAY", "Gray"
        pixels = pixels.reshape(pixels.shape[0], pixels.shape[1], 1)
    else:
        return None
    data: bytes = simplejpeg.encode_jpeg(
        np.ascontiguousarray(pixels), quality, colorspace, subsampling
    )
    return data


def flatten(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Composite an image with alpha onto a solid background, returning RGB."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        out = Image.new("RGB", rgba.size, background)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return image.convert("RGB")
