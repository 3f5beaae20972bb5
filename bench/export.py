"""``python -m bench.export``: patches per second of ``slideserver export`` against a naive loop.

On one machine, for a 40,000 x 30,000 Aperio slide (written once, cached like the other bench
slides), 256 px patches at 0.5 µm/px over the tissue, in the same run:

- naive: the loop a researcher writes first, one core: OpenSlide ``read_region`` of the level-0
  square, resized with Pillow, encoded to JPEG with Pillow; on an even sample of the patches.
- fast path, one core: the same patches through the export's reader (stored JPEG tiles decoded
  at reduced DCT scale) and encoder, in this process.
- export, every core: the command a researcher runs, ``python -m slideserver export`` with its
  defaults, as a child process, over the whole slide: start-up, catalog, planning, audit, the
  worker processes, the WebDataset shards and the manifest are all counted. The catalog is
  indexed before (a researcher's catalog database already knows its slides).

Each rate is given per second of wall time and per CPU second. The command's CPU time is that
of its whole process tree (this process becomes the subreaper of the command's descendants, so
every worker's and the fork server's time is counted when they are reaped). On a shared machine
the per-CPU figures are the robust ones: other load slows the wall clock, not the work.
"""

from __future__ import annotations

import argparse
import ctypes
import io
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from bench.slides import PoolTissue
from slideserver.samples.tiff import AperioInfo, write_svs

SIZE = (40_000, 30_000)
PATCH = 256
MPP = 0.5
QUALITY = 90
"""The export's JPEG quality (``ExportOptions.quality``); the naive loop uses the same."""
TARGET = 5.0
PR_SET_CHILD_SUBREAPER = 36


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


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def reap_orphans(deadline: float) -> None:
    """Wait for the command's descendants that outlived it (a fork server), so their CPU time
    and their children's is counted in ``RUSAGE_CHILDREN``."""
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.02)
    raise RuntimeError("the export's processes did not exit")


def run_command(args: list[str]) -> tuple[float, float, str]:
    """Run ``python -m slideserver ARGS``; its wall time, its process tree's CPU time, stdout."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    before = children_cpu()
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "slideserver", *args],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - started
    reap_orphans(time.monotonic() + 60)
    if done.returncode != 0:
        raise RuntimeError(f"slideserver export failed:\n{done.stderr[-2000:]}")
    return wall, children_cpu() - before, done.stdout


def load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    from slideserver.export.plan import ExportOptions
    from slideserver.export.select import LocalCatalog, Selection
    from slideserver.export.sources import FileSource, Origin
    from slideserver.export.write import plan_slide
    from slideserver.imaging.encode import encode_image
    from slideserver.settings import Settings, usable_cores

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--width", type=int, default=SIZE[0])
    parser.add_argument("--height", type=int, default=SIZE[1])
    parser.add_argument("--sample", type=int, default=500, help="patches in the naive loop")
    args = parser.parse_args()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "slideserver-bench"
    folder = cache / f"export-{args.width}x{args.height}"
    path = bench_slide(folder, (args.width, args.height))
    options = ExportOptions(size=PATCH, mpp=MPP, quality=QUALITY)
    print(f"machine: {usable_cores()} cores, load average {load()} (1, 5, 15 min) at start")
    with tempfile.TemporaryDirectory() as tmp:
        database = f"sqlite:///{tmp}/catalog.db"
        catalog = LocalCatalog(Settings(roots=(folder,), database_url=database))
        catalog.refresh()
        entries, _ = catalog.select(Selection(query=path.stem))
        catalog.close()
        plan = plan_slide(entries[0], options, Origin())
        step = max(1, len(plan.patches) // args.sample)
        sample = plan.patches[::step][: args.sample]
        print(f"{path.name}: {len(plan.patches)} tissue patches of {PATCH} px at {MPP} µm/px")

        loop = naive(path, [(p.x, p.y, p.extent) for p in sample])
        source = FileSource()
        with Clock() as fast:
            for patch in sample:
                encode_image(source.read(entries[0], patch), "jpeg", QUALITY)
        command = ["export", "--out", f"{tmp}/out", "--root", str(folder)]
        command += ["--database-url", database, "--size", str(PATCH), "--mpp", str(MPP)]
        whole_wall, whole_cpu, said = run_command([*command, "--query", path.stem])
    total = len(plan.patches)
    if f"exported {total} patches" not in said:
        raise RuntimeError(f"the export did not write the {total} planned patches: {said}")
    n = len(sample)
    rows: list[tuple[str, float, float]] = [
        ("naive loop (OpenSlide + Pillow), 1 core", n / loop.wall, n / loop.cpu),
        ("export fast path, 1 core, in-process", n / fast.wall, n / fast.cpu),
        (
            f"slideserver export, whole command, {usable_cores()} cores",
            total / whole_wall,
            total / whole_cpu,
        ),
    ]
    print(f"{'patches':48} {'per second':>12} {'per CPU s':>12}")
    for name, wall, cpu in rows:
        print(f"{name:48} {wall:12.1f} {cpu:12.1f}")
    print(
        f"whole export: {total} patches in {whole_wall:.1f} s wall, {whole_cpu:.1f} CPU s "
        "(the command and every process it started)"
    )
    print(f"load average at end: {load()}")
    ratios = {
        "per CPU second": rows[2][2] / rows[0][2],
        "per wall second": rows[2][1] / rows[0][1],
    }
    for unit, ratio in ratios.items():
        mark = "✔" if ratio >= TARGET else "✘"
        print(f"{mark} export / naive {unit}: {ratio:.1f}x (target >= {TARGET:g}x)")
    print(
        "On a shared machine the per-CPU-second ratio is the robust one: other processes' load "
        "stretches wall time (and the naive loop, one core, is hurt less by it than a run that "
        "needs every core)."
    )


if __name__ == "__main__":
    main()
