"""Decoded TIFF samples to 8-bit RGB: photographs (RGB, grey, palette) and channel composites.

A photograph's samples already say their colour: RGB or YCbCr (decoded to RGB by the codec),
grey, grey or RGB with alpha (composited on white), or palette indices. Fluorescence images carry
one grey channel per dye instead; :func:`composite` gives each channel a colour (OME-XML's, the
palette of a palette channel, or a default one) and a window of data values, and adds them up,
as viewers such as QuPath and OMERO show them by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

RGBArray = NDArray[np.uint8]
Colour = tuple[int, int, int]

DEFAULT_COLOURS: tuple[Colour, ...] = (
    (0, 0, 255),  # blue: the nuclear stain (DAPI, Hoechst) usually comes first
    (0, 255, 0),
    (255, 0, 0),
    (255, 0, 255),
    (0, 255, 255),
    (255, 255, 0),
)
"""Colours of channels that name none, in channel order (repeated past the sixth)."""

WHITE: Colour = (255, 255, 255)
"""The colour of a single channel: grey shades."""

PHOTOMETRIC_MINISWHITE = 0
PHOTOMETRIC_PALETTE = 3


def default_colour(index: int, count: int) -> Colour:
    """The default colour of channel ``index`` of ``count``: white for a lone channel."""
    return WHITE if count == 1 else DEFAULT_COLOURS[index % len(DEFAULT_COLOURS)]


def palette_lut(colormap: NDArray[Any]) -> NDArray[np.uint8]:
    """A TIFF ColorMap (3 x 2**bits, 16-bit) as an (entries, 3) 8-bit table.

    Like libtiff, a map whose entries all fit in 8 bits is taken as written by an 8-bit writer.
    """
    cmap = np.asarray(colormap).astype(np.uint32)
    if int(cmap.max(initial=0)) > 255:
        cmap = np.right_shift(cmap, np.uint32(8))
    return np.ascontiguousarray(cmap.T.astype(np.uint8))


@dataclass(frozen=True)
class Channel:
    """How one channel adds to the picture: ``colour`` scaled by where a value sits in ``window``.

    A palette channel's own table (``lut``) replaces colour and window.
    """

    name: str
    colour: Colour
    window: tuple[float, float] = (0.0, 255.0)
    lut: NDArray[np.uint8] | None = field(default=None, compare=False, repr=False)


def composite(samples: NDArray[Any], channels: Sequence[Channel]) -> RGBArray:
    """Add the channels (the last axis of ``samples``) in their colours; clip at white."""
    acc = np.zeros((*samples.shape[:2], 3), np.float64)
    for index, channel in enumerate(channels):
        values = samples[..., index]
        if channel.lut is not None:
            indices = np.clip(values.astype(np.int64), 0, len(channel.lut) - 1)
            acc += channel.lut[indices]
            continue
        low, high = channel.window
        span = high - low if high > low else 1.0
        level = np.clip((values.astype(np.float64) - low) / span, 0.0, 1.0)
        acc += level[..., None] * np.asarray(channel.colour, np.float64)
    return np.clip(np.floor(acc + 0.5), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Photo:
    """Samples that are a photograph: RGB, grey or palette, maybe with alpha."""

    photometric: int
    extrasamples: tuple[int, ...]
    lut: NDArray[np.uint8] | None = field(default=None, compare=False, repr=False)

    def __call__(self, pixels: NDArray[Any]) -> RGBArray:
        """Convert decoded samples to 8-bit RGB; alpha is composited on white."""
        if self.photometric == PHOTOMETRIC_PALETTE and self.lut is not None:
            indices = np.clip(pixels[..., 0].astype(np.int64), 0, len(self.lut) - 1)
            return np.ascontiguousarray(self.lut[indices])
        if pixels.dtype != np.uint8:
            pixels = (pixels >> 8).astype(np.uint8)  # uint16: keep the high byte
        if self.photometric == PHOTOMETRIC_MINISWHITE:
            pixels = 255 - pixels
        channels = pixels.shape[-1]
        if channels in (1, 2):
            grey = pixels[..., :1]
            alpha = pixels[..., 1:2] if channels == 2 and self.extrasamples else None
            rgb = np.repeat(grey, 3, axis=-1)
        else:
            rgb = pixels[..., :3]
            alpha = pixels[..., 3:4] if channels >= 4 and self.extrasamples else None
        if alpha is not None:
            a = alpha.astype(np.float32) / 255.0
            colour = rgb.astype(np.float32)
            if self.extrasamples[0] != 1:  # unassociated alpha: colour not yet multiplied
                colour *= a
            rgb = np.clip(colour + 255.0 * (1.0 - a) + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(rgb, dtype=np.uint8)


@dataclass(frozen=True)
class Channels:
    """Samples that are fluorescence channels, composited additively."""

    channels: tuple[Channel, ...]

    def __call__(self, pixels: NDArray[Any]) -> RGBArray:
        return composite(pixels, self.channels)


Render = Photo | Channels
