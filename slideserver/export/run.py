"""Run an export: plan every slide, audit it, write its shards, on every core or a Dask cluster.

The coordinator (this process) chooses the slides, records in ``done.txt`` each shard a worker
finished, and at the end joins the shards' manifest parts into ``manifest.csv``. Workers are a
local process pool (one per core) or, with ``scheduler``, an existing Dask cluster
(``tcp://host:8786``): the same two functions run on either. A rerun with the same options
skips the shards ``done.txt`` lists, so an interrupted export resumes where it stopped.
"""

from __future__ import annotations

import csv
import gc
import json
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

from slideserver.export.plan import MANIFEST_FIELDS, ExportOptions, shard_tasks
from slideserver.export.select import ExportRefused, Selection, SlideCatalog
from slideserver.export.sources import Origin
from slideserver.export.write import MANIFEST_PARTS, ShardDone, SlidePlan, plan_slide, write_shard

DONE = "done.txt"
RECORD = "export.json"
MANIFEST = "manifest.csv"
PRELOAD = [
    "slideserver.export.write",
    "slideserver.readers.registry",
    "slideserver.readers.openslide",
    "slideserver.readers.tiff",
    "slideserver.imaging.regions",
    "slideserver.imaging.encode",
]
"""Imported once by the fork server, so that no worker pays for them."""


@dataclass
class ExportSummary:
    """What a run did."""

    slides: int = 0
    patches: int = 0
    shards_written: int = 0
    shards_already_done: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    """Slides chosen but not exported, and why."""
    missing: list[str] = field(default_factory=list)
    """IDs asked for that the principal cannot see (or that do not exist)."""
    worker_cpu_seconds: float = 0.0
    """CPU time the workers spent planning and writing."""


@contextmanager
def executor_for(scheduler: str | None, workers: int | None) -> Iterator[Executor]:
    """A process pool on this machine (every core by default), or a Dask cluster's executor.

    ``workers=0`` runs the work in this process (one thread): for debugging and small jobs.
    """
    if scheduler:
        from distributed import Client as DaskClient

        with (
            DaskClient(scheduler, set_as_default=False) as dask,  # type: ignore[no-untyped-call]
            dask.get_executor(pure=False) as executor,
        ):
            yield executor
        return
    from slideserver.settings import usable_cores

    if workers == 0:
        with ThreadPoolExecutor(1) as thread:
            yield thread
        return

    with ProcessPoolExecutor(workers or usable_cores(), mp_context=_start_method()) as pool:
        yield pool


def _start_method() -> BaseContext:
    """Fork the workers from this process when it runs no other thread: they start at once with
    every module it imported (the readers, the codecs, the catalog's), instead of each importing
    them again. With another thread running (a fork could copy a lock it holds), they fork from
    a fresh server process that imported the readers once.
    """
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        # The collector of a worker would otherwise walk (and so copy) every inherited object.
        gc.freeze()
        return multiprocessing.get_context("fork")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def check_record(out: Path, options: ExportOptions, selection: Selection) -> None:
    """Write the export's options on the first run; refuse a rerun that asks for other ones."""
    record = {"options": options.record(), "selection": asdict(selection)}
    path = out / RECORD
    if path.exists():
        if json.loads(path.read_text()) != json.loads(json.dumps(record)):
            raise ExportRefused(
                f"{out} holds an export with other options; use another --out folder"
            )
        return
    path.write_text(json.dumps(record, indent=2, sort_keys=True))


def remove_partials(out: Path) -> None:
    """Remove what an interrupted run left half-written (its shards are not in ``done.txt``)."""
    import shutil

    for folder in (out, out / MANIFEST_PARTS, out / "patches.zarr"):
        for partial in folder.glob(".*.partial"):
            if partial.is_dir():
                shutil.rmtree(partial, ignore_errors=True)
            else:
                partial.unlink(missing_ok=True)


def done_shards(out: Path) -> set[str]:
    path = out / DONE
    return set(path.read_text().split()) if path.exists() else set()


def run_export(
    out: Path,
    options: ExportOptions,
    selection: Selection,
    catalog: SlideCatalog,
    origin: Origin,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    on_shard: Callable[[str], None] | None = None,
) -> ExportSummary:
    """Export the selected slides' patches into ``out`` (see the module's docstring)."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_PARTS).mkdir(exist_ok=True)
    check_record(out, options, selection)
    remove_partials(out)
    if options.format == "zarr":
        import zarr

        zarr.open_group(str(out / "patches.zarr"), mode="a")
    catalog.refresh()
    entries, missing = catalog.select(selection)
    summary = ExportSummary(slides=len(entries), missing=missing)
    already = done_shards(out)
    finished: list[str] = []
    with executor_for(scheduler, workers) as pool, (out / DONE).open("a") as record:
        pending: dict[Future[Any], str] = {
            pool.submit(plan_slide, entry, options, origin): entry.slide_id for entry in entries
        }
        # After the workers started: the bar's monitor thread must not be there when they fork.
        bar = tqdm(total=0, unit="patch", desc="export", disable=None if progress else True)
        while pending:
            ready, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in ready:
                slide_id = pending.pop(future)
                try:
                    result = future.result()
                except Exception as exc:  # one bad slide does not stop the others
                    summary.skipped[slide_id] = _reason(exc)
                    continue
                summary.worker_cpu_seconds += result.cpu_seconds
                if isinstance(result, ShardDone):
                    record.write(result.name + "\n")
                    record.flush()
                    finished.append(result.name)
                    summary.shards_written += 1
                    bar.update(result.patches)
                    if on_shard is not None:
                        on_shard(result.name)
                    continue
                assert isinstance(result, SlidePlan)
                if result.skipped:
                    summary.skipped[slide_id] = result.skipped
                    continue
                tasks = shard_tasks(result.slide, result.patches, options.shard_size)
                todo = [t for t in tasks if t.name not in already]
                summary.patches += len(result.patches)
                summary.shards_already_done += len(tasks) - len(todo)
                bar.total += len(result.patches)
                bar.update(len(result.patches) - sum(len(t.patches) for t in todo))
                if todo:
                    catalog.audit(result.slide, sum(len(t.patches) for t in todo))
                for task in todo:
                    pending[pool.submit(write_shard, task, options, str(out), origin)] = slide_id
    bar.close()
    write_manifest(out, sorted(already | set(finished)))
    return summary


def _reason(exc: BaseException) -> str:
    """Why a slide failed, without its message (it may name the file): the error's code."""
    return str(getattr(exc, "code", "") or type(exc).__name__)


def write_manifest(out: Path, shards: list[str]) -> None:
    """Join the manifest parts of the finished shards into ``manifest.csv`` (atomically)."""
    partial = out / f".{MANIFEST}.{os.getpid()}.partial"
    with partial.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        for name in shards:
            part = out / MANIFEST_PARTS / f"{name}.csv"
            if part.exists():
                with part.open(newline="") as rows:
                    writer.writerows(csv.DictReader(rows))
    partial.rename(out / MANIFEST)
