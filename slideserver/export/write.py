"""The work a worker does: plan one slide, or write one shard (WebDataset tar or Zarr array).

Both are plain functions of picklable arguments, so they run the same in a local process pool
and on a Dask cluster. A shard is written under a temporary name and renamed into place with
its manifest part, so a shard that exists is complete: an interrupted export leaves only
temporary files, which the next run replaces.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slideserver.client.dataset import Patch, plan_patches
from slideserver.export.plan import (
    MANIFEST_FIELDS,
    ExportOptions,
    ShardTask,
    SlideEntry,
    manifest_row,
    patch_key,
)
from slideserver.export.sources import Origin, source_for

ZARR_GROUP = "patches.zarr"
MANIFEST_PARTS = "manifest.parts"


@dataclass(frozen=True)
class SlidePlan:
    """A worker's answer to :func:`plan_slide`: the patches, or why there are none."""

    slide: SlideEntry
    patches: list[Patch]
    skipped: str = ""
    cpu_seconds: float = 0.0


@dataclass(frozen=True)
class ShardDone:
    name: str
    patches: int
    cpu_seconds: float = 0.0
    """CPU time the worker spent on it (the bench counts work per CPU second)."""


def plan_slide(slide: SlideEntry, options: ExportOptions, origin: Origin) -> SlidePlan:
    """Plan one slide: its tissue grid at the export's size and resolution."""
    started = time.process_time()
    source = source_for(origin)
    geometry = source.geometry(slide)
    try:
        geometry.downsample_for(options.mpp)
    except ValueError as exc:
        return SlidePlan(slide, [], str(exc))
    areas = source.areas(slide, options.classes) if options.classes else None
    thumbnail = source.thumbnail(slide, geometry.thumbnail_side(options.thumbnail_size))
    patches = plan_patches(
        geometry, thumbnail, options.size, options.mpp, min_tissue=options.min_tissue, areas=areas
    )
    return SlidePlan(slide, patches, cpu_seconds=time.process_time() - started)


def write_shard(task: ShardTask, options: ExportOptions, out: str, origin: Origin) -> ShardDone:
    """Read a shard's patches and write it, with its manifest part, atomically."""
    started = time.process_time()
    source = source_for(origin)
    folder = Path(out)
    pixels = [source.read(task.slide, patch) for patch in task.patches]
    if options.format == "zarr":
        _write_zarr(folder / ZARR_GROUP, task, pixels)
    else:
        _write_tar(folder / f"{task.name}.tar", task, pixels, options.quality)
    _write_manifest_part(folder / MANIFEST_PARTS / f"{task.name}.csv", task)
    return ShardDone(task.name, len(task.patches), time.process_time() - started)


def shard_path(out: Path, name: str, options: ExportOptions) -> Path:
    """Where a finished shard is."""
    return out / ZARR_GROUP / name if options.format == "zarr" else out / f"{name}.tar"


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


def _write_tar(path: Path, task: ShardTask, pixels: list[np.ndarray], quality: int) -> None:
    """A WebDataset shard: ``KEY.jpg`` and ``KEY.json`` per patch, in order."""
    from slideserver.imaging.encode import encode_image

    partial = _partial(path)
    with tarfile.open(partial, "w") as tar:
        for patch, image in zip(task.patches, pixels, strict=True):
            key = patch_key(patch)
            meta = manifest_row(task.name, task.slide, patch)
            for suffix, data in (
                ("jpg", encode_image(image, "jpeg", quality)),
                ("json", json.dumps(meta, sort_keys=True).encode()),
            ):
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
    partial.rename(path)


def _write_zarr(group: Path, task: ShardTask, pixels: list[np.ndarray]) -> None:
    """A Zarr array ``(n, size, size, 3)`` uint8 per shard in one group; keys and metadata in
    its attributes."""
    import zarr

    target = group / task.name
    partial = _partial(target)
    shutil.rmtree(partial, ignore_errors=True)
    stack = np.stack(pixels) if pixels else np.zeros((0, 1, 1, 3), np.uint8)
    size = stack.shape[1]
    array = zarr.create_array(
        store=str(partial),
        shape=stack.shape,
        chunks=(min(16, max(1, len(pixels))), size, size, 3),
        dtype="uint8",
        attributes={
            "keys": [patch_key(p) for p in task.patches],
            "patches": [manifest_row(task.name, task.slide, p) for p in task.patches],
        },
    )
    array[...] = stack
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


def _write_manifest_part(path: Path, task: ShardTask) -> None:
    partial = _partial(path)
    with partial.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        for patch in task.patches:
            writer.writerow(manifest_row(task.name, task.slide, patch))
    partial.rename(path)
