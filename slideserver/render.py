"""Pixels to bytes: the only place that encodes images."""

from __future__ import annotations

import io

from PIL import Image

from slideserver.errors import UnsupportedTileFormat

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


def encode_image(image: Image.Image, fmt: str, quality: int = 85) -> bytes:
    """Encode ``image`` as ``fmt`` (canonical name); JPEG drops alpha onto white."""
    fmt = normalize_format(fmt)
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
