"""Start the cluster, fill it, drive it with locust, and report: ``make loadtest``, ``make soak``.

``shift``: 200 pathologists sign in within a minute, each opens a case and its first slide and
pans (:mod:`deploy.loadtest.shift`); the report gives sign-in, case-open and first-tile latencies
(p50, p95, p99) and errors against the goals (case open under 1 s and first tile under 250 ms at
p95, no error). ``soak``: 64 connections of mixed traffic (:mod:`deploy.loadtest.soak`) for ten
minutes; the report gives every process's memory, open files and threads at the start and the
end. The exit status is 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from deploy.cluster import Cluster
from deploy.loadtest.fixtures import SLIDE_KINDS, case_folder, create_tokens, order, send_orders

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent.parent
REDIS_MAXMEMORY_MIB = 256
"""The cluster's Redis ``maxmemory`` (deploy/cluster.py)."""
SHIFT_GOALS = {"case open (case + thumbnails)": 1000.0, "first tile": 250.0}
"""Step -> p95 in milliseconds it must stay under."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def ensure_samples(folder: Path) -> None:
    """Make the sample slides when they are missing (``slideserver sample``)."""
    if not any(folder.glob("*_A1_HE.svs")):
        log(f"making sample slides in {folder}")
        subprocess.run(
            [sys.executable, "-m", "slideserver", "sample", str(folder)], check=True, timeout=600
        )


def slide_table(base: str, token: str) -> list[dict[str, object]]:
    """Every slide's ID, size and finest Deep Zoom level, read through nginx (all pages)."""
    slides: list[dict[str, object]] = []
    cursor = ""
    while True:
        url = f"{base}/api/slides?limit=1000" + (f"&cursor={cursor}" if cursor else "")
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            page = json.load(answer)
        for item in page["items"]:
            if item.get("status", "ok") != "ok":
                continue
            width, height = int(item["width"]), int(item["height"])
            top = math.ceil(math.log2(max(width, height)))
            slides.append(
                {"id": item["id"], "width": width, "height": height, "top": top, "tile": 0}
            )
        cursor = page.get("next") or ""
        if not cursor:
            return slides


def add_tile_sizes(base: str, token: str, slides: list[dict[str, object]]) -> None:
    """Each slide's Deep Zoom tile size, from its descriptor (stored tiles keep their size)."""
    for slide in slides:
        url = f"{base}/dz/{slide['id']}.dzi"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            found = re.search(r'TileSize="(\d+)"', answer.read().decode())
        slide["tile"] = int(found.group(1)) if found else 254


def check_cases(base: str, token: str, accessions: list[str], slides: int) -> None:
    """Refuse to start unless every case lists its own slides, as a pathologist would see it."""
    for accession in accessions:
        request = urllib.request.Request(
            f"{base}/api/cases/{accession}", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            listed = len(json.load(answer)["slides"])
        if listed != slides:
            raise RuntimeError(f"case {accession} lists {listed} slides, not {slides}")


def wait_indexed(base: str, token: str, expected: int, limit: float = 300) -> None:
    """Wait (bounded) until the catalog lists every slide of the cases."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if len(slide_table(base, token)) >= expected:
            return
        time.sleep(2)
    raise TimeoutError(f"the catalog did not list {expected} slides within {limit:.0f} s")


Sample = dict[str, tuple[int, int, int]]


@dataclass
class Sampler:
    """Samples RSS, open files and threads of the cluster's processes every ``every`` seconds.

    The first sample is taken before any traffic; the one at ``warmup`` seconds is the baseline
    growth is judged from (by then the tile caches are full and the pools have their threads).
    """

    pids: dict[str, int]
    every: float = 15.0
    warmup: float = 60.0
    samples: list[tuple[float, Sample]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _began: float = field(default_factory=time.monotonic)

    @classmethod
    def measure(cls, pid: int) -> tuple[int, int, int]:
        """(RSS in KiB, open files, threads) of a process with its children (PostgreSQL's
        backends, nginx's workers); zeros when it is gone."""
        rss, files, threads = cls.measure_one(pid)
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            children = []
        for child in children:
            more = cls.measure_one(int(child))
            rss, files, threads = rss + more[0], files + more[1], threads + more[2]
        return rss, files, threads

    @staticmethod
    def measure_one(pid: int) -> tuple[int, int, int]:
        """(RSS in KiB, open files, threads) of one process; zeros when it is gone."""
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            lines = {x.split(":")[0]: x.split()[1:] for x in status.splitlines() if ":" in x}
            rss, threads = int(lines["VmRSS"][0]), int(lines["Threads"][0])
            files = len(os.listdir(f"/proc/{pid}/fd"))
        except (OSError, KeyError, IndexError):
            return 0, 0, 0
        return rss, files, threads

    def sample(self) -> None:
        when = time.monotonic() - self._began
        self.samples.append((when, {name: self.measure(pid) for name, pid in self.pids.items()}))

    def run(self) -> None:
        self.sample()
        while not self._stop.wait(self.every):
            self.sample()

    def start(self) -> threading.Thread:
        self._began = time.monotonic()
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
        self.sample()

    def baseline(self) -> Sample:
        """The first sample at or after the warm-up (the last one when the run was shorter)."""
        return next((s for t, s in self.samples if t >= self.warmup), self.samples[-1][1])


def cluster_pids(cluster: Cluster) -> dict[str, int]:
    """The processes to watch: each instance, nginx's master, Redis, PostgreSQL's postmaster."""
    pids: dict[str, int] = {}
    for index, proc in enumerate(cluster.instances):
        if proc is not None:
            pids[f"slideserver-{index + 1}"] = proc.pid
    for proc in cluster.processes:
        args = proc.args
        name = Path(str(args[0] if isinstance(args, list) else args)).name
        if name in ("nginx", "redis-server"):
            pids[name] = proc.pid
    postmaster = cluster.folder / "postgres" / "data" / "postmaster.pid"
    if postmaster.exists():
        pids["postgres"] = int(postmaster.read_text().split()[0])
    return pids


def run_locust(
    scenario: str, base: str, data: Path, users: int, rate: float, seconds: int, out: Path
) -> Path:
    """Run locust headless against ``base``; return the path of its stats CSV."""
    prefix = out / scenario
    command = [
        sys.executable, "-m", "locust", "-f", str(HERE / f"{scenario}.py"), "--headless",
        "-u", str(users), "-r", f"{rate:g}", "-t", f"{seconds}s", "--host", base,
        "--csv", str(prefix), "--only-summary", "--stop-timeout", "30",
        "--loglevel", "WARNING",
    ]  # fmt: skip
    env = {**os.environ, "LOADTEST_DATA": str(data)}
    subprocess.run(command, env=env, check=False, timeout=seconds + 180)
    return Path(f"{prefix}_stats.csv")


@dataclass
class Row:
    name: str
    count: int
    failures: int
    p50: float
    p95: float
    p99: float


def read_stats(path: Path) -> list[Row]:
    """The rows of locust's stats CSV (percentiles in milliseconds)."""
    rows = []
    with path.open() as handle:
        for item in csv.DictReader(handle):
            rows.append(
                Row(
                    item["Name"],
                    int(item["Request Count"]),
                    int(item["Failure Count"]),
                    float(item["50%"] if item["50%"] != "N/A" else "nan"),
                    float(item["95%"] if item["95%"] != "N/A" else "nan"),
                    float(item["99%"] if item["99%"] != "N/A" else "nan"),
                )
            )
    return rows


def stats_table(rows: list[Row]) -> str:
    lines = [
        "| step | requests | errors | p50 ms | p95 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.name} | {row.count} | {row.failures} | {row.p50:.0f} | {row.p95:.0f} "
            f"| {row.p99:.0f} |"
        )
    return "\n".join(lines)


def shift_verdict(rows: list[Row]) -> list[tuple[str, bool]]:
    by_name = {row.name: row for row in rows}
    checks = []
    for name, limit in SHIFT_GOALS.items():
        row = by_name.get(name)
        checks.append((f"{name}: p95 under {limit:.0f} ms", row is not None and row.p95 < limit))
    total = by_name.get("Aggregated")
    checks.append(("no failed request", total is not None and total.failures == 0))
    return checks


def soak_table(sampler: Sampler) -> tuple[str, list[tuple[str, bool]]]:
    """Memory, files and threads per process: before traffic, after warm-up, half-way, at the
    end, and the memory of each process minute by minute.

    Caches fill for the first minutes (tiles in each process and in Redis, slides opened by the
    handle pools), so memory is judged flat on the second half of the run: a leak grows there,
    a cache does not. Open files and threads are judged against the most seen between warm-up
    and half-way.
    """
    first, warm, last = sampler.samples[0][1], sampler.baseline(), sampler.samples[-1][1]
    end_time, warmup = sampler.samples[-1][0], sampler.warmup
    half = next(s for t, s in sampler.samples if t >= end_time / 2)
    lines = [
        f"| process | RSS before MiB | RSS at {sampler.warmup:.0f} s | RSS half-way | RSS end "
        "| RSS max | files at warm-up / end | threads at warm-up / end |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    checks = []
    for name in first:
        rss_max = max(sample[name][0] for _, sample in sampler.samples)
        r0, rh = first[name][0], half[name][0]
        (rw, fw, tw), (r1, f1, t1) = warm[name], last[name]
        lines.append(
            f"| {name} | {r0 / 1024:.0f} | {rw / 1024:.0f} | {rh / 1024:.0f} | {r1 / 1024:.0f} "
            f"| {rss_max / 1024:.0f} | {fw} / {f1} | {tw} / {t1} |"
        )
        checks.append((f"{name} alive at the end", r1 > 0))
        growth = (r1 - rh) / rh * 100 if rh else float("inf")
        if name == "redis-server":  # a cache: it grows to its maxmemory, then evicts
            bound = REDIS_MAXMEMORY_MIB + 64
            checks.append((f"{name}: memory within maxmemory ({rss_max / 1024:.0f} MiB at most)",
                           rss_max <= bound * 1024))  # fmt: skip
        else:
            flat = r1 <= rh * 1.1 + 16 * 1024
            checks.append((f"{name}: memory flat over the second half ({growth:+.1f}%)", flat))
        # Pools open connections and start threads as concurrency peaks and close or end them
        # when idle (anyio's threads after 10 s; the handle pool's slides, the database pools,
        # nginx's keep-alive connections), so one count against another moves by tens of files
        # and several threads either way: a leak shows as the end above everything seen
        # between the warm-up and half-way.
        for index, kind, slack in ((1, "open files", 10), (2, "threads", 4)):
            early = max((s[name][index] for t, s in sampler.samples if warmup <= t <= end_time / 2),
                        default=warm[name][index])  # fmt: skip
            end = last[name][index]
            checks.append((f"{name}: {kind} bounded after warm-up (end {end}, "
                           f"at most {early} up to half-way)", end <= early + slack))  # fmt: skip
    minutes = [s for t, s in sampler.samples if t >= 0][:: max(1, round(60 / sampler.every))]
    lines += ["", "RSS (MiB) each minute: " + "; ".join(
        f"{name} " + " ".join(f"{s[name][0] / 1024:.0f}" for s in minutes) for name in first
    )]  # fmt: skip
    return "\n".join(lines), checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.loadtest", description=__doc__)
    parser.add_argument("scenario", choices=("shift", "soak"))
    parser.add_argument("--samples", type=Path, default=PROJECT / "sample_data" / "generated")
    parser.add_argument("--cases", type=int, default=50, help="cases of three slides each")
    parser.add_argument(
        "--users", type=int, help="pathologists (shift 200) or connections (soak 64)"
    )
    parser.add_argument("--ramp", type=float, default=60, help="seconds to start every user")
    parser.add_argument("--seconds", type=int, help="how long locust runs (shift 150, soak 600)")
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the report (markdown) here too")
    args = parser.parse_args(argv)
    users = args.users or (200 if args.scenario == "shift" else 64)
    seconds = args.seconds or (150 if args.scenario == "shift" else 600)
    ensure_samples(args.samples)
    cases_dir = args.samples.parent / "loadtest"
    accessions = case_folder(args.samples, cases_dir, args.cases)
    os.environ["SLIDESERVER_AUTH"] = "tokens"
    if args.scenario == "soak":  # a small tile cache fills within the first minutes
        os.environ.setdefault("SLIDESERVER_MEMORY_CACHE_BYTES", str(64 * 1024 * 1024))
    cluster = Cluster([cases_dir], instances=args.instances)
    work = Path(tempfile.mkdtemp(prefix="slideserver-loadtest-"))
    try:
        log(f"starting the cluster: {args.instances} instances, nginx, PostgreSQL, Redis")
        cluster.start()
        tokens, lis_token = create_tokens(cluster.database_url, users)
        log(f"waiting for the catalog to list the {3 * len(accessions)} slides")
        wait_indexed(cluster.url, tokens[0], 3 * len(accessions))
        send_orders(cluster.url, lis_token, accessions)
        check_cases(cluster.url, tokens[0], accessions, len(SLIDE_KINDS))
        slides = slide_table(cluster.url, tokens[0])
        add_tile_sizes(cluster.url, tokens[0], slides)
        data = {
            "tokens": tokens,
            "accessions": accessions,
            "lis_token": lis_token,
            "orders": [order(a, i) for i, a in enumerate(accessions, 1)],
            "slides": slides,
        }
        data_file = work / "data.json"
        data_file.write_text(json.dumps(data))
        sampler = Sampler(cluster_pids(cluster), warmup=min(60.0, seconds / 4))
        sampler.start()
        log(f"locust: {args.scenario}, {users} users over {args.ramp:g} s, {seconds} s in all")
        rate = users / max(args.ramp, 1)
        stats = run_locust(args.scenario, cluster.url, data_file, users, rate, seconds, work)
        sampler.stop()
        rows = read_stats(stats)
        report = [f"## {args.scenario}: {users} users, {seconds} s, {args.instances} instances",
                  "", stats_table(rows), ""]  # fmt: skip
        checks = shift_verdict(rows) if args.scenario == "shift" else []
        if args.scenario == "soak":
            table, soak_checks = soak_table(sampler)
            report += [table, ""]
            checks += soak_checks
            total = next((r for r in rows if r.name == "Aggregated"), None)
            checks.append(("no failed request", total is not None and total.failures == 0))
        report += [f"- {'✔' if ok else '✘'} {text}" for text, ok in checks]
        text = "\n".join(report) + "\n"
        print(text)
        if args.out:
            args.out.write_text(text)
        return 0 if all(ok for _, ok in checks) else 1
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
