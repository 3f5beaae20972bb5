"""Execute a IIIF image plan: read, scale, mirror, rotate, recolour, encode.

All validation happened in :func:`slideserver.tiling.iiif.plan_image` (the plan also names the
media type); this module only reads the pixels a plan names, in the specification's order
(region, size, rotation, quality, format). :class:`slideserver.services.iiif.IIIFService` runs
it; it blocks: call it from the worker thread pool, never on the event loop.
"""

from __future__ import annotations

from PIL import Image

from slideserver.imaging.encode import encode_image, flatten, normalize_format
from slideserver.imaging.regions import read_scaled_region
from slideserver.readers.base import SlideReader
from slideserver.tiling.iiif import IIIFPlan

BITONAL_THRESHOLD = 128
"""Grey level at or above which a bitonal pixel is white.

A fixed threshold rather than a per-image one (Otsu): a viewer assembles a bitonal view from many
tiles, and a threshold computed per tile would make neighbouring tiles disagree at their seams.
"""

_ROTATIONS = {
    90: Image.Transpose.ROTATE_270,  # Pillow's ROTATE_n turns counter-clockwise; IIIF clockwise.
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_90,
}


def render_iiif(reader: SlideReader, plan: IIIFPlan, quality: int = 85) -> bytes:
    """Render ``plan`` from ``reader``; return the encoded bytes (of ``plan.media_type``).

    ``quality`` is the JPEG/WebP encoder quality, not the IIIF quality (that is in the plan).
    """
    image = read_scaled_region(
        reader,
        plan.l0_x,
        plan.l0_y,
        plan.l0_width,
        plan.l0_height,
        plan.width,
        plan.height,
    )
    image = transform(image, plan)
    fmt = normalize_format(plan.format)
    if image.mode == "1" and fmt != "png":
        # JPEG cannot store 1-bit pixels and WebP would widen them to RGB; L keeps them black/white.
        image = image.convert("L")
    return encode_image(image, fmt, quality)


def transform(image: Image.Image, plan: IIIFPlan) -> Image.Image:
    """Apply the plan's mirroring, rotation and quality to the scaled region, in that order."""
    image = flatten(image)
    if plan.mirror:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if plan.rotation:
        image = image.transpose(_ROTATIONS[plan.rotation])
    if plan.quality == "gray":
        image = image.convert("L")
    elif plan.quality == "bitonal":
        image = image.convert("L").point(
            lambda value: 255 if value >= BITONAL_THRESHOLD else 0, mode="1"
        )
    return image
