"""Where pixels come from, in a worker: the slide's files (the fast path) or the server's API.

Built once per worker process from a picklable :class:`Origin` and kept: open readers and the
client's connections are reused by every task the process runs.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from slideserver.client import Client
from slideserver.client.annotations import ClassArea, class_areas
from slideserver.client.dataset import Patch
from slideserver.client.errors import NotFound
from slideserver.client.geometry import SlideGeometry
from slideserver.client.tissue import Pixels
from slideserver.export.plan import SlideEntry

OPEN_READERS = 8


@dataclass(frozen=True)
class Origin:
    """Where a job reads: ``server`` URL and ``token``, or (both empty) the slides' files."""

    server: str = ""
    token: str = ""


class FileSource:
    """Read slides where they are, through the readers and the stored-tile fast path."""

    def __init__(self) -> None:
        from slideserver.readers.registry import default_registry

        self.registry = default_registry()
        self._open: OrderedDict[str, Any] = OrderedDict()

    def reader(self, slide: SlideEntry) -> Any:
        if slide.source is None:
            raise ValueError("a slide read from files needs its source")
        reader = self._open.pop(slide.slide_id, None) or self.registry.open(slide.source)
        self._open[slide.slide_id] = reader
        while len(self._open) > OPEN_READERS:
            self._open.popitem(last=False)[1].close()
        return reader

    def geometry(self, slide: SlideEntry) -> SlideGeometry:
        info = self.reader(slide).info
        return SlideGeometry(
            slide.slide_id,
            info.width,
            info.height,
            info.mpp_x,
            tuple(level.downsample for level in info.levels),
        )

    def thumbnail(self, slide: SlideEntry, max_size: int) -> Pixels:
        from slideserver.imaging.regions import read_scaled_array

        reader = self.reader(slide)
        width, height = reader.info.width, reader.info.height
        scale = max(width, height) / max_size
        z_w, z_h = max(1, round(width / scale)), max(1, round(height / scale))
        return read_scaled_array(reader, 0, 0, width, height, z_w, z_h)

    def areas(self, slide: SlideEntry, classes: tuple[str, ...]) -> list[ClassArea] | None:
        return None  # the annotation store (issue 16) is read through the server for now

    def read(self, slide: SlideEntry, patch: Patch) -> Pixels:
        from slideserver.imaging.regions import read_scaled_array

        reader = self.reader(slide)
        e, s = patch.extent, patch.size
        return read_scaled_array(reader, patch.x, patch.y, e, e, s, s)


class ServerSource:
    """Read slides through the server's API with the client (its rules, its audit)."""

    def __init__(self, origin: Origin) -> None:
        self.client = Client(origin.server, origin.token or None)

    def geometry(self, slide: SlideEntry) -> SlideGeometry:
        return self.client.geometry(slide.slide_id)

    def thumbnail(self, slide: SlideEntry, max_size: int) -> Pixels:
        return self.client.thumbnail(slide.slide_id, max_size)

    def areas(self, slide: SlideEntry, classes: tuple[str, ...]) -> list[ClassArea] | None:
        features: list[dict[str, Any]] = []
        try:
            for cls in classes:
                features += self.client.annotations(slide.slide_id, cls)
        except NotFound:
            return None  # a server without annotations: patches are not filtered by class
        return class_areas(features, classes)

    def read(self, slide: SlideEntry, patch: Patch) -> Pixels:
        e = patch.extent
        return self.client.read_region(slide.slide_id, patch.x, patch.y, e, e, patch.mpp)


PatchSource = FileSource | ServerSource


@functools.cache
def source_for(origin: Origin) -> PatchSource:
    """This process's source for ``origin`` (one per process, reused by every task)."""
    return ServerSource(origin) if origin.server else FileSource()
