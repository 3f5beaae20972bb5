"""Find slides under the configured roots without opening them with a backend library.

A slide is one file in a known format, one MIRAX ``.mrxs`` (its data folder is skipped), or the
DICOM instances of one slide in a folder. Symbolic links are followed only when they stay inside
a root; nothing outside the roots is ever opened.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from slideserver.models import SlideSource

log = logging.getLogger(__name__)

SLIDE_SUFFIXES = frozenset(
    {".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".mrxs", ".scn", ".bif", ".svslide"}
)
"""File endings of single-file slides (OME-TIFF ends in .ome.tif/.ome.tiff)."""

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


def is_within(path: Path, roots: Sequence[Path]) -> bool:
    """Tell whether ``path``, symlinks resolved, lies inside one of ``roots``."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    return any(real.is_relative_to(root.resolve()) for root in roots)


def discover(roots: Sequence[Path]) -> Iterator[FoundSlide]:
    """Yield every slide under ``roots``, in a stable order."""
    for root in roots:
        root = Path(root).absolute()
        if not root.is_dir():
            log.warning("slide root %s is not a folder; skipped", root.name)
            continue
        yield from _walk(root, roots)


def _walk(root: Path, roots: Sequence[Path]) -> Iterator[FoundSlide]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        folder = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        names = sorted(f for f in filenames if not f.startswith("."))
        mirax_data = {Path(f).stem for f in names if f.lower().endswith(".mrxs")}
        dirnames[:] = [d for d in dirnames if d not in mirax_data]
        dicom_files: list[Path] = []
        for name in names:
            path = folder / name
            if path.is_symlink() and not is_within(path, roots):
                log.warning("skipped a symbolic link that leads outside the slide roots")
                continue
            lower = name.lower()
            if lower.endswith(".dcm"):
                dicom_files.append(path)
            elif Path(lower).suffix in SLIDE_SUFFIXES and path.is_file():
                yield FoundSlide(root, SlideSource(path))
        if dicom_files:
            yield from (FoundSlide(root, s) for s in _group_dicom(dicom_files))


def _group_dicom(files: list[Path]) -> list[SlideSource]:
    try:
        from slideserver.readers.dicom import group_series
    except ImportError:  # pragma: no cover - the DICOM reader is part of the package
        return []
    try:
        return group_series(files)
    except Exception:  # a broken folder must not stop a scan
        log.exception("DICOM files in a folder could not be grouped")
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


def stat_fingerprint(source: SlideSource) -> str:
    """Size, mtime and inode of every file: changes whenever a file is replaced or rewritten."""
    parts = []
    for path in source.all_files:
        st = path.stat()
        parts.append(f"{st.st_size}.{st.st_mtime_ns}.{st.st_ino}")
    if len(parts) == 1:
        return parts[0]
    return hashlib.blake2b("|".join(parts).encode(), digest_size=8).hexdigest()
