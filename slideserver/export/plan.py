"""What an export writes: its options, the slides chosen, and each slide's patches cut into shards.

A slide's plan is its tissue grid (:func:`slideserver.client.dataset.plan_patches`, the same grid
the client's dataset uses), computed from a thumbnail where the slide is read. Plans are
deterministic, so an interrupted export planned again names the same shards.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from slideserver.client.dataset import Patch
from slideserver.models import SlideSource

FORMATS = ("webdataset", "zarr")
SHARD_SIZE = 1000
"""Patches per shard: a tar of about 30 MB of 256 px JPEGs, or one Zarr array."""


@dataclass(frozen=True)
class ExportOptions:
    """How patches are cut and written; recorded in the output folder so a rerun must match."""

    size: int = 256
    mpp: float | None = 0.5
    format: str = "webdataset"
    min_tissue: float = 0.5
    shard_size: int = SHARD_SIZE
    classes: tuple[str, ...] = ()
    thumbnail_size: int = 1024
    quality: int = 90
    """JPEG quality of WebDataset patches."""

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {self.format!r}")
        if not 16 <= self.size <= 4096:
            raise ValueError(f"size must be 16 to 4096 pixels, not {self.size}")
        if self.shard_size < 1:
            raise ValueError("shard size must be at least 1")

    def record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SlideEntry:
    """One slide chosen for export, as the exporting principal may see it."""

    slide_id: str
    name: str
    """What the manifest calls it: the slide ID (its pseudonym) for researchers."""
    source: SlideSource | None = None
    """Its files, when read where they are; ``None`` through the server's API."""
    subjects: tuple[str | None, str | None] = field(default=(None, None), compare=False)
    """Case and patient, for the audit row only: never written to any output."""


@dataclass(frozen=True)
class ShardTask:
    """One shard to write: a run of one slide's patches."""

    name: str
    slide: SlideEntry
    patches: tuple[Patch, ...]


def shard_name(slide_id: str, index: int) -> str:
    return f"{slide_id}-{index:05d}"


def shard_tasks(slide: SlideEntry, patches: list[Patch], shard_size: int) -> list[ShardTask]:
    """Cut a slide's patches into shards of at most ``shard_size``, in grid order."""
    starts = range(0, len(patches), shard_size)
    return [
        ShardTask(shard_name(slide.slide_id, n), slide, tuple(patches[i : i + shard_size]))
        for n, i in enumerate(starts)
    ]


def patch_key(patch: Patch) -> str:
    """A patch's key in a shard (WebDataset splits names at the first dot: none here)."""
    return f"{patch.slide_id}_{patch.x}_{patch.y}"


MANIFEST_FIELDS = (
    "shard",
    "key",
    "slide",
    "name",
    "x",
    "y",
    "extent",
    "size",
    "mpp",
    "level",
    "tissue",
    "label",
)


def manifest_row(shard: str, slide: SlideEntry, patch: Patch) -> dict[str, Any]:
    """One manifest line: where the patch is, at which resolution, with which label."""
    return {
        "shard": shard,
        "key": patch_key(patch),
        "slide": patch.slide_id,
        "name": slide.name,
        "x": patch.x,
        "y": patch.y,
        "extent": patch.extent,
        "size": patch.size,
        "mpp": "" if patch.mpp is None else patch.mpp,
        "level": patch.level,
        "tissue": round(patch.tissue, 4),
        "label": patch.label or "",
    }
