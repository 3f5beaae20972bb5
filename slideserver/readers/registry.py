"""Choose the reader for a slide: readers are tried in priority order."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from slideserver.errors import SlideUnreadable
from slideserver.models import SlideSource
from slideserver.readers.base import SlideReader


class ReaderRegistry:
    """An ordered set of reader classes."""

    def __init__(self, readers: Sequence[type[SlideReader]]) -> None:
        self.readers = sorted(readers, key=lambda r: r.priority)

    def detect(self, source: SlideSource) -> tuple[type[SlideReader], str] | None:
        """Return the first reader that claims ``source`` and the format it names."""
        for reader in self.readers:
            fmt = reader.detect(source)
            if fmt:
                return reader, fmt
        return None

    def group_files(self, files: Sequence[Path]) -> list[SlideSource]:
        """Sort files of one folder into the multi-file slides (DICOM series) readers make.

        Each reader that makes such slides gets the files with its endings; others are ignored.
        """
        sources: list[SlideSource] = []
        for reader in self.readers:
            mine = [f for f in files if f.suffix.lower() in reader.file_set_suffixes]
            if mine:
                sources.extend(reader.group_files(mine))
        return sources

    def open(self, source: SlideSource) -> SlideReader:
        """Open ``source`` with the first reader that claims it and can actually open it."""
        errors: list[str] = []
        for reader in self.readers:
            if not reader.detect(source):
                continue
            try:
                return reader(source)
            except SlideUnreadable as exc:
                errors.append(f"{reader.name}: {exc.detail}")
        if errors:
            raise SlideUnreadable("; ".join(errors))
        raise SlideUnreadable(f"no reader recognises {source.path.name!r}")


def default_registry() -> ReaderRegistry:
    """Return the registry of every built-in reader.

    Order: OpenSlide for the vendor formats it knows (it borrows tifffile's stored-tile fast path
    for TIFF-based ones), then tifffile for OME-TIFF and pyramids OpenSlide cannot read, then
    wsidicom for DICOM.
    """
    from slideserver.readers.dicom import DicomReader
    from slideserver.readers.openslide import OpenSlideReader
    from slideserver.readers.tiff.reader import TiffReader

    return ReaderRegistry([OpenSlideReader, TiffReader, DicomReader])
