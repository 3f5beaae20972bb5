"""``python -m bench.run``: slideserver against a reference Python server and nginx, in one run.

Generates (once, cached) two 50,000 x 40,000 slides: Aperio SVS with levels stepping by 4 and a
generic TIFF with levels stepping by 2. Pre-extracts the tiles the workloads ask for so nginx can
serve them as files (the ceiling). Then, with ``wrk`` on loopback, measures cold, warm and pan at
16 and 64 connections for: the reference server (Starlette + DeepZoomGenerator, one core),
nginx (one core, all cores) and slideserver (one worker pinned to one core; one worker per core),
slideserver and the reference restarted (and Redis flushed) before every run so nothing is
carried over. Prints the table and ratios and writes ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import servers, workloads
from bench.slides import bench_slides

BENCH_DIR = Path(__file__).resolve().parent
WRK_SCRIPT = BENCH_DIR / "wrk.lua"
CONNECTIONS = (16, 64)
WORKLOADS = ("cold", "warm", "pan")
FRAME_WORKLOADS = ("stored", "frames")
"""Level 0's stored tiles, each once, as Deep Zoom tiles and as DICOMweb frames of the level-0
instance (issue 13): slideserver only, the ratio frames / stored is the target."""
FRAMES_LIMIT = 12_000
SLIDES = ("svs", "tiff")
COLD_LIMIT = 12_000
PAN_LIMIT = 24_000


@dataclass
class Result:
    slide: str
    workload: str
    connections: int
    server: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_seconds: float = 0.0
    """Server CPU time during the run (all its processes)."""

    @property
    def per_cpu(self) -> float:
        """Requests per server CPU second: robust to other load on a shared machine."""
        return self.requests / self.cpu_seconds if self.cpu_seconds > 0 else float("nan")


@dataclass
class Target:
    slide: str
    name: str
    prefix: str
    lists: dict[str, Path]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def wrk(base: str, target: Target, workload: str, connections: int, duration: float,
        cpu: int | None) -> Result | None:  # fmt: skip
    """Run wrk once; return its figures (None when wrk failed)."""
    mode = "loop" if workload == "warm" else "once"
    threads = 2
    command = servers.pinned(
        [
            "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--timeout", "10s",
            "-s", str(WRK_SCRIPT), base,
            "--", str(target.lists[workload]), target.prefix, mode, str(threads),
        ],
        cpu,
    )  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH "):
            data = json.loads(line[6:])
            seconds = max(data["duration_us"], 1) / 1e6
            return Result(
                target.slide,
                workload,
                connections,
                "",
                data["requests"] / seconds,
                data["p50_us"] / 1000,
                data["p99_us"] / 1000,
                data["requests"],
                data["errors"] + data["status_errors"],
            )
    log(f"wrk failed: {done.stdout[-500:]} {done.stderr[-500:]}")
    return None


def write_lists(slides: dict[str, Path], folder: Path) -> dict[str, dict[str, Path]]:
    """Write the cold, warm and pan URL lists of each slide; return slide -> workload -> file."""
    from slideserver.models import SlideSource
    from slideserver.readers.registry import default_registry
    from slideserver.tiling.deepzoom import DeepZoomGrid

    registry = default_registry()
    out: dict[str, dict[str, Path]] = {}
    for kind, path in slides.items():
        with registry.open(SlideSource(path)) as reader:
            grid = DeepZoomGrid.for_slide(reader.info)
            base = reader.info.levels[0]
        lists = {
            "cold": workloads.cold(grid, COLD_LIMIT),
            "warm": workloads.warm(grid),
            "pan": workloads.pan(grid, PAN_LIMIT),
            "prime": workloads.prime(grid),
        }
        if base.tile_width == grid.tile_size == base.tile_height:  # DZ's finest = level 0's tiles
            tiles = workloads.stored_tiles(grid, FRAMES_LIMIT)
            lists["stored"] = workloads.stored(grid, tiles)
            lists["frames"] = workloads.frames(tiles, -(-base.width // grid.tile_size))
        out[kind] = {}
        for workload, urls in lists.items():
            file = folder / f"{kind}-{workload}.txt"
            file.write_text("\n".join(urls) + "\n")
            out[kind][workload] = file
    return out


async def _fetch_all(base: str, jobs: list[tuple[str, Path]]) -> None:
    import httpx

    queue: asyncio.Queue[tuple[str, Path]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            url, file = queue.get_nowait()
            for attempt in range(3):
                try:
                    response = await client.get(base + url)
                    response.raise_for_status()
                    break
                except httpx.HTTPError:
                    if attempt == 2:
                        raise
                    await asyncio.sleep(0.5)
            file.parent.mkdir(parents=True, exist_ok=True)
            partial = file.with_suffix(".partial")
            partial.write_bytes(response.content)
            partial.replace(file)

    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(32)))


def extract_tiles(
    slides: dict[str, Path], lists: dict[str, dict[str, Path]], tiles: Path, workdir: Path
) -> None:
    """Write every tile the workloads ask for as a file, as slideserver serves it (for nginx)."""
    missing: dict[str, list[str]] = {}
    for kind, path in slides.items():
        urls = set()
        for workload, file in lists[kind].items():
            if workload != "frames":  # DICOMweb frame numbers, not Deep Zoom tiles
                urls.update(file.read_text().split())
        todo = [u for u in sorted(urls) if not (tiles / path.stem / u).exists()]
        if todo:
            missing[kind] = todo
    if not missing:
        return
    log(f"extracting {sum(map(len, missing.values()))} tiles for nginx (once; cached)")
    process, base = servers.slideserver(
        slides["svs"].parent, workdir, workers=servers.cores(), cpu=None, redis_url=""
    )
    with servers.started(process):
        ids = slide_ids(base)
        jobs = [
            (f"/dz/{ids[slides[kind].name]}_files/{url}", tiles / slides[kind].stem / url)
            for kind, urls in missing.items()
            for url in urls
        ]
        asyncio.run(_fetch_all(base, jobs))


def frame_prefixes(base: str, names: dict[str, str]) -> dict[str, str]:
    """``KIND:frames`` -> the frames URL prefix of each slide's level-0 instance (QIDO-RS).

    The bench slides are not DICOM files: their series UID is derived from the slide ID.
    """
    import httpx

    from slideserver.dicom.uids import series_uid

    ids = slide_ids(base)
    out: dict[str, str] = {}
    for kind, name in names.items():
        series = str(series_uid(ids[name]))
        found = httpx.get(
            f"{base}/dicomweb/series", params={"SeriesInstanceUID": series}, timeout=120
        ).json()
        study = found[0]["0020000D"]["Value"][0]
        instances = httpx.get(
            f"{base}/dicomweb/studies/{study}/series/{series}/instances", timeout=120
        ).json()
        volumes = [i for i in instances if i["00080008"]["Value"][2] == "VOLUME"]
        level0 = max(volumes, key=lambda i: int(i["00480006"]["Value"][0]))
        sop = level0["00080018"]["Value"][0]
        out[f"{kind}:frames"] = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/"
    return out


def slide_ids(base: str) -> dict[str, str]:
    import httpx

    body = httpx.get(f"{base}/api/slides", params={"limit": 100}, timeout=30).json()
    return {item["name"]: item["id"] for item in body["items"]}


def versions() -> dict[str, str]:
    import openslide
    import PIL
    import starlette
    import uvicorn

    import slideserver

    def tool(*command: str) -> str:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=10)
        except OSError:
            return "missing"
        text = (done.stdout + done.stderr).strip().splitlines()
        return text[0] if text else "?"

    cpu = "?"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return {
        "machine": f"{cpu}, {servers.cores()} cores, {platform.system()} {platform.release()}",
        "load average at start (1, 5, 15 min)": load,
        "python": platform.python_version(),
        "slideserver": slideserver.__version__,
        "OpenSlide": f"{openslide.__library_version__} (openslide-python {openslide.__version__})",
        "Starlette / uvicorn": f"{starlette.__version__} / {uvicorn.__version__}",
        "Pillow": PIL.__version__,
        "nginx": tool("nginx", "-v"),
        "wrk": tool("wrk", "-v"),
        "redis": tool("redis-server", "--version"),
    }


def ratio_of(
    results: list[Result],
    slide: str,
    workload: str,
    conns: int,
    a: str,
    b: str,
    per_cpu: bool = False,
) -> float:
    """Throughput of server ``a`` over server ``b`` (req/s, or requests per CPU second)."""

    def rps(server: str) -> float:
        for r in results:
            if (r.slide, r.workload, r.connections, r.server) == (slide, workload, conns, server):
                return r.per_cpu if per_cpu else r.rps
        return float("nan")

    return rps(a) / rps(b) if rps(b) else float("nan")


def frames_ratio(results: list[Result], slide: str, conns: int, per_cpu: bool = False) -> float:
    """DICOMweb frames over Deep Zoom stored tiles (the same tiles), slideserver on one core."""

    def rate(workload: str) -> float:
        for r in results:
            if (r.slide, r.workload, r.connections, r.server) == (slide, workload, conns, SS1):
                return r.per_cpu if per_cpu else r.rps
        return float("nan")

    return rate("frames") / rate("stored") if rate("stored") else float("nan")


REF, NGX1, NGXN, SS1, SSN = (
    "reference, 1 core",
    "nginx, 1 core",
    "nginx, all cores",
    "slideserver, 1 core",
    "slideserver, all cores",
)


def targets(results: list[Result], per_cpu: bool = False) -> list[tuple[str, str, bool]]:
    """The issue's targets, each with the measured figures and whether it is met."""
    out: list[tuple[str, str, bool]] = []

    def ratio(results: list[Result], slide: str, workload: str, c: int, a: str, b: str) -> float:
        return ratio_of(results, slide, workload, c, a, b, per_cpu)

    def check(name: str, values: list[float], minimum: float) -> None:
        text = ", ".join(f"{v:.1f}" for v in values)
        out.append((name, text, all(v >= minimum for v in values)))

    check("generic TIFF cold >= 30x reference (1 core; 16, 64 conns)",
          [ratio(results, "tiff", "cold", c, SS1, REF) for c in CONNECTIONS], 30)  # fmt: skip
    check("SVS cold >= 10x reference (1 core; 16, 64 conns)",
          [ratio(results, "svs", "cold", c, SS1, REF) for c in CONNECTIONS], 10)  # fmt: skip
    check("SVS pan >= 10x reference (1 core; 16, 64 conns)",
          [ratio(results, "svs", "pan", c, SS1, REF) for c in CONNECTIONS], 10)  # fmt: skip
    warm = [
        ratio(results, slide, "warm", c, ss, ngx)
        for slide in SLIDES
        for c in CONNECTIONS
        for ss, ngx in ((SS1, NGX1), (SSN, NGXN))
    ]
    check("warm >= 0.5x nginx (same cores; svs, tiff; 16, 64 conns)", warm, 0.5)
    frames = [frames_ratio(results, slide, c, per_cpu) for slide in SLIDES for c in CONNECTIONS]
    check("DICOMweb stored frames >= 0.5x Deep Zoom stored tiles (1 core; svs, tiff; 16, 64)",
          frames, 0.5)  # fmt: skip
    p99 = [
        r.p99_ms
        for r in results
        if r.connections == 64
        and r.server in (SS1, SSN)
        and (r.workload == "warm" or (r.slide, r.workload) == ("tiff", "cold"))
    ]
    out.append((
        "p99 <= 25 ms at 64 conns (slideserver; warm, passthrough cold)",
        ", ".join(f"{v:.1f}" for v in p99),
        bool(p99) and max(p99) <= 25,
    ))  # fmt: skip
    return out


def markdown(results: list[Result], info: dict[str, str], duration: float) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"`python -m bench.run`, {datetime.date.today().isoformat()}. Two generated 50,000 x "
        "40,000 slides (Aperio SVS, levels by 4; generic TIFF, levels by 2), Deep Zoom JPEG "
        f"tiles of 256 px, `wrk` on loopback, {duration:g} s per run at most. cold: distinct "
        "tiles of the three finest levels, each once; warm: 200 tiles repeated; pan: viewer "
        "sessions (zoom in, then pan). One-core servers and wrk are pinned to different cores; "
        "slideserver runs with Redis (flushed, and the server restarted, before each run). "
        "Before every run the files a server reads (slides, or nginx's tile files) are read once, "
        "so all start with them in the page cache. "
        "On a shared machine (see the load average) req/s varies with what else runs; requests "
        "per server CPU second (req/CPU-s) much less, so ratios are given both ways. "
        "stored and frames (slideserver, 1 core): level 0's stored tiles, each once, as Deep "
        "Zoom tiles and as DICOMweb frames (`/dicomweb/.../frames/N`, sent as stored).",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in info.items()),
        "",
        "| slide | workload | conns | server | req/s | p50 ms | p99 ms | req/CPU-s | errors |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.slide} | {r.workload} | {r.connections} | {r.server} | {r.rps:,.0f} | "
            f"{r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.per_cpu:,.0f} | {r.errors} |"
        )
    lines += [
        "",
        "| slide | workload | conns | 1 core / reference | all cores / reference | "
        "1 core / nginx 1 core | all cores / nginx all cores |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for slide in SLIDES:
        for workload in WORKLOADS:
            for c in CONNECTIONS:
                cells = [
                    f"{ratio_of(results, slide, workload, c, a, b):.{digits}f}{unit} "
                    f"({ratio_of(results, slide, workload, c, a, b, True):.{digits}f}{unit})"
                    for a, b, digits, unit in (
                        (SS1, REF, 1, "x"),
                        (SSN, REF, 1, "x"),
                        (SS1, NGX1, 2, ""),
                        (SSN, NGXN, 2, ""),
                    )
                ]
                lines.append(f"| {slide} | {workload} | {c} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Ratios: by req/s, and in parentheses by requests per server CPU second (robust to other",
        "load on a shared machine; not meaningful for p99).",
        "",
        "| target | measured (req/s) | met | measured (per CPU s) | met |",
        "|---|---|---|---|---|",
    ]
    for (name, values, met), (_, cpu_values, cpu_met) in zip(
        targets(results), targets(results, per_cpu=True), strict=True
    ):
        lines.append(
            f"| {name} | {values} | {'yes' if met else 'NO'} | {cpu_values} | "
            f"{'yes' if cpu_met else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


Started = tuple[servers.Process, str, dict[str, str]]
"""A running server: its process, base URL and the tile URL prefix of each slide."""


@dataclass
class Config:
    name: str
    start: Callable[[], Started]
    restart: bool
    """Restart (and flush Redis) before every run: nothing cached carries over."""
    wrk_cpu: int | None
    files: Callable[[], list[Path]] = list
    """The files the server reads, put in the page cache before every run (see warm_page_cache)."""
    frames: bool = False
    """Also run :data:`FRAME_WORKLOADS` (servers with DICOMweb: slideserver on one core)."""


def warm_page_cache(files: list[Path]) -> None:
    """Read ``files`` so that every server starts a run with them in the page cache.

    "Cold" means tiles no server has cached, not a cold disk: a server in service reads slides
    being viewed from memory. On machines that reclaim idle page cache pages (this one runs
    DAMON_RECLAIM, which drops pages idle for two minutes), whoever runs minutes after the
    slides were last read would otherwise pay for disk reads the others did not.
    """
    for file in files:
        with file.open("rb") as stream:
            while stream.read(1 << 22):
                pass


def measure(
    config: Config, args: argparse.Namespace, lists: dict[str, dict[str, Path]]
) -> list[Result]:
    """Run every workload of every slide against one server configuration."""
    results: list[Result] = []
    current: Started | None = None
    try:
        for kind in args.slides:
            for workload in args.workloads:
                if workload in FRAME_WORKLOADS and not (config.frames and workload in lists[kind]):
                    continue
                for conns in CONNECTIONS:
                    if current is None or config.restart:
                        if current is not None:
                            current[0].stop()
                        current = config.start()
                        prime(current, args.slides, lists, config.wrk_cpu)
                    process, base, prefixes = current
                    todo = {workload: lists[kind][workload]}
                    if workload == "warm":  # one pass to fill the caches
                        fill = Target(kind, "", prefixes[kind], {"cold": lists[kind]["warm"]})
                        wrk(base, fill, "cold", 16, 5, config.wrk_cpu)
                    prefix = prefixes.get(f"{kind}:{workload}", prefixes[kind])
                    target = Target(kind, config.name, prefix, todo)
                    warm_page_cache(config.files())
                    cpu_before = process.cpu_seconds()
                    result = wrk(base, target, workload, conns, args.duration, config.wrk_cpu)
                    if result is None:
                        continue
                    result.cpu_seconds = process.cpu_seconds() - cpu_before
                    result.server = config.name
                    results.append(result)
                    log(
                        f"{kind:4} {workload:4} c={conns:<3} {config.name:24} "
                        f"{result.rps:9,.0f} req/s  p50 {result.p50_ms:6.1f} ms  "
                        f"p99 {result.p99_ms:6.1f} ms  {result.per_cpu:8,.0f} req/CPU-s  "
                        f"errors {result.errors}"
                    )
    finally:
        if current is not None:
            current[0].stop()
    return results


def prime(
    current: Started, kinds: list[str], lists: dict[str, dict[str, Path]], cpu: int | None
) -> None:
    """Open the slides and each level's tile index in every process before measuring.

    "Cold" means tiles not cached, not files never opened: the reference opens its slides at
    start-up, and a server in service has long opened the slides being viewed.
    """
    _, base, prefixes = current
    for kind in kinds:
        target = Target(kind, "", prefixes[kind], {"warm": lists[kind]["prime"]})
        wrk(base, target, "warm", 8, 1, cpu)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    cache_home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per wrk run (max)")
    parser.add_argument("--data", type=Path, default=cache_home / "slideserver-bench",
                        help="where the slides and extracted tiles are kept")  # fmt: skip
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "RESULTS.md")
    parser.add_argument("--only", nargs="*", default=[], help="servers to run (substring)")
    parser.add_argument("--slides", nargs="*", default=list(SLIDES), choices=SLIDES)
    parser.add_argument("--workloads", nargs="*", default=[*WORKLOADS, *FRAME_WORKLOADS],
                        choices=(*WORKLOADS, *FRAME_WORKLOADS))  # fmt: skip
    args = parser.parse_args(argv)
    for tool in ("wrk", "nginx", "redis-server"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is missing (Debian packages wrk, nginx-light, redis-server)")
            return 2
    began = time.monotonic()
    log("preparing slides (generated once, then cached)")
    slides = bench_slides(args.data / "slides")
    info = versions()
    n = servers.cores()
    one, load_cpu = (0, 1) if n >= 2 else (None, None)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="slideserver-bench-") as tmp:
        workdir = Path(tmp)
        lists = write_lists(slides, workdir)
        tiles = args.data / "tiles"
        extract_tiles(slides, lists, tiles, workdir)
        redis, redis_url = servers.redis(workdir)
        with servers.started(redis):
            names = {kind: path.name for kind, path in slides.items()}

            def slideserver(workers: int, cpu: int | None) -> Callable[[], Started]:
                def start() -> Started:
                    servers.flush_redis(redis_url)
                    root = slides["svs"].parent
                    process, base = servers.slideserver(
                        root, workdir, workers=workers, cpu=cpu, redis_url=redis_url
                    )
                    ids = slide_ids(base)
                    prefixes = {k: f"/dz/{ids[v]}_files/" for k, v in names.items()}
                    return process, base, {**prefixes, **frame_prefixes(base, names)}

                return start

            def reference() -> Started:
                process, base = servers.reference(slides, workdir, cpu=one)
                return process, base, {k: f"/ref/{k}_files/" for k in slides}

            def nginx(workers: int, cpu: int | None) -> Callable[[], Started]:
                def start() -> Started:
                    process, base = servers.nginx(tiles, workdir, workers=workers, cpu=cpu)
                    return process, base, {k: f"/tiles/{p.stem}/" for k, p in slides.items()}

                return start

            def slide_files() -> list[Path]:
                return list(slides.values())

            def tile_files() -> list[Path]:
                return sorted(p for p in tiles.rglob("*") if p.is_file())

            configs = [
                Config(REF, reference, True, load_cpu, slide_files),
                Config(NGX1, nginx(1, one), False, load_cpu, tile_files),
                Config(NGXN, nginx(n, None), False, None, tile_files),
                Config(SS1, slideserver(1, one), True, load_cpu, slide_files, frames=True),
                Config(SSN, slideserver(n, None), True, None, slide_files),
            ]
            for config in configs:
                if not args.only or any(o in config.name for o in args.only):
                    results += measure(config, args, lists)
    info["load average at end (1, 5, 15 min)"] = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    text = markdown(results, info, args.duration)
    print()
    print(text)
    if (
        not args.only
        and args.slides == list(SLIDES)
        and args.workloads
        == [
            *WORKLOADS,
            *FRAME_WORKLOADS,
        ]
    ):
        args.out.write_text(text)
        log(f"wrote {args.out}")
    log(f"done in {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
