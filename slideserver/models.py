"""Value objects shared by every layer; no I/O here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Level:
    """One stored pyramid level, as the reader sees it."""

    width: int
    height: int
    downsample: float
    tile_width: int | None = None
    """Native tile width of this level, ``None`` when the level is not stored as tiles."""
    tile_height: int | None = None


@dataclass(frozen=True)
class SlideInfo:
    """What a reader knows about a slide: geometry, optics, vendor and raw properties."""

    format: str
    """Reader-specific format name: ``aperio``, ``generic-tiff``, ``ome-tiff``, ``dicom``..."""
    vendor: str | None
    levels: tuple[Level, ...]
    mpp_x: float | None = None
    mpp_y: float | None = None
    objective_power: float | None = None
    associated: tuple[str, ...] = ()
    properties: Mapping[str, str] = field(default_factory=dict)

    @property
    def width(self) -> int:
        return self.levels[0].width

    @property
    def height(self) -> int:
        return self.levels[0].height

    def summary(self) -> dict[str, Any]:
        """Format, vendor, size and optics as plain values: what the catalog and the API record."""
        return {
            "format": self.format,
            "vendor": self.vendor,
            "width": self.width,
            "height": self.height,
            "mpp_x": self.mpp_x,
            "mpp_y": self.mpp_y,
            "objective_power": self.objective_power,
        }


@dataclass(frozen=True)
class SlideSource:
    """The file(s) one slide is made of: one file, or the .dcm files of one DICOM series."""

    path: Path
    """The file, or for a multi-file slide its folder."""
    files: tuple[Path, ...] = ()
    """Every file of a multi-file slide (DICOM); empty for single-file slides."""
    format_hint: str | None = None

    @property
    def all_files(self) -> tuple[Path, ...]:
        return self.files or (self.path,)


@dataclass(frozen=True)
class EncodedTile:
    """Image bytes ready to send."""

    data: bytes
    media_type: str
    width: int = 0
    height: int = 0
