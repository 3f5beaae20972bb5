"""DICOM WSI slides held in a PACS, read over DICOMweb through wsidicom's web source.

The catalog knows such a slide by a small local file, ``<slide>.dcmweb`` (JSON: the source's
name, the study and the series of one slide scan), written by
:mod:`slideserver.dicom.sources` when it lists the PACS; the file is what the catalog scans,
fingerprints and hashes, like any slide file. Opening one asks an *opener* for the
``WsiDicom``: the opener (built in :mod:`slideserver.dicom.sources`, where the HTTP session,
its credentials and the server's quirks live) is handed to :func:`dicomweb_reader`, which makes
the reader class the registry uses. This module imports no network code: wsidicom does the
fetching. Everything else (geometry, properties, regions, stored JPEG frames passed through,
labels) is the DICOM reader's.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from wsidicom import WsiDicom

from slideserver.errors import SlideGone, SlideServerError, SlideUnreadable
from slideserver.models import SlideSource
from slideserver.readers.base import SlideReader
from slideserver.readers.dicom import DicomReader, _describe

__all__ = ["POINTER_SUFFIX", "DicomWebReader", "PacsSlide", "dicomweb_reader"]

POINTER_SUFFIX = ".dcmweb"
FORMAT = "dicom"


@dataclass(frozen=True)
class PacsSlide:
    """Where a slide is in a PACS: the source's name, its study and its series."""

    source: str
    study: str
    series: tuple[str, ...]

    def to_json(self) -> str:
        """The pointer file's content: stable, so its hash (the slide ID) is too."""
        body = {"source": self.source, "study": self.study, "series": sorted(self.series)}
        return json.dumps(body, sort_keys=True)

    @classmethod
    def read(cls, path: Path) -> PacsSlide:
        """Read a pointer file; :class:`SlideUnreadable` when it is not one."""
        try:
            body = json.loads(path.read_text())
            return cls(str(body["source"]), str(body["study"]), tuple(map(str, body["series"])))
        except FileNotFoundError as exc:
            raise SlideGone(f"PACS slide {path.name!r} is gone") from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SlideUnreadable(f"{path.name!r} is not a PACS slide pointer") from exc


Opener = Callable[[PacsSlide], WsiDicom]
"""Open a PACS slide with wsidicom's web source (see :mod:`slideserver.dicom.sources`)."""


class DicomWebReader(DicomReader):
    """A PACS slide: a pointer file, opened through the class's :attr:`opener`."""

    name = "dicomweb"
    priority = 31
    file_set_suffixes = frozenset({POINTER_SUFFIX})
    opener: ClassVar[Opener | None] = None

    @classmethod
    def group_files(cls, files: Sequence[Path]) -> list[SlideSource]:
        """Every pointer file is one slide."""
        return [
            SlideSource(path=f, format_hint=FORMAT)
            for f in sorted(files)
            if f.suffix == POINTER_SUFFIX
        ]

    @classmethod
    def detect(cls, source: SlideSource) -> str | None:
        if cls.opener is None or source.files:
            return None
        return FORMAT if source.path.suffix == POINTER_SUFFIX else None

    def __init__(self, source: SlideSource) -> None:
        SlideReader.__init__(self, source)
        self._close_lock = threading.Lock()
        self._closed = False
        opener = type(self).opener
        if opener is None:
            raise SlideUnreadable("no DICOMweb source is configured")
        slide = PacsSlide.read(source.path)
        try:
            self._wsi = opener(slide)
        except SlideServerError:
            raise
        except Exception as exc:
            raise SlideUnreadable(f"PACS slide cannot be opened: {_describe(exc)}") from exc
        try:
            self._pyramid = self._wsi.levels
            self._info = self._build_info()
        except Exception as exc:
            self._wsi.close()
            raise SlideUnreadable(f"PACS slide has unreadable metadata: {_describe(exc)}") from exc


def dicomweb_reader(opener: Opener) -> type[DicomWebReader]:
    """The reader class of PACS slides opened with ``opener``, for the registry."""
    return type("ConfiguredDicomWebReader", (DicomWebReader,), {"opener": staticmethod(opener)})
