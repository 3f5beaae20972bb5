"""``python -m bench.render``: CPU cost of the Deep Zoom tiles that have no stored copy.

Aperio pyramids step by 4, so every second Deep Zoom level is assembled from the finer stored
level's JPEG tiles decoded at reduced DCT scale, then encoded. This times, in CPU time
(``time.process_time``) per 256 x 256 output tile, over many repetitions:

* the path the service takes for such a tile (``TileService.deepzoom_tile``'s ``make``), at 2x
  of a stored level, and the same for 4x and 8x (assembly called on level 0 directly: an Aperio
  pyramid never asks for those through Deep Zoom, other pyramids and IIIF do);
* the old Pillow-only path, reproduced here, as the baseline;
* the pieces: reading the stored tiles, decoding (Pillow ``draft`` / simplejpeg), assembling
  (Pillow ``paste`` / numpy) and encoding (Pillow / simplejpeg).

The slide is the benchmark's 50,000 x 40,000 SVS when ``python -m bench.run`` has cached it,
otherwise the small sample SVS written to a temporary folder. ``--profile`` adds a profile of the
service path (cProfile). Runs in a few seconds.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import simplejpeg
from PIL import Image

from slideserver.imaging.encode import encode_image
from slideserver.imaging.regions import read_scaled_array
from slideserver.models import SlideSource
from slideserver.readers.base import SlideReader
from slideserver.readers.registry import default_registry
from slideserver.tiling.deepzoom import DeepZoomGrid, TileRequestGeometry

BENCH_SLIDE = (
    Path.home() / ".cache" / "slideserver-bench" / "slides" / "BENCH-v1-50000x40000_A1_HE.svs"
)
QUALITY = 85
"""The service's default ``jpeg_quality``."""

Pixels = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Job:
    """One output tile: its geometry and the stored tiles (level 0) it is made of."""

    geometry: TileRequestGeometry
    scale: int
    stored: tuple[tuple[int, int, int, int], ...]
    """(t_col, t_row, z_x, z_y) of every stored tile, and where it lands in the output."""


def jobs_for(grid: DeepZoomGrid, reader: SlideReader, scale: int, count: int) -> list[Job]:
    """``count`` interior output tiles, near the slide's centre, at ``scale`` of level 0."""
    lvl = reader.info.levels[0]
    tile = grid.tile_size
    span = tile * scale  # level-0 pixels per output tile
    cols, rows = lvl.width // span, lvl.height // span
    assert cols and rows, f"the slide is too small for {scale}x output tiles"
    # Whole output tiles nearest the centre (cycled if the slide has fewer than ``count``).
    centre = ((cols - 1) / 2, (rows - 1) / 2)
    places = sorted(
        ((c, r) for r in range(rows) for c in range(cols)),
        key=lambda p: (p[0] - centre[0]) ** 2 + (p[1] - centre[1]) ** 2,
    )
    per = scale  # stored tiles per output tile, along each axis
    out: list[Job] = []
    for index in range(count):
        col, row = places[index % len(places)]
        geometry = TileRequestGeometry(
            l0_x=col * span,
            l0_y=row * span,
            l0_width=span,
            l0_height=span,
            z_width=tile,
            z_height=tile,
            stored_level=None,
        )
        stored = tuple(
            (col * per + i, row * per + j, i * tile // scale, j * tile // scale)
            for j in range(per)
            for i in range(per)
        )
        out.append(Job(geometry, scale, stored))
    return out


def timed(fn: Callable[[Job], object], jobs: Sequence[Job], budget: float, rounds: int) -> float:
    """Median CPU microseconds per job over ``rounds`` rounds of about ``budget / rounds`` s."""
    fn(jobs[0])  # warm up
    results: list[float] = []
    for _ in range(rounds):
        done = 0
        started = time.process_time()
        while True:
            for job in jobs:
                fn(job)
            done += len(jobs)
            elapsed = time.process_time() - started
            if elapsed >= budget / rounds:
                break
        results.append(elapsed / done * 1e6)
    return statistics.median(results)


# --- the paths timed ----------------------------------------------------------------------------


def service_path(reader: SlideReader) -> Callable[[Job], bytes]:
    """What ``TileService.deepzoom_tile``'s ``make`` does for a tile without a stored copy."""

    def run(job: Job) -> bytes:
        g = job.geometry
        pixels = read_scaled_array(
            reader, g.l0_x, g.l0_y, g.l0_width, g.l0_height, g.z_width, g.z_height
        )
        return encode_image(pixels, "jpeg", QUALITY)

    return run


def assembly_path(reader: SlideReader) -> Callable[[Job], bytes]:
    """The stored-tile assembly on level 0 at the job's scale, then the encode."""
    from slideserver.imaging.regions import read_from_stored_tiles

    def run(job: Job) -> bytes:
        g = job.geometry
        pixels = read_from_stored_tiles(
            reader, 0, g.l0_x, g.l0_y, g.l0_width, g.l0_height, g.z_width, g.z_height
        )
        assert pixels is not None, "the fast path did not apply"
        return encode_image(pixels, "jpeg", QUALITY)

    return run


def pillow_baseline(reader: SlideReader) -> Callable[[Job], bytes]:
    """The path before simplejpeg: Pillow ``draft`` decode, ``paste``, Pillow encode."""

    def run(job: Job) -> bytes:
        g = job.geometry
        out = Image.new("RGB", (g.z_width, g.z_height), (255, 255, 255))
        for t_col, t_row, z_x, z_y in job.stored:
            encoded = reader.read_encoded_tile(0, t_col, t_row)
            assert encoded is not None
            stored = Image.open(io.BytesIO(encoded.data))
            stored.draft("RGB", (stored.width // job.scale, stored.height // job.scale))
            out.paste(stored.convert("RGB"), (z_x, z_y))
        buf = io.BytesIO()
        out.save(buf, "JPEG", quality=QUALITY)
        return buf.getvalue()

    return run


def pieces(
    reader: SlideReader, jobs: Sequence[Job], budget: float, rounds: int
) -> list[tuple[str, float]]:
    """Time read, decode, assemble and encode separately (per output tile)."""
    data = {
        (t_col, t_row): reader.read_encoded_tile(0, t_col, t_row)
        for job in jobs
        for t_col, t_row, _, _ in job.stored
    }
    encoded = {key: tile.data for key, tile in data.items() if tile is not None}

    def read(job: Job) -> None:
        for t_col, t_row, _, _ in job.stored:
            reader.read_encoded_tile(0, t_col, t_row)

    def decode_pillow(job: Job) -> list[Image.Image]:
        tiles = []
        for t_col, t_row, _, _ in job.stored:
            stored = Image.open(io.BytesIO(encoded[t_col, t_row]))
            stored.draft("RGB", (stored.width // job.scale, stored.height // job.scale))
            tiles.append(stored.convert("RGB"))
        return tiles

    def decode_simplejpeg(job: Job) -> list[Pixels]:
        side = job.geometry.z_width // job.scale
        return [
            simplejpeg.decode_jpeg(encoded[t_col, t_row], "RGB", min_width=side, min_height=side)
            for t_col, t_row, _, _ in job.stored
        ]

    def decode_floor(job: Job) -> list[Pixels]:
        # 1/8 scale needs only the DC coefficients, but libjpeg still Huffman-decodes every
        # coefficient: about the least any decoder of these streams can do.
        side = job.geometry.z_width // job.scale // 8 or 1
        return [
            simplejpeg.decode_jpeg(encoded[t_col, t_row], "RGB", min_width=side, min_height=side)
            for t_col, t_row, _, _ in job.stored
        ]

    decoded_pillow = {id(job): decode_pillow(job) for job in jobs}
    decoded_arrays = {id(job): decode_simplejpeg(job) for job in jobs}

    def paste_pillow(job: Job) -> Image.Image:
        g = job.geometry
        out = Image.new("RGB", (g.z_width, g.z_height), (255, 255, 255))
        for tile, (_, _, z_x, z_y) in zip(decoded_pillow[id(job)], job.stored, strict=True):
            out.paste(tile, (z_x, z_y))
        return out

    def assemble_numpy(job: Job) -> Pixels:
        g = job.geometry
        out = np.full((g.z_height, g.z_width, 3), 255, np.uint8)
        for tile, (_, _, z_x, z_y) in zip(decoded_arrays[id(job)], job.stored, strict=True):
            h, w = tile.shape[:2]
            out[z_y : z_y + h, z_x : z_x + w] = tile
        return out

    images = {id(job): paste_pillow(job) for job in jobs}
    arrays = {id(job): assemble_numpy(job) for job in jobs}

    def encode_pillow(job: Job) -> bytes:
        buf = io.BytesIO()
        images[id(job)].save(buf, "JPEG", quality=QUALITY)
        return buf.getvalue()

    def encode_simplejpeg(job: Job) -> bytes:
        return bytes(
            simplejpeg.encode_jpeg(arrays[id(job)], QUALITY, "RGB", colorsubsampling="420")
        )

    rows: list[tuple[str, Callable[[Job], object]]] = [
        ("read stored tiles (read_encoded_tile)", read),
        ("decode, Pillow draft", decode_pillow),
        ("decode, simplejpeg scaled", decode_simplejpeg),
        ("decode floor, simplejpeg at 1/8 (entropy decoding)", decode_floor),
        ("assemble, Pillow paste", paste_pillow),
        ("assemble, numpy into white", assemble_numpy),
        ("encode, Pillow JPEG", encode_pillow),
        ("encode, simplejpeg 4:2:0", encode_simplejpeg),
    ]
    return [(name, timed(fn, jobs, budget, rounds)) for name, fn in rows]


def profile(run: Callable[[Job], object], jobs: Sequence[Job], seconds: float) -> None:
    """Print where ``run`` spends its time (cProfile, by own time).

    cProfile rather than a sampling profiler: the time is in C extensions (libjpeg-turbo), which
    cProfile charges to the Python function that calls them.
    """

    def loop() -> None:
        started = time.process_time()
        while time.process_time() - started < seconds:
            for job in jobs:
                run(job)

    prof = cProfile.Profile()
    prof.runcall(loop)
    pstats.Stats(prof).sort_stats("tottime").print_stats(12)


def open_slide(path: Path | None, scratch: Path) -> tuple[SlideReader, str]:
    """Open ``path``, the cached benchmark slide, or a freshly written small sample SVS."""
    if path is None and BENCH_SLIDE.exists():
        path = BENCH_SLIDE
    if path is None:
        from slideserver.samples import write_samples

        written = write_samples(scratch)
        path = next(p for p in written.values() if p.suffix == ".svs")
    return default_registry().open(SlideSource(path)), path.name


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--slide", type=Path, help="an SVS (default: the benchmark slide)")
    parser.add_argument("--tiles", type=int, default=16, help="distinct output tiles per case")
    parser.add_argument("--budget", type=float, default=0.4, help="CPU seconds per row")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per row (median kept)")
    parser.add_argument("--profile", action="store_true", help="profile the 2x service path")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="slideserver-bench-render-") as scratch:
        reader, name = open_slide(args.slide, Path(scratch))
        try:
            grid = DeepZoomGrid.for_slide(reader.info)
            jobs = {scale: jobs_for(grid, reader, scale, args.tiles) for scale in (2, 4, 8)}
            print(f"slide {name}; CPU microseconds per {grid.tile_size} px output tile")
            print("(time.process_time, median of rounds; lower is better)\n")
            rows: list[tuple[str, float]] = [
                (
                    "2x  service path (read_scaled_array + encode_image)",
                    timed(service_path(reader), jobs[2], args.budget, args.rounds),
                ),
                (
                    "2x  Pillow baseline (old path, reproduced)",
                    timed(pillow_baseline(reader), jobs[2], args.budget, args.rounds),
                ),
            ]
            for scale in (4, 8):
                rows.append(
                    (
                        f"{scale}x  assembly on level 0 + encode_image",
                        timed(assembly_path(reader), jobs[scale], args.budget, args.rounds),
                    )
                )
                rows.append(
                    (
                        f"{scale}x  Pillow baseline (old path, reproduced)",
                        timed(pillow_baseline(reader), jobs[scale], args.budget, args.rounds),
                    )
                )
            rows.append(("-- pieces, 2x (4 stored tiles per output tile) --", float("nan")))
            rows.extend(pieces(reader, jobs[2], args.budget, args.rounds))
            width = max(len(label) for label, _ in rows)
            for label, value in rows:
                shown = "" if value != value else f"{value:8.0f}"
                print(f"{label:<{width}}  {shown}")
            if args.profile:
                print("\nprofile of the 2x service path:")
                profile(service_path(reader), jobs[2], 2.0)
        finally:
            reader.close()


if __name__ == "__main__":
    main()
