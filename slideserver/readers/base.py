"""The reader interface every backend implements.

To add a format, subclass :class:`SlideReader`, implement ``detect``, ``info``, ``read_region``
and ``associated`` (and ``read_encoded_tile`` when stored tiles can be sent as they are), then add
the class to :func:`slideserver.readers.registry.default_registry`.

Readers translate their backend's exceptions into :mod:`slideserver.errors` at this boundary
(``raise SlideUnreadable(...) from exc``); nothing above them sees openslide, tifffile or wsidicom
exceptions. Readers must be safe to call from several threads at once.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from PIL import Image

from slideserver.models import EncodedTile, SlideInfo, SlideSource


class WouldBlock(Exception):
    """The bytes asked for with ``nowait=True`` are not in memory: read them in a worker thread.

    Not an error: the event loop answers what the page cache already holds, and hands the rest to
    the thread pool, where waiting for a disk is harmless.
    """


class SlideReader(ABC):
    """An open slide."""

    name: ClassVar[str]
    """Short backend name: ``openslide``, ``tiff``, ``dicom``."""
    priority: ClassVar[int] = 100
    """Lower is tried first."""
    file_set_suffixes: ClassVar[frozenset[str]] = frozenset()
    """File endings (lower case) of slides made of several files of one folder; see
    :meth:`group_files`. Empty for readers of single-file slides."""

    def __init__(self, source: SlideSource) -> None:
        self.source = source

    @classmethod
    @abstractmethod
    def detect(cls, source: SlideSource) -> str | None:
        """Return the format name if this reader can open ``source``, else ``None``; never raise."""

    @classmethod
    def group_files(cls, files: Sequence[Path]) -> list[SlideSource]:
        """Sort files of one folder (those ending in :attr:`file_set_suffixes`) into slides.

        Reads headers only; files that belong to no slide are left out; never raises for a
        foreign or unreadable file.
        """
        return []

    @property
    @abstractmethod
    def info(self) -> SlideInfo:
        """Geometry, optics, vendor, associated image names and raw properties."""

    @abstractmethod
    def read_region(
        self, l0_x: int, l0_y: int, level: int, l_width: int, l_height: int
    ) -> Image.Image:
        """Read an RGB region of ``level``; the origin is given in level-0 pixels.

        Parts outside the slide, and transparent or empty areas, are white.
        """

    def read_encoded_tile(
        self, level: int, t_col: int, t_row: int, *, nowait: bool = False
    ) -> EncodedTile | None:
        """Return the stored bytes of one native tile when they can be sent as they are.

        The result decodes to exactly the native tile (``tile_width`` x ``tile_height``, padding
        included at the right and bottom edges). ``None`` means "no fast path here": the caller
        falls back to :meth:`read_region`. With ``nowait``, raise :class:`WouldBlock` instead of
        waiting for a disk (the caller is the event loop); readers that cannot tell whether a
        read would wait raise it whenever they would read at all.
        """
        return None

    def read_jpeg2000_tile(self, level: int, t_col: int, t_row: int) -> EncodedTile | None:
        """Return one native tile's stored JPEG 2000 codestream (``image/jp2``), RGB components
        (possibly with the codestream's own colour transform), or ``None``: no such tile here.

        Not for browsers: DICOMweb sends these frames as stored (JPEG 2000 transfer syntax).
        """
        return None

    @abstractmethod
    def associated(self, name: str) -> Image.Image:
        """Return an associated image (``label``, ``macro``, ``thumbnail``) as RGB.

        Raises :class:`slideserver.errors.AssociatedImageNotFound` for an unknown name.
        """

    def close(self) -> None:
        """Release the backend's handles. Called once, when no request uses the reader."""
        return None

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


BACKEND_LOGGERS = ("wsidicom", "tifffile", "pydicom", "openslide")


def quiet_backend_logs() -> None:
    """Keep only critical records from the backend libraries.

    They log absolute paths (which may name patients) with their tracebacks; readers translate
    those failures into our own errors, so nothing useful is lost. Called by the CLI and by
    ``create_app``, so every worker process gets it.
    """
    for name in BACKEND_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
