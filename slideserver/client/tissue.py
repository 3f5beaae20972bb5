"""Where the tissue is: Otsu's threshold on a thumbnail, and the patch grid over it.

Glass is bright and tissue darker, whatever the stain, so one threshold on the grey levels of
a thumbnail separates them (Otsu's method: the threshold that best splits the histogram in
two). Numpy only; used by the dataset and by ``slideserver export``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Mask = npt.NDArray[np.bool_]
Pixels = npt.NDArray[np.uint8]

MIN_CONTRAST = 12.0
"""Grey levels between the two classes' means below which a thumbnail is taken as one class
(all glass, or all tissue): Otsu splits noise too, and that split means nothing."""
GLASS_GREY = 220
"""Pixels darker than this are tissue when Otsu finds no contrast."""


def otsu_threshold(grey: npt.NDArray[np.uint8]) -> tuple[int, float]:
    """Otsu's threshold of a uint8 image and the distance between the two classes' means."""
    hist = np.bincount(grey.ravel(), minlength=256).astype(np.float64)
    total = hist.sum()
    if total == 0:
        return 0, 0.0
    levels = np.arange(256, dtype=np.float64)
    weight0 = np.cumsum(hist)
    weight1 = total - weight0
    sum0 = np.cumsum(hist * levels)
    mean0 = np.divide(sum0, weight0, out=np.zeros(256), where=weight0 > 0)
    mean1 = np.divide(sum0[-1] - sum0, weight1, out=np.zeros(256), where=weight1 > 0)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    threshold = int(np.argmax(between))
    return threshold, float(mean1[threshold] - mean0[threshold])


def tissue_mask(rgb: Pixels) -> Mask:
    """True where a thumbnail shows tissue (darker than Otsu's threshold on its grey levels)."""
    if rgb.ndim == 3:
        weighted = rgb[..., :3].astype(np.uint16) @ np.array([77, 150, 29], np.uint16)
        grey = (weighted >> 8).astype(np.uint8)
    else:
        grey = rgb.astype(np.uint8)
    threshold, contrast = otsu_threshold(grey)
    if contrast < MIN_CONTRAST:
        return grey < GLASS_GREY
    mask: Mask = grey <= threshold
    return mask


@dataclass(frozen=True)
class PatchGrid:
    """Patches of ``extent`` x ``extent`` level-0 pixels, on a grid from the slide's origin."""

    extent: float
    """Level-0 pixels per patch side: the patch size times the downsample."""
    xs: npt.NDArray[np.int64]
    ys: npt.NDArray[np.int64]
    tissue: npt.NDArray[np.float64]
    """Fraction of each patch's thumbnail footprint that is tissue."""

    def __len__(self) -> int:
        return len(self.xs)


def tissue_grid(
    width: int, height: int, extent: float, mask: Mask, min_tissue: float = 0.5
) -> PatchGrid:
    """Every whole patch of the slide's grid whose footprint on ``mask`` is at least
    ``min_tissue`` tissue, in row-major order (rows top to bottom)."""
    cols, rows = math.floor(width / extent), math.floor(height / extent)
    if cols <= 0 or rows <= 0:
        empty = np.zeros(0, np.int64)
        return PatchGrid(extent, empty, empty, np.zeros(0))
    mh, mw = mask.shape
    # Integral image: any footprint's tissue count in four look-ups.
    integral = np.zeros((mh + 1, mw + 1), np.int64)
    integral[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1)
    edges_x = np.round(np.arange(cols + 1) * extent).astype(np.int64)
    edges_y = np.round(np.arange(rows + 1) * extent).astype(np.int64)
    mx0 = np.clip(np.floor(edges_x[:-1] * mw / width), 0, mw - 1).astype(np.int64)
    mx1 = np.clip(np.ceil(edges_x[1:] * mw / width), mx0 + 1, mw).astype(np.int64)
    my0 = np.clip(np.floor(edges_y[:-1] * mh / height), 0, mh - 1).astype(np.int64)
    my1 = np.clip(np.ceil(edges_y[1:] * mh / height), my0 + 1, mh).astype(np.int64)
    y0, x0 = np.meshgrid(my0, mx0, indexing="ij")
    y1, x1 = np.meshgrid(my1, mx1, indexing="ij")
    counts = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    fraction = counts / ((y1 - y0) * (x1 - x0))
    keep = fraction >= min_tissue
    rows_kept, cols_kept = np.nonzero(keep)
    return PatchGrid(extent, edges_x[cols_kept], edges_y[rows_kept], fraction[keep])
