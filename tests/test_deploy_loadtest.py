"""``make loadtest`` and ``make soak`` run for real, briefly: the cluster, locust, the report.

The full runs take minutes (their figures are in the README); these check that the tooling
drives the real cluster end to end and that every step of each scenario is answered without
error, so a change that breaks sign-in, case open or tiles under load fails here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from deploy.loadtest.run import Row, Sampler, read_stats, shift_verdict, soak_table

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

PROJECT = Path(__file__).resolve().parent.parent


def run(scenario: str, samples: Path, out: Path, users: int, seconds: int) -> str:
    command = [sys.executable, "-m", "deploy.loadtest", scenario, "--samples", str(samples)]
    command += ["--cases", "2", "--users", str(users), "--ramp", "2"]
    command += ["--seconds", str(seconds), "--out", str(out)]
    done = subprocess.run(
        command,
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert out.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    return out.read_text()


@pytest.fixture(scope="module")
def samples(samples_root: Path) -> Path:
    """The session's sample slides (the cases are hard-linked next to them)."""
    return samples_root


def test_shift_change_reports_every_step_without_errors(samples: Path, tmp_path: Path) -> None:
    report = run("shift", samples, tmp_path / "shift.md", users=4, seconds=12)
    for step in ("sign-in", "case open (case + thumbnails)", "first tile", "pan tile"):
        assert f"| {step} |" in report
    assert "✔ no failed request" in report


def test_soak_reports_every_process(samples: Path, tmp_path: Path) -> None:
    report = run("soak", samples, tmp_path / "soak.md", users=4, seconds=10)
    for process in ("slideserver-1", "slideserver-2", "nginx", "redis-server", "postgres"):
        assert f"| {process} |" in report
    for step in ("tile", "iiif region", "search", "case", "lis order"):
        assert f"| {step} |" in report
    assert "✔ no failed request" in report


def test_a_missed_goal_fails_the_verdict() -> None:
    rows = [
        Row("case open (case + thumbnails)", 10, 0, 300.0, 1200.0, 1500.0),
        Row("first tile", 10, 0, 20.0, 40.0, 60.0),
        Row("Aggregated", 20, 0, 50.0, 900.0, 1400.0),
    ]
    verdict = dict(shift_verdict(rows))
    assert verdict["case open (case + thumbnails): p95 under 1000 ms"] is False
    assert verdict["first tile: p95 under 250 ms"] is True


def test_stats_are_read_from_locust_csv(tmp_path: Path) -> None:
    csv = tmp_path / "x_stats.csv"
    csv.write_text(
        "Type,Name,Request Count,Failure Count,50%,95%,99%\n"
        "GET,first tile,7,1,21,90,120\n"
        ",Aggregated,7,1,21,90,120\n"
    )
    rows = read_stats(csv)
    assert rows[0] == Row("first tile", 7, 1, 21.0, 90.0, 120.0)
    assert dict(shift_verdict(rows))["no failed request"] is False


def _sampler(threads: list[int], files: list[int] | None = None) -> Sampler:
    """A ten-minute soak of one process sampled each minute, memory flat."""
    sampler = Sampler({"slideserver-1": 1}, every=60.0, warmup=60.0)
    open_files = files or [120] * len(threads)
    sampler.samples = [
        (60.0 * minute, {"slideserver-1": (400 * 1024, open_files[minute], count)})
        for minute, count in enumerate(threads)
    ]
    return sampler


def _verdicts(sampler: Sampler, kind: str) -> list[bool]:
    return [ok for text, ok in soak_table(sampler)[1] if kind in text]


def test_a_worker_pool_growing_and_shrinking_is_not_a_thread_leak() -> None:
    assert all(_verdicts(_sampler([11, 40, 46, 35, 42, 38, 44, 37, 39, 41, 45]), "threads"))


def test_threads_growing_through_the_run_fail_the_soak() -> None:
    assert not any(_verdicts(_sampler([11, 40, 42, 44, 46, 48, 50, 52, 54, 56, 58]), "threads"))


def test_connections_opened_and_closed_by_pools_are_not_a_file_leak() -> None:
    files = [30, 165, 120, 150, 108, 140, 130, 125, 160, 118, 140]
    assert all(_verdicts(_sampler([40] * 11, files), "open files"))


def test_open_files_growing_through_the_run_fail_the_soak() -> None:
    files = [30, 120, 130, 140, 150, 160, 170, 180, 190, 200, 210]
    assert not any(_verdicts(_sampler([40] * 11, files), "open files"))
