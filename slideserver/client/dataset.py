"""A tile dataset: a grid of patches over the tissue of each slide, read through the client.

PyTorch-style (``len(ds)``, ``ds[i]`` -> ``(pixels, metadata)``) without depending on torch: any
framework can wrap it. Patches are planned when the dataset is built (one thumbnail per slide,
and the annotations when classes are asked for); pixels are read when an item is asked for.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from slideserver.client.annotations import ClassArea, class_areas, label_points
from slideserver.client.errors import NotFound
from slideserver.client.geometry import SlideGeometry
from slideserver.client.sync import Client
from slideserver.client.tissue import Pixels, tissue_grid, tissue_mask

log = logging.getLogger("slideserver.client.dataset")

THUMBNAIL_SIZE = 1024


@dataclass(frozen=True)
class Patch:
    """One patch: a square of the slide, ``extent`` level-0 pixels a side, read at ``mpp``."""

    slide_id: str
    x: int
    """Level-0 left edge."""
    y: int
    """Level-0 top edge."""
    extent: int
    """Level-0 pixels per side (``size`` times the downsample)."""
    size: int
    """Pixels per side of the patch as read."""
    mpp: float | None
    """µm per pixel of the patch (``None``: the slide's full resolution)."""
    level: int
    """The stored level the pixels come from (never finer than needed, never upsampled)."""
    tissue: float
    """Fraction of the patch the thumbnail shows as tissue."""
    label: str | None = None
    """The annotation class the patch's centre lies in, when classes were asked for."""

    def metadata(self) -> dict[str, Any]:
        return asdict(self)


def extent_for(size: int, downsample: float) -> int:
    """Level-0 side of a patch of ``size`` pixels (reads back at exactly ``size``)."""
    return max(1, round(size * downsample))


def plan_patches(
    geometry: SlideGeometry,
    thumbnail: Pixels,
    size: int,
    mpp: float | None,
    *,
    min_tissue: float = 0.5,
    areas: Sequence[ClassArea] | None = None,
) -> list[Patch]:
    """The patches of one slide: its grid over the tissue of ``thumbnail``; with ``areas``, only
    those whose centre lies in one, labelled with its class."""
    downsample = geometry.downsample_for(mpp)
    extent = extent_for(size, downsample)
    grid = tissue_grid(geometry.width, geometry.height, extent, tissue_mask(thumbnail), min_tissue)
    level = geometry.stored_level(downsample)
    labels: list[str | None] = [None] * len(grid)
    if areas is not None:
        centres_x = grid.xs.astype(np.float64) + extent / 2
        centres_y = grid.ys.astype(np.float64) + extent / 2
        labels = label_points(centres_x, centres_y, areas)
    return [
        Patch(geometry.slide_id, int(x), int(y), extent, size, mpp, level, float(t), label)
        for x, y, t, label in zip(grid.xs, grid.ys, grid.tissue, labels, strict=True)
        if areas is None or label is not None
    ]


class TileDataset:
    """Patches of ``size`` x ``size`` pixels at ``mpp`` µm/px over the tissue of each slide.

    ``slides``: slide IDs or slide dicts (as :meth:`Client.slides` yields them). ``classes``:
    keep only patches inside annotations of these classes, labelled with the class; when the
    server has no annotation API, the filter is skipped with a warning. Slides that cannot give
    patches at ``mpp`` (scanned coarser, or without a resolution) are left out and listed in
    :attr:`skipped` with the reason.
    """

    def __init__(
        self,
        client: Client,
        slides: Iterable[str | dict[str, Any]],
        size: int = 256,
        mpp: float | None = 0.5,
        *,
        min_tissue: float = 0.5,
        classes: Sequence[str] | None = None,
        thumbnail_size: int = THUMBNAIL_SIZE,
        format: str = "png",
    ) -> None:
        self.client = client
        self.size = size
        self.mpp = mpp
        self.format = format
        self.patches: list[Patch] = []
        self.skipped: dict[str, str] = {}
        self.annotations_available = True
        self._pid = os.getpid()
        for slide in slides:
            slide_id = slide if isinstance(slide, str) else str(slide["id"])
            try:
                geometry = client.geometry(slide_id)
                geometry.downsample_for(mpp)
            except ValueError as exc:
                self.skipped[slide_id] = str(exc)
                continue
            areas = self._areas(slide_id, classes) if classes else None
            thumbnail = client.thumbnail(slide_id, geometry.thumbnail_side(thumbnail_size))
            self.patches += plan_patches(
                geometry, thumbnail, size, mpp, min_tissue=min_tissue, areas=areas
            )

    def _areas(self, slide_id: str, classes: Sequence[str]) -> list[ClassArea] | None:
        """The slide's areas of ``classes``; ``None`` (no filter) when the server has no
        annotation API."""
        if not self.annotations_available:
            return None
        features: list[dict[str, Any]] = []
        try:
            for cls in classes:
                features += self.client.annotations(slide_id, cls)
        except NotFound:
            log.warning("the server has no annotations; patches are not filtered by class")
            self.annotations_available = False
            return None
        return class_areas(features, classes)

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, index: int) -> tuple[Pixels, dict[str, Any]]:
        patch = self.patches[index]
        pixels = self._client().read_region(
            patch.slide_id, patch.x, patch.y, patch.extent, patch.extent, patch.mpp,
            format=self.format,
        )  # fmt: skip
        return pixels, patch.metadata()

    def _client(self) -> Client:
        """This process's client: a data loader's worker processes each open their own
        connections (a pool is never shared across a fork)."""
        if os.getpid() != self._pid:
            self.client = Client(self.client.base_url, self.client.token)
            self._pid = os.getpid()
        return self.client

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for worker processes (spawn): the connection pool stays behind."""
        state = self.__dict__.copy()
        state["client"] = (self.client.base_url, self.client.token)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        base_url, token = state.pop("client")
        self.__dict__.update(state)
        self.client = Client(base_url, token)
        self._pid = os.getpid()
