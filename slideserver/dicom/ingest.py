"""The DICOM store: where STOW-RS and C-STORE put instances, and when a slide appears.

Layout under ``dicom_store_dir`` (a slide root of the catalog):

- ``.instances/<SOPInstanceUID>.dcm``: every instance once, by its UID. It is created with
  ``link(2)`` from a fully written, fsynced temporary file, which fails when the name exists:
  two senders of one UID race safely, and a UID already stored is compared, not overwritten
  (same data set: accepted again; other content: refused).
- ``.incoming/<StudyUID>/<slide>/``: instances of slides not yet whole (hard links, no copy).
  The catalog's walk skips dot folders, so nothing here is ever shown.
- ``<StudyUID>/<slide>/``: whole slides. ``<slide>`` is the scan's Frame of Reference UID (its
  series UID without one), so label and overview sit beside their pyramid. A new slide's folder
  is moved here in one ``rename(2)``: the catalog sees all of it or nothing.

:meth:`DicomStore.publish` moves every staged slide that is whole
(:mod:`~slideserver.dicom.completeness`), or whose last instance came ``quiet_seconds`` ago and
whose levels have all their frames; a slide with a level short of frames stays staged.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from slideserver.dicom.completeness import assess, read_part
from slideserver.dicom.instance import (
    DUPLICATE_SOP_INSTANCE,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    InstanceRefused,
    WsiInstance,
    is_uid,
    read_instance,
)
from slideserver.settings import Settings

log = logging.getLogger("slideserver.dicom.ingest")

INSTANCES = ".instances"
INCOMING = ".incoming"
SUFFIX = ".dcm"


@dataclass(frozen=True)
class Stored:
    """An instance the store holds now."""

    instance: WsiInstance
    duplicate: bool
    """It was held already, with the same data set (a retry): nothing was written."""


def dicom_roots(settings: Settings) -> Settings:
    """Return ``settings`` with the DICOM store and the PACS listing among the slide roots.

    A folder already inside a root is not added again (its slides would be found twice).
    """
    from dataclasses import replace

    roots = list(settings.roots)
    for folder in (settings.dicom_store_dir, settings.dicomweb_sources_dir):
        if not folder:
            continue
        path = Path(folder).resolve()
        if not any(path.is_relative_to(Path(root).resolve()) for root in roots):
            roots.append(path)
    return replace(settings, roots=tuple(roots)) if len(roots) > len(settings.roots) else settings


class DicomStore:
    """Instances on disk, staged until their slide is whole, then shown."""

    def __init__(self, root: Path, quiet_seconds: float = 60.0) -> None:
        self.root = root.absolute()
        self.quiet_seconds = quiet_seconds
        self.instances = self.root / INSTANCES
        self.incoming = self.root / INCOMING
        self._publish_lock = threading.Lock()
        self._held_back: set[Path] = set()

    def open(self) -> None:
        """Create the store's folders."""
        for folder in (self.root, self.instances, self.incoming):
            folder.mkdir(parents=True, exist_ok=True)

    # -- storing --

    def store(self, instance: WsiInstance) -> Stored:
        """Store one checked instance, staged; raise :class:`InstanceRefused` if it cannot be.

        Idempotent by SOP Instance UID: the same data set again is accepted without a write.
        """
        canonical = self.instances / f"{instance.sop_instance_uid}{SUFFIX}"
        try:
            created = self._create_once(canonical, instance.data)
        except OSError as exc:
            reason = OUT_OF_RESOURCES if exc.errno in (errno.ENOSPC, errno.EDQUOT) else None
            log.error("a DICOM instance could not be written: %s", type(exc).__name__)
            raise InstanceRefused(
                reason or PROCESSING_FAILURE, "the instance could not be written"
            ) from exc
        if not created and _digest_of(canonical) != instance.content_digest:
            raise InstanceRefused(
                DUPLICATE_SOP_INSTANCE,
                "an instance with this SOP Instance UID is stored with other content",
            )
        with self._publish_lock:  # publish() may be moving the staged folder
            if not self._placed(instance):
                staged = self._staged_dir(instance)
                staged.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileExistsError):
                    os.link(canonical, staged / canonical.name)
                _touch(staged)  # the quiet period counts from the last arrival
        return Stored(instance, duplicate=not created)

    def _create_once(self, target: Path, data: bytes) -> bool:
        """Write ``data`` to ``target`` unless it exists; return whether this call created it."""
        if target.exists():
            return False
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            with temporary.open("xb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(temporary, target)
            except FileExistsError:
                return False
            _fsync_dir(target.parent)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()

    def _staged_dir(self, instance: WsiInstance) -> Path:
        return self.incoming / instance.study_uid / instance.slide_key

    def _shown_dir(self, instance: WsiInstance) -> Path:
        return self.root / instance.study_uid / instance.slide_key

    def _placed(self, instance: WsiInstance) -> bool:
        name = f"{instance.sop_instance_uid}{SUFFIX}"
        return any(
            (folder / name).exists()
            for folder in (self._staged_dir(instance), self._shown_dir(instance))
        )

    # -- showing --

    def publish(self, now: float | None = None) -> list[str]:
        """Move staged slides that are ready into view; return their folders (relative paths)."""
        now = time.time() if now is None else now
        shown: list[str] = []
        with self._publish_lock:
            for study in _folders(self.incoming):
                for staged in _folders(study):
                    if self._ready(staged, now):
                        shown.append(self._show(staged))
                with contextlib.suppress(OSError):
                    study.rmdir()  # only when empty
        return shown

    def _ready(self, staged: Path, now: float) -> bool:
        shown = self.root / staged.relative_to(self.incoming)  # a slide shown before, if any
        files = {p.name: p for folder in (shown, staged) for p in folder.glob(f"*{SUFFIX}")}
        parts = [read_part(path) for _, path in sorted(files.items())]
        state = assess(p for p in parts if p is not None)
        if state.whole:
            return True
        try:
            quiet = now - staged.stat().st_mtime >= self.quiet_seconds
        except FileNotFoundError:
            return False
        if quiet and not state.frames_complete and staged not in self._held_back:
            self._held_back.add(staged)
            log.warning(
                "a DICOM slide stays unshown after the quiet period: %s",
                "no pyramid level arrived" if state.levels == 0 else "a level lacks frames",
            )
        return quiet and state.frames_complete

    def _show(self, staged: Path) -> str:
        target = self.root / staged.relative_to(self.incoming)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staged, target)  # a new slide appears whole
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            for path in sorted(staged.iterdir()):  # more instances of a slide already shown
                os.replace(path, target / path.name)
            staged.rmdir()
        _fsync_dir(target.parent)
        self._held_back.discard(staged)
        log.info("a DICOM slide is complete and shown")
        return target.relative_to(self.root).as_posix()

    def recover(self) -> int:
        """Tidy up after a crash: delete temporary files, stage instances stored but never
        staged (a crash between the two links); return how many were staged."""
        for path in self.instances.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                path.unlink()
        staged = 0
        for path in self.instances.glob(f"*{SUFFIX}"):
            try:
                if path.stat().st_nlink > 1:
                    continue  # staged or shown already
                instance = read_instance(path.read_bytes())
            except (OSError, InstanceRefused):
                continue
            with self._publish_lock:
                folder = self._staged_dir(instance)
                folder.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileExistsError):
                    os.link(path, folder / path.name)
            staged += 1
        return staged


def _folders(parent: Path) -> list[Path]:
    try:
        return sorted(p for p in parent.iterdir() if p.is_dir() and is_uid(p.name))
    except FileNotFoundError:
        return []


def _digest_of(path: Path) -> str:
    """SHA-256 of the data set of a stored file (after its file meta group)."""
    try:
        return read_instance(path.read_bytes()).content_digest
    except (InstanceRefused, OSError):
        return hashlib.sha256(b"unreadable").hexdigest()


def _touch(folder: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(folder)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


__all__ = ["DicomStore", "Stored", "dicom_roots"]
