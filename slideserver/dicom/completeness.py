"""Whether the instances of one slide that arrived so far make a whole slide.

DICOM has no "end of series": a scanner sends instance after instance, over one association or
several. A slide is shown once it is whole: every pyramid level that arrived has all its frames
(Number of Frames of its instances against the tiles of its Total Pixel Matrix, times focal
planes and optical paths; every part of a concatenation), and the pyramid reaches a level that
fits in one tile. Scanners whose smallest level is bigger than a tile are shown after the quiet
period instead (:class:`~slideserver.dicom.ingest.DicomStore`), but a level short of frames never.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pydicom

_TAGS = [
    "ImageType",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "TotalPixelMatrixColumns",
    "TotalPixelMatrixRows",
    "TotalPixelMatrixFocalPlanes",
    "NumberOfOpticalPaths",
    "DimensionOrganizationType",
    "ConcatenationUID",
    "InConcatenationTotalNumber",
    "InConcatenationNumber",
]


@dataclass(frozen=True)
class LevelPart:
    """What one VOLUME instance holds of its pyramid level."""

    width: int
    height: int
    tile_width: int
    tile_height: int
    frames: int
    planes: int
    sparse: bool
    concatenation: str | None
    concatenation_total: int
    concatenation_number: int

    @property
    def tiles(self) -> int:
        """Frames a whole level of this geometry holds (TILED_FULL)."""
        columns = math.ceil(self.width / self.tile_width)
        rows = math.ceil(self.height / self.tile_height)
        return columns * rows * self.planes


@dataclass(frozen=True)
class Completeness:
    """The state of a slide's instances."""

    levels: int
    """Pyramid levels that arrived."""
    frames_complete: bool
    """Every level that arrived has all its frames (and concatenation parts)."""
    pyramid_complete: bool
    """... and the smallest level fits in one tile: nothing more is expected."""

    @property
    def whole(self) -> bool:
        return self.frames_complete and self.pyramid_complete


def read_part(path: Path) -> LevelPart | None:
    """Return the level part of a VOLUME instance file; ``None`` for labels, overviews, junk."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_TAGS)
        image_type = list(ds.get("ImageType") or [])
        if len(image_type) < 3 or str(image_type[2]).upper() != "VOLUME":
            return None
        return LevelPart(
            width=int(ds.TotalPixelMatrixColumns),
            height=int(ds.TotalPixelMatrixRows),
            tile_width=int(ds.Columns),
            tile_height=int(ds.Rows),
            frames=int(ds.get("NumberOfFrames") or 1),
            planes=int(ds.get("TotalPixelMatrixFocalPlanes") or 1)
            * int(ds.get("NumberOfOpticalPaths") or 1),
            sparse=str(ds.get("DimensionOrganizationType") or "") == "TILED_SPARSE",
            concatenation=str(ds.ConcatenationUID) if ds.get("ConcatenationUID") else None,
            concatenation_total=int(ds.get("InConcatenationTotalNumber") or 1),
            concatenation_number=int(ds.get("InConcatenationNumber") or 1),
        )
    except Exception:  # read_instance checked these attributes when the file came in
        return None


def assess(parts: Iterable[LevelPart]) -> Completeness:
    """Tell whether the level parts of one slide make whole levels and a whole pyramid."""
    levels: dict[tuple[int, int], list[LevelPart]] = defaultdict(list)
    for part in parts:
        levels[(part.width, part.height)].append(part)
    if not levels:
        return Completeness(0, False, False)
    frames_complete = all(_level_complete(group) for group in levels.values())
    smallest = min(levels.values(), key=lambda group: group[0].width * group[0].height)[0]
    fits = smallest.width <= smallest.tile_width and smallest.height <= smallest.tile_height
    return Completeness(len(levels), frames_complete, frames_complete and fits)


def _level_complete(group: list[LevelPart]) -> bool:
    concatenations: dict[str, set[int]] = defaultdict(set)
    for part in group:
        if part.concatenation is not None:
            concatenations[part.concatenation].add(part.concatenation_number)
    for uid, numbers in concatenations.items():
        total = max(p.concatenation_total for p in group if p.concatenation == uid)
        if len(numbers) < total:
            return False
    if any(part.sparse for part in group):
        return True  # a sparse level need not cover its grid: only the quiet period tells
    return sum(part.frames for part in group) >= group[0].tiles


__all__ = ["Completeness", "LevelPart", "assess", "read_part"]
