"""Deterministic synthetic tissue on white glass, rendered region by region.

Sample slides must look like histology (real texture, irregular tissue outline, white glass) yet be
reproducible from a seed and generated as a stream: no level of a 40,000 px slide is ever held in
memory. So every pixel is a pure function of its level-0 position:

* the texture is scikit-image's ``immunohistochemistry`` image (real tissue, shipped with the
  package), re-stained per ``stain`` with an optical-density model and laid out in cells of
  512 px, each cell a randomly flipped, transposed and shifted window of it, cross-faded into its
  neighbours over a 64 px seam ("texture bombing"), with a smooth stain-strength field on top;
* the tissue outline is a smooth random field (cubic B-spline over a coarse random grid, plus a
  finer octave for ragged edges) under an elliptical envelope, thresholded with a soft edge;
* glass is near-white with slight fixed noise.

Smooth fields are evaluated as ``Wy @ grid @ Wx.T`` with small B-spline weight matrices, so a
256 x 256 region costs two tiny matrix products, and the textures of each downsample are
precomputed once by block averaging, so ``region(..., downsample=d)`` matches the block mean of
the level-0 pixels up to the soft tissue edge.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

import numpy as np
import numpy.typing as npt

__all__ = ["STAINS", "TissueImage"]

FloatArray = npt.NDArray[np.float32]
ByteArray = npt.NDArray[np.uint8]
Coords = npt.NDArray[np.float64]
_T = TypeVar("_T", bound=np.generic)

STAINS = ("HE", "KI67", "PAS")
"""Stain renderings :class:`TissueImage` knows."""

_SOURCE = 1024
"""Source texture side in level-0 pixels (the 512 px scikit-image picture upscaled 2x: 40x-like)."""
_CELL = 512
"""Texture cell pitch in level-0 pixels."""
_SEAM = 64
"""Width of the cross-fade between neighbouring cells."""
_PHASE = 160
"""Cell grid origin: keeps seams off 256 px tile borders, so more tiles lie in a single cell."""
_OFFSET_STEP = 32
_GLASS = np.array([243.0, 242.0, 244.0], dtype=np.float32)
_NOISE_SIZE = 256
_COVERAGE = 0.42
"""Fraction of the slide covered by tissue."""
_EDGE = 0.012
"""Soft tissue edge, in units of the outline field (a few level-0 pixels)."""

# Optical-density colour vectors (Ruifrok & Johnston; PAS magenta from its usual matrix).
_OD_HEMATOXYLIN = np.array([0.650, 0.704, 0.286])
_OD_EOSIN = np.array([0.072, 0.990, 0.105])
_OD_PAS = np.array([0.175, 0.972, 0.155])


def _normalise(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    values = np.clip(values - np.percentile(values, 1), 0, None)
    result: npt.NDArray[np.float64] = values / max(float(np.percentile(values, 99)), 1e-6)
    return result


@lru_cache(maxsize=len(STAINS))
def _stained_source(stain: str) -> ByteArray:
    """The IHC picture rendered in ``stain`` (Beer-Lambert: rgb = exp(-OD)), upscaled 2x.

    KI67 keeps the picture's own DAB/hematoxylin colours; H&E and PAS re-stain its hematoxylin,
    DAB and overall density channels.
    """
    from PIL import Image
    from skimage import data
    from skimage.color import rgb2hed

    rgb: npt.NDArray[np.uint8] = data.immunohistochemistry()  # type: ignore[no-untyped-call]
    if stain == "KI67":
        out = rgb
    else:
        hed = rgb2hed(rgb)
        hema, dab = _normalise(hed[..., 0]), _normalise(hed[..., 2])
        density = _normalise(-np.log(np.clip(rgb / 255.0, 1 / 255, 1)).mean(axis=2))
        if stain == "PAS":
            od = hema[..., None] * (_OD_HEMATOXYLIN * 0.6) + (0.2 + 0.8 * dab + 0.3 * density)[
                ..., None
            ] * (_OD_PAS * 0.55)
        else:
            od = hema[..., None] * (_OD_HEMATOXYLIN * 0.9) + (0.25 + 0.35 * density + 0.3 * dab)[
                ..., None
            ] * (_OD_EOSIN * 0.6)
        out = np.clip(255.0 * np.exp(-od) + 0.5, 0, 255).astype(np.uint8)
    image = Image.fromarray(out).resize((_SOURCE, _SOURCE), Image.Resampling.LANCZOS)
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def _bspline_weights(coords: Coords, size: int) -> tuple[FloatArray, int]:
    """Cubic B-spline weights of ``coords`` (grid units) over the grid nodes they touch.

    Returns ``(weights, first)``: ``weights[i, j]`` is the weight of grid node ``first + j``.
    """
    coords = np.clip(coords, 1.0, size - 3.0 - 1e-6)
    base = np.floor(coords).astype(np.intp)
    t = (coords - base).astype(np.float32)
    first = int(base.min()) - 1
    span = int(base.max()) - first + 3
    weights = np.zeros((len(coords), span), dtype=np.float32)
    rows = np.arange(len(coords))
    col = base - 1 - first
    t2 = t * t
    t3 = t2 * t
    weights[rows, col] = (1 - t) ** 3 / 6
    weights[rows, col + 1] = (3 * t3 - 6 * t2 + 4) / 6
    weights[rows, col + 2] = (-3 * t3 + 3 * t2 + 3 * t + 1) / 6
    weights[rows, col + 3] = t3 / 6
    return weights, first


class _Axis:
    """The level-0 positions of a run of level pixels along one axis, with derived weights.

    Tiles in a row share their ``y`` run and tiles in a column their ``x`` run, so the B-spline
    and cell weights are computed once per run (see :func:`_axis`) rather than once per tile.
    """

    def __init__(self, start: int, count: int, downsample: int) -> None:
        self.coords: Coords = (np.arange(start, start + count, dtype=np.float64) + 0.5) * downsample
        self._memo: dict[tuple[str, float, int], object] = {}

    def spline(self, cell: float, size: int) -> tuple[FloatArray, int]:
        key = ("spline", cell, size)
        if key not in self._memo:
            self._memo[key] = _bspline_weights(self.coords / cell + 2.0, size)
        return self._memo[key]  # type: ignore[return-value]

    def cells(self) -> list[tuple[int, int, int, FloatArray]]:
        key = ("cells", 0.0, 0)
        if key not in self._memo:
            self._memo[key] = _cell_weights(self.coords)
        return self._memo[key]  # type: ignore[return-value]

    def envelope(self, size: int) -> FloatArray:
        """Squared distance from the slide's centre line, in half-sizes."""
        key = ("envelope", 0.0, size)
        if key not in self._memo:
            self._memo[key] = (((self.coords - size / 2) / (0.5 * size)) ** 2).astype(np.float32)
        return self._memo[key]  # type: ignore[return-value]


@lru_cache(maxsize=2048)
def _axis(start: int, count: int, downsample: int) -> _Axis:
    return _Axis(start, count, downsample)


@dataclass(frozen=True)
class _Field:
    """A smooth random field: cubic B-spline over a random grid with ``cell`` px spacing."""

    grid: FloatArray
    cell: float

    @classmethod
    def random(cls, rng: np.random.Generator, width: int, height: int, cell: float) -> _Field:
        rows = int(np.ceil(height / cell)) + 5
        cols = int(np.ceil(width / cell)) + 5
        return cls(rng.standard_normal((rows, cols)).astype(np.float32), cell)

    def sample(self, ys: _Axis, xs: _Axis) -> FloatArray:
        """Evaluate at the level-0 positions of ``ys`` x ``xs`` (outer product grid)."""
        wy, y0 = ys.spline(self.cell, self.grid.shape[0])
        wx, x0 = xs.spline(self.cell, self.grid.shape[1])
        sub = self.grid[y0 : y0 + wy.shape[1], x0 : x0 + wx.shape[1]]
        return (wy @ sub @ wx.T).astype(np.float32, copy=False)


@dataclass(frozen=True)
class _Level:
    """The source texture in its 8 orientations (views), as seen at one downsample."""

    orientations: tuple[ByteArray, ...]
    size: int


@dataclass(frozen=True)
class _Cells:
    """Per texture cell: orientation and window offset (level-0 pixels), chosen once."""

    orientation: npt.NDArray[np.intp]
    offset_x: npt.NDArray[np.intp]
    offset_y: npt.NDArray[np.intp]
    pad: int = 2
    """Cells before the first one, so regions reaching past the image have cells too."""

    @classmethod
    def random(cls, rng: np.random.Generator, width: int, height: int) -> _Cells:
        shape = (height // _CELL + 6, width // _CELL + 6)
        steps = (_SOURCE - _CELL - _SEAM) // _OFFSET_STEP + 1
        return cls(
            rng.integers(0, 8, shape),
            rng.integers(0, steps, shape) * _OFFSET_STEP,
            rng.integers(0, steps, shape) * _OFFSET_STEP,
        )

    def at(self, row: int, col: int) -> tuple[int, int, int]:
        r = min(max(row + self.pad, 0), self.orientation.shape[0] - 1)
        c = min(max(col + self.pad, 0), self.orientation.shape[1] - 1)
        return int(self.orientation[r, c]), int(self.offset_x[r, c]), int(self.offset_y[r, c])


def _cell_weights(coords: Coords) -> list[tuple[int, int, int, FloatArray]]:
    """Cells touching ``coords`` (level-0 positions along one axis) with their trapezoid weights.

    Each cell ``i`` has weight 1 on ``[i*C + S/2, (i+1)*C - S/2]`` and linear ramps of width S
    around its borders; the weights of neighbouring cells sum to 1. Returns
    ``(cell, start, stop, weights[start:stop])`` for the cells with non-zero weight.
    """
    half = _SEAM / 2
    coords = coords - _PHASE
    first = int(np.floor((coords[0] - half) / _CELL))
    last = int(np.floor((coords[-1] + half) / _CELL))
    cells = []
    for i in range(first, last + 1):
        rise = np.clip((coords - (i * _CELL - half)) / _SEAM, 0.0, 1.0)
        fall = np.clip(((i + 1) * _CELL + half - coords) / _SEAM, 0.0, 1.0)
        weight = (rise * fall).astype(np.float32)
        nonzero = np.flatnonzero(weight)
        if len(nonzero):
            start, stop = int(nonzero[0]), int(nonzero[-1]) + 1
            cells.append((i, start, stop, weight[start:stop]))
    return cells


class TissueImage:
    """Deterministic synthetic tissue on white glass, any region on demand (streaming)."""

    def __init__(self, width: int, height: int, seed: int = 0, *, stain: str = "HE") -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"TissueImage size must be positive, got {width}x{height}")
        if stain not in STAINS:
            raise ValueError(f"unknown stain {stain!r}; expected one of {STAINS}")
        self.width = width
        self.height = height
        self.seed = seed
        self.stain = stain
        rng = np.random.default_rng([seed, STAINS.index(stain)])
        side = max(width, height)
        self._cells = _Cells.random(rng, width, height)
        self._shape = _Field.random(rng, width, height, side / 5.0)
        self._ragged = _Field.random(rng, width, height, side / 40.0)
        self._strength = _Field.random(rng, width, height, max(side / 8.0, 2 * _CELL))
        self._noise = rng.normal(0.0, 1.5, (_NOISE_SIZE, _NOISE_SIZE, 1)).astype(np.float32)
        self._glass = np.clip(_GLASS + self._noise + 0.5, 0, 255).astype(np.uint8)
        self._threshold = 0.0
        self._threshold = self._pick_threshold()
        self._levels: dict[int, _Level] = {}
        self._thumbnails: dict[int, ByteArray] = {}
        self._lock = threading.Lock()

    def region(self, x: int, y: int, w: int, h: int, downsample: int = 1) -> ByteArray:
        """(h, w, 3) uint8 RGB of the image seen at `downsample`.

        x, y, w, h are in that level's pixels. Pixels outside the image are glass, so padded
        edge tiles are well defined.
        """
        if w <= 0 or h <= 0:
            raise ValueError(f"region size must be positive, got {w}x{h}")
        if downsample < 1:
            raise ValueError(f"downsample must be >= 1, got {downsample}")
        ys, xs = _axis(y, h, downsample), _axis(x, w, downsample)
        mask = self._mask(ys, xs)
        if not mask.any():
            return _periodic(self._glass, x, y, w, h).copy()
        # tissue = 255 - (255 - texture) * strength; out = glass + mask * (tissue - glass),
        # regrouped as out = offset + scale * texture so few operations touch all three channels.
        # strength <= 1 keeps every pixel a convex mix of values in [0, 255]: no clipping needed.
        scale = mask * (0.89 + 0.11 * np.tanh(self._strength.sample(ys, xs)))
        offset = 255.0 * (mask - scale) + 0.5
        if mask.min() >= 1.0:
            out = np.empty((h, w, 3), dtype=np.float32)
            out[:] = offset[..., None]
        else:
            clear = 1.0 - mask
            offset += clear * _periodic(self._noise, x, y, w, h)[..., 0]
            out = clear[..., None] * _GLASS
            out += offset[..., None]
        for y_slice, x_slice, weight, window in self._texture(
            self._level(downsample), ys, xs, x, y, w, h, downsample
        ):
            factor = scale[y_slice, x_slice]
            if weight is not None:
                factor = factor * weight
            out[y_slice, x_slice] += factor[..., None] * window
        return out.astype(np.uint8)

    def thumbnail(self, max_size: int) -> ByteArray:
        """Whole image at the largest power-of-two downsample that keeps it >= ``max_size``."""
        cached = self._thumbnails.get(max_size)
        if cached is None:
            downsample = 1
            while max(self.width, self.height) // (downsample * 2) >= max_size:
                downsample *= 2
            width = max(1, -(-self.width // downsample))
            height = max(1, -(-self.height // downsample))
            cached = self._thumbnails[max_size] = self.region(0, 0, width, height, downsample)
            cached.flags.writeable = False  # shared between callers
        return cached

    def tissue_fraction(self, x: int, y: int, w: int, h: int, downsample: int = 1) -> float:
        """Fraction of the region covered by tissue (cheap: no texture work)."""
        return float(self._mask(_axis(y, h, downsample), _axis(x, w, downsample)).mean())

    def __repr__(self) -> str:
        return f"TissueImage({self.width}, {self.height}, seed={self.seed}, stain={self.stain!r})"

    def _pick_threshold(self) -> float:
        """Choose the tissue threshold on a coarse preview so coverage is about ``_COVERAGE``."""
        down_y, down_x = max(1, self.height // 96), max(1, self.width // 128)
        ys, xs = _Axis(0, self.height // down_y, down_y), _Axis(0, self.width // down_x, down_x)
        return float(np.quantile(self._outline(ys, xs), 1.0 - _COVERAGE))

    def _outline(self, ys: _Axis, xs: _Axis) -> FloatArray:
        """The tissue outline field: blobs, ragged edges, pushed down towards the border."""
        field = self._shape.sample(ys, xs) + 0.25 * self._ragged.sample(ys, xs)
        ey, ex = ys.envelope(self.height), xs.envelope(self.width)
        envelope = np.clip(ey[:, None] + ex[None, :] - 0.45, 0.0, None)
        result: FloatArray = field - 3.0 * envelope
        return result

    def _mask(self, ys: _Axis, xs: _Axis) -> FloatArray:
        mask: FloatArray = np.clip(
            (self._outline(ys, xs) - self._threshold) / _EDGE + 0.5, 0.0, 1.0
        )
        return mask

    def _texture(
        self, level: _Level, ys: _Axis, xs: _Axis, x: int, y: int, w: int, h: int, ds: int
    ) -> Iterator[tuple[slice, slice, FloatArray | None, ByteArray]]:
        """The texture cells under the region: ``(rows, columns, weight or None, window)``.

        A cell is an oriented, shifted window of the source; neighbours overlap on the seams,
        where their weights sum to 1. ``None`` means weight 1 everywhere (the usual case).
        """
        rows, columns = ys.cells(), xs.cells()
        single = len(rows) == 1 and len(columns) == 1
        for row, y_start, y_stop, y_weight in rows:
            for col, x_start, x_stop, x_weight in columns:
                window = self._window(
                    level,
                    row,
                    col,
                    x + x_start,
                    y + y_start,
                    x_stop - x_start,
                    y_stop - y_start,
                    ds,
                )
                weight = None if single else y_weight[:, None] * x_weight[None, :]
                yield slice(y_start, y_stop), slice(x_start, x_stop), weight, window

    def _window(
        self, level: _Level, row: int, col: int, x: int, y: int, w: int, h: int, ds: int
    ) -> ByteArray:
        """The (h, w) texture of cell (row, col) at level pixel (x, y): a view when it fits."""
        orientation, offset_x, offset_y = self._cells.at(row, col)
        # Level pixel X maps to texture column X - (cell start - offset) / ds.
        tx = x - round((col * _CELL + _PHASE - _SEAM / 2 - offset_x) / ds)
        ty = y - round((row * _CELL + _PHASE - _SEAM / 2 - offset_y) / ds)
        return _periodic(level.orientations[orientation], tx, ty, w, h)

    def _level(self, downsample: int) -> _Level:
        level = self._levels.get(downsample)
        if level is None:
            with self._lock:
                level = self._levels.get(downsample)
                if level is None:
                    level = self._build_level(downsample)
                    self._levels[downsample] = level
        return level

    def _build_level(self, downsample: int) -> _Level:
        """Downsample the source once (block means when the size allows), in 8 orientations."""
        source = _stained_source(self.stain)
        if downsample == 1:
            texture = source
        elif _SOURCE % downsample == 0:
            size = _SOURCE // downsample
            blocks = source.reshape(size, downsample, size, downsample, 3).mean(axis=(1, 3))
            texture = np.round(blocks).astype(np.uint8)
        else:
            from PIL import Image

            size = max(1, round(_SOURCE / downsample))
            image = Image.fromarray(source).resize((size, size), Image.Resampling.BOX)
            texture = np.asarray(image, dtype=np.uint8)
        transposed = texture.transpose(1, 0, 2)
        orientations = tuple(
            view[::fy, ::fx] for view in (texture, transposed) for fy in (1, -1) for fx in (1, -1)
        )
        return _Level(orientations, texture.shape[0])


def _periodic(texture: npt.NDArray[_T], x: int, y: int, w: int, h: int) -> npt.NDArray[_T]:
    """The (h, w) window at (x, y) of the infinite periodic tiling of ``texture``."""
    th, tw = texture.shape[:2]
    sx, sy = x % tw, y % th
    if sx + w <= tw and sy + h <= th:
        return texture[sy : sy + h, sx : sx + w]
    reps = ((sy + h + th - 1) // th, (sx + w + tw - 1) // tw) + (1,) * (texture.ndim - 2)
    return np.tile(texture, reps)[sy : sy + h, sx : sx + w]
