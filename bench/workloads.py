"""URL lists for the benchmark: cold, warm and pan, as Deep Zoom tile paths ``{z}/{col}_{row}``.

* cold: distinct tiles of the three finest Deep Zoom levels, shuffled; each asked for once.
* warm: a set of 200 tiles of those levels, asked for over and over.
* pan: viewer sessions: start with the whole slide in a 1600 x 1000 viewport, zoom in level by
  level towards a point of tissue, then pan around at the finest two levels; only tiles newly
  entering the viewport are asked for (the browser caches the rest).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

from slideserver.tiling.deepzoom import DeepZoomGrid

VIEWPORT = (1600, 1000)
WARM_SET = 200


def path(z: int, col: int, row: int) -> str:
    return f"{z}/{col}_{row}.jpeg"


def top_levels(grid: DeepZoomGrid, count: int = 3) -> range:
    return range(grid.level_count - count, grid.level_count)


def cold(grid: DeepZoomGrid, limit: int, seed: int = 1) -> list[str]:
    """Distinct tiles of the three finest levels, in random order, at most ``limit``."""
    rng = random.Random(seed)
    tiles = [
        (z, col, row)
        for z in top_levels(grid)
        for col in range(grid.tile_count(z)[0])
        for row in range(grid.tile_count(z)[1])
    ]
    chosen = rng.sample(tiles, min(limit, len(tiles)))
    return [path(*tile) for tile in chosen]


def warm(grid: DeepZoomGrid, seed: int = 2) -> list[str]:
    """A fixed set of tiles of the three finest levels (repeated by the load generator)."""
    urls = cold(grid, WARM_SET, seed=seed)
    return urls


def _visible(
    grid: DeepZoomGrid, z: int, centre: tuple[float, float]
) -> Iterator[tuple[int, int, int]]:
    """Tiles of level ``z`` in a viewport centred on ``centre`` (fractions of the slide)."""
    z_w, z_h = grid.z_dimensions[z]
    cols, rows = grid.tile_count(z)
    x0 = centre[0] * z_w - VIEWPORT[0] / 2
    y0 = centre[1] * z_h - VIEWPORT[1] / 2
    c0 = max(0, math.floor(x0 / grid.tile_size))
    r0 = max(0, math.floor(y0 / grid.tile_size))
    c1 = min(cols - 1, math.floor((x0 + VIEWPORT[0]) / grid.tile_size))
    r1 = min(rows - 1, math.floor((y0 + VIEWPORT[1]) / grid.tile_size))
    for row in range(r0, r1 + 1):
        for col in range(c0, c1 + 1):
            yield z, col, row


def pan(grid: DeepZoomGrid, limit: int, seed: int = 3) -> list[str]:
    """Concatenated viewer sessions, at most ``limit`` requests."""
    rng = random.Random(seed)
    urls: list[str] = []
    top = grid.level_count - 1
    start = top
    while start > 0 and max(grid.z_dimensions[start]) > max(VIEWPORT):
        start -= 1
    while len(urls) < limit:
        seen: set[tuple[int, int, int]] = set()
        # A point inside the tissue outline (the bench slides' tissue is a central blob).
        angle = rng.uniform(0, 2 * math.pi)
        radius = 0.3 * math.sqrt(rng.random())
        centre = (0.5 + radius * math.cos(angle), 0.5 + radius * math.sin(angle))
        session: list[tuple[int, int, int]] = []
        for z in range(start, top + 1):
            session.extend(t for t in _visible(grid, z, centre) if t not in seen)
            seen.update(session)
        for z in (top - 1, top):
            x, y = centre
            z_w, z_h = grid.z_dimensions[z]
            for _ in range(6):
                x = min(1.0, max(0.0, x + rng.choice((-1, 1)) * 400 / z_w))
                y = min(1.0, max(0.0, y + rng.choice((-1, 0, 1)) * 300 / z_h))
                new = [t for t in _visible(grid, z, (x, y)) if t not in seen]
                seen.update(new)
                session.extend(new)
        urls.extend(path(*t) for t in session)
    return urls[:limit]


def prime(grid: DeepZoomGrid) -> list[str]:
    """The last tile of every level: opens every stored level once before a measurement."""
    urls = []
    for z in range(grid.level_count):
        cols, rows = grid.tile_count(z)
        urls.append(path(z, cols - 1, rows - 1))
    return urls


def stored_tiles(grid: DeepZoomGrid, limit: int, seed: int = 4) -> list[tuple[int, int]]:
    """Distinct whole stored tiles of level 0 (column, row), shuffled, at most ``limit``.

    The finest Deep Zoom level is level 0's stored grid when the slide's tiles pass through;
    the last column and row are left out (Deep Zoom crops them, so renders them).
    """
    rng = random.Random(seed)
    cols, rows = grid.tile_count(grid.level_count - 1)
    tiles = [(col, row) for row in range(rows - 1) for col in range(cols - 1)]
    return rng.sample(tiles, min(limit, len(tiles)))


def stored(grid: DeepZoomGrid, tiles: list[tuple[int, int]]) -> list[str]:
    """The stored tiles as Deep Zoom URLs of the finest level (sent as stored, passthrough)."""
    return [path(grid.level_count - 1, col, row) for col, row in tiles]


def frames(tiles: list[tuple[int, int]], columns: int) -> list[str]:
    """The same tiles as DICOMweb frame numbers of the level-0 instance (TILED_FULL, 1-based)."""
    return [str(row * columns + col + 1) for col, row in tiles]
