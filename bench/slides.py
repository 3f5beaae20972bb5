"""Generate the two 50,000 x 40,000 benchmark slides (Aperio SVS by 4, generic TIFF by 2).

Rendering 40,000 level-0 tiles of :class:`TissueImage` would take far longer than the benchmark
may run, so the slides are tiled from a small pool of real synthetic-tissue tiles (rendered once
per downsample) laid under an irregular tissue outline, with glass around it. What the servers do
per tile (seek, read, decode, resample, encode) is then the same as on a rendered slide, and the
files are written by the samples' own SVS and generic TIFF writers.
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from slideserver.samples.tiff import AperioInfo, write_generic_tiff, write_svs
from slideserver.samples.tissue import TissueImage

log = logging.getLogger(__name__)

BENCH_SIZE = (50_000, 40_000)
TILE = 256
VERSION = "1"
"""Bump when the pictures change, so cached slides are rewritten."""

Pixels = npt.NDArray[np.uint8]


class PoolTissue:
    """A ``Tissue`` for the samples' writers: pool tiles under an outline, glass elsewhere."""

    def __init__(self, width: int, height: int, seed: int = 3, pool_size: int = 24) -> None:
        self.width = width
        self.height = height
        self._rng = np.random.default_rng(seed)
        source = TissueImage(16384, 16384, seed=seed)
        self._pool: dict[int, list[Pixels]] = {}
        for downsample in (1, 2, 4, 8, 16):
            side = 16384 // downsample
            tiles: list[Pixels] = []
            attempts = 0
            while len(tiles) < pool_size and attempts < pool_size * 6:
                attempts += 1
                x = int(self._rng.integers(side // 6, side - side // 6 - TILE))
                y = int(self._rng.integers(side // 6, side - side // 6 - TILE))
                if source.tissue_fraction(x, y, TILE, TILE, downsample) < 0.6:
                    continue
                tiles.append(source.region(x, y, TILE, TILE, downsample))
            self._pool[downsample] = tiles or [source.region(0, 0, TILE, TILE, downsample)]
        noise = self._rng.normal(0.0, 1.5, (TILE, TILE, 1))
        glass = np.array([243.0, 242.0, 244.0]) + noise
        self._glass: Pixels = np.clip(glass + 0.5, 0, 255).astype(np.uint8)
        self._phases = self._rng.uniform(0, 2 * math.pi, 6)

    def _inside(self, l0_x: float, l0_y: float) -> bool:
        """Irregular blob covering about 45% of the slide."""
        u = (l0_x / self.width - 0.5) / 0.42
        v = (l0_y / self.height - 0.5) / 0.40
        angle = math.atan2(v, u)
        p = self._phases
        wobble = (
            1.0
            + 0.12 * math.sin(3 * angle + p[0])
            + 0.07 * math.sin(7 * angle + p[1])
            + 0.04 * math.sin(13 * angle + p[2])
        )
        return u * u + v * v < wobble * wobble

    def region(self, x: int, y: int, w: int, h: int, downsample: int = 1) -> Pixels:
        """Return one tile-sized region (the writers only ask for whole tiles)."""
        centre_x = (x + w / 2) * downsample
        centre_y = (y + h / 2) * downsample
        if not self._inside(centre_x, centre_y):
            tile = self._glass
        else:
            pool = self._pool[min(16, downsample)]
            digest = hashlib.blake2b(f"{x},{y},{downsample}".encode(), digest_size=4).digest()
            tile = pool[int.from_bytes(digest, "big") % len(pool)]
        if (h, w) != tile.shape[:2]:
            tile = np.resize(tile, (h, w, 3))
        return tile

    def thumbnail(self, max_size: int) -> Pixels:
        """A coarse picture of the outline."""
        scale = max(self.width, self.height) / max_size
        width, height = max(1, round(self.width / scale)), max(1, round(self.height / scale))
        out = np.empty((height, width, 3), dtype=np.uint8)
        out[:] = (243, 242, 244)
        for row in range(height):
            for col in range(width):
                if self._inside(col * scale, row * scale):
                    out[row, col] = (190, 120, 170)
        return out


def bench_slides(folder: Path, size: tuple[int, int] = BENCH_SIZE) -> dict[str, Path]:
    """Write (once; reused while the version and size match) and return both bench slides."""
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    stamp = f"v{VERSION}-{width}x{height}"
    svs = folder / f"BENCH-{stamp}_A1_HE.svs"
    tif = folder / f"BENCH-{stamp}_A2_HE.tif"
    tissue: PoolTissue | None = None
    if not svs.exists():
        tissue = tissue or PoolTissue(width, height)
        log.info("writing %s", svs)
        partial = svs.with_suffix(".partial")
        label = Image.new("RGB", (400, 400), "white")
        macro = Image.new("RGB", (1200, 400), "white")
        info = AperioInfo(filename=svs.stem, barcode="BENCH")
        write_svs(partial, tissue, info, label=label, macro=macro)
        partial.rename(svs)
    if not tif.exists():
        tissue = tissue or PoolTissue(width, height)
        log.info("writing %s", tif)
        partial = tif.with_suffix(".partial")
        write_generic_tiff(partial, tissue)
        partial.rename(tif)
    return {"svs": svs, "tiff": tif}
