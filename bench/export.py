"""``python -m bench.export``: patches per second of ``slideserver export`` against a naive loop.

On one machine, for a 40,000 x 30,000 Aperio slide (written once, cached like the other bench
slides), 256 px patches at 0.5 µm/px over the tissue:

- naive: the loop a researcher writes first, one core: OpenSlide ``read_region`` of the level-0
  square, resized with Pillow, encoded to JPEG with Pillow; on an even sample of the patches.
- fast path, one core: the same patches through the export's reader (stored JPEG tiles decoded
  at reduced DCT scale) and encoder, in this process.
- export, every core: ``run_export`` over the whole slide, from the catalog to the WebDataset
  shards and the manifest (planning, audit and process start-up included).

Prints each rate per second of wall time and per CPU second (the export's CPU is the
coordinator's and every worker's), and the ratios of the export to the naive loop (target: at
least 5x in wall time on one machine). On a shared machine, the per-CPU figures are the robust
ones: other load slows the wall clock, not the work.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

from PIL import Image

from bench.slides import PoolTissue
from slideserver.export.plan import ExportOptions
from slideserver.export.run import run_export
from slideserver.export.select import LocalCatalog, Selection
from slideserver.export.sources import FileSource, Origin
from slideserver.export.write import plan_slide
from slideserver.imaging.encode import encode_image
from slideserver.samples.tiff import AperioInfo, write_svs
from slideserver.settings import Settings, usable_cores

SIZE = (40_000, 30_000)
PATCH = 256
MPP = 0.5
QUALITY = 90


def bench_slide(folder: Path, size: tuple[int, int]) -> Path:
    """The Aperio bench slide of ``size`` (levels by 4, 0.25 µm/px), written once."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"EXPORT-{size[0]}x{size[1]}_A1_HE.svs"
    if not path.exists():
        print(f"writing {path} (once)", flush=True)
        partial = path.with_suffix(".partial")
        blank = Image.new("RGB", (400, 400), "white")
        write_svs(partial, PoolTissue(*size), AperioInfo(filename=path.stem, barcode="BENCH"),
                  label=blank, macro=blank)  # fmt: skip
        partial.rename(path)
    return path


class Clock:
    """Wall and CPU time (this process's) of a block."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def naive(path: Path, patches: list[tuple[int, int, int]]) -> Clock:
    """OpenSlide read_region + Pillow resize + Pillow JPEG per patch, one core."""
    import openslide

    slide = openslide.OpenSlide(str(path))
    with Clock() as clock:
        for x, y, extent in patches:
            region = slide.read_region((x, y), 0, (extent, extent)).convert("RGB")
            region = region.resize((PATCH, PATCH), Image.Resampling.LANCZOS)
            region.save(io.BytesIO(), "JPEG", quality=QUALITY)
    slide.close()
    return clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=SIZE[0])
    parser.add_argument("--height", type=int, default=SIZE[1])
    parser.add_argument("--sample", type=int, default=500, help="patches in the naive loop")
    parser.add_argument("--workers", type=int, default=usable_cores())
    args = parser.parse_args()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "slideserver-bench"
    folder = cache / f"export-{args.width}x{args.height}"
    path = bench_slide(folder, (args.width, args.height))
    # Shards of 250 patches: one slide's work is spread over every worker.
    options = ExportOptions(size=PATCH, mpp=MPP, quality=QUALITY, shard_size=250)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(roots=(folder,), database_url=f"sqlite:///{tmp}/catalog.db")
        catalog = LocalCatalog(settings)
        catalog.refresh()
        entries, _ = catalog.select(Selection(query=path.stem))
        plan = plan_slide(entries[0], options, Origin())
        step = max(1, len(plan.patches) // args.sample)
        sample = plan.patches[::step][: args.sample]
        print(f"{path.name}: {len(plan.patches)} tissue patches of {PATCH} px at {MPP} µm/px")

        loop = naive(path, [(p.x, p.y, p.extent) for p in sample])
        source = FileSource()
        with Clock() as fast:
            for patch in sample:
                encode_image(source.read(entries[0], patch), "jpeg", QUALITY)
        with Clock() as whole:
            summary = run_export(
                Path(tmp) / "out", options, Selection(ids=(entries[0].slide_id,)), catalog,
                Origin(), workers=args.workers, progress=False,
            )  # fmt: skip
        catalog.close()
    n, total = len(sample), summary.patches
    rows = [
        ("naive loop (OpenSlide + Pillow), 1 core", n / loop.wall, n / loop.cpu),
        ("export fast path, 1 core", n / fast.wall, n / fast.cpu),
        (
            f"slideserver export, {args.workers} workers",
            total / whole.wall,
            total / (whole.cpu + summary.worker_cpu_seconds),
        ),
    ]
    print(f"{'':42} {'per second':>12} {'per CPU s':>12}")
    for name, wall, cpu in rows:
        print(f"{name:42} {wall:12.1f} {cpu:12.1f}")
    naive_wall, naive_cpu = rows[0][1], rows[0][2]
    print(
        f"export / naive: {rows[2][1] / naive_wall:.1f}x per second (target >= 5x), "
        f"{rows[2][2] / naive_cpu:.1f}x per CPU second; fast path / naive: "
        f"{rows[1][1] / naive_wall:.1f}x per second on one core"
    )


if __name__ == "__main__":
    main()
