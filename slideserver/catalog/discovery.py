"""Find slides under the configured roots without opening them with a backend library.

A slide is one file in a known format, one MIRAX ``.mrxs`` (its data folder is skipped), or
files of one folder that the reader registry groups into a slide (the DICOM instances of one
scan; only headers are read). Symbolic links are followed only when they stay inside a root;
nothing outside the roots is ever opened.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from slideserver.files import is_within
from slideserver.models import SlideSource
from slideserver.readers.registry import ReaderRegistry

log = logging.getLogger(__name__)

SLIDE_SUFFIXES = frozenset(
    {
        ".svs",
        ".tif",
        ".tiff",
        ".ndpi",
        ".vms",
        ".vmu",
        ".mrxs",
        ".scn",
        ".bif",
        ".svslide",
        ".qptiff",
    }
)
"""File endings of single-file slides (OME-TIFF ends in .ome.tif/.ome.tiff; .qptiff is Akoya's
(PerkinElmer) QPI TIFF)."""

HASH_CHUNK = 64 * 1024


@dataclass(frozen=True)
class FoundSlide:
    """A slide found on disk, before any reader looked at it."""

    root: Path
    source: SlideSource

    @property
    def relpath(self) -> str:
        return self.source.path.relative_to(self.root).as_posix()

    @property
    def name(self) -> str:
        return self.source.path.name


def discover(roots: Sequence[Path], registry: ReaderRegistry) -> Iterator[FoundSlide]:
    """Yield every slide under ``roots``, in a stable order.

    ``registry`` sorts each folder's other files into multi-file slides (DICOM series).
    """
    for root in roots:
        root = Path(root).absolute()
        if not root.is_dir():
            log.warning("slide root %s is not a folder; skipped", root.name)
            continue
        yield from _walk(root, roots, registry)


def _walk(root: Path, roots: Sequence[Path], registry: ReaderRegistry) -> Iterator[FoundSlide]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        folder = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        names = sorted(f for f in filenames if not f.startswith("."))
        mirax_data = {Path(f).stem for f in names if f.lower().endswith(".mrxs")}
        dirnames[:] = [d for d in dirnames if d not in mirax_data]
        others: list[Path] = []
        for name in names:
            path = folder / name
            if path.is_symlink() and not is_within(path, roots):
                log.warning("skipped a symbolic link that leads outside the slide roots")
                continue
            if Path(name.lower()).suffix in SLIDE_SUFFIXES and path.is_file():
                yield FoundSlide(root, SlideSource(path))
            else:
                others.append(path)
        if others:
            yield from (FoundSlide(root, s) for s in _group_files(registry, others))


def _group_files(registry: ReaderRegistry, files: list[Path]) -> list[SlideSource]:
    try:
        return registry.group_files(files)
    except Exception:  # a broken folder must not stop a scan
        log.exception("files in a folder could not be grouped into slides")
        return []


def content_hash(source: SlideSource) -> str:
    """Hash size, head and tail of every file: cheap, and survives renames and moves."""
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(source.all_files, key=lambda p: p.name):
        size = path.stat().st_size
        digest.update(f"{path.name if source.files else ''}:{size}:".encode())
        with path.open("rb") as fh:
            digest.update(fh.read(HASH_CHUNK))
            if size > 2 * HASH_CHUNK and not source.files:
                fh.seek(size - HASH_CHUNK)
                digest.update(fh.read(HASH_CHUNK))
    return digest.hexdigest()


def slide_id_from_hash(content: str) -> str:
    """Derive the public slide ID: 16 URL-safe characters, stable while the content is."""
    raw = hashlib.blake2b(content.encode(), digest_size=10).digest()
    return base64.b32encode(raw).decode().lower()
