"""Back up the catalog database into a folder with a manifest, and restore such a folder.

A backup is the folder ``slideserver-backup-<UTC time>`` in the destination: the database copy
(SQLite online backup or ``pg_dump``) and ``manifest.json``. It is built under a hidden
``.partial`` name and renamed when complete, so no half-written backup ever looks like one.
A restore checks every checksum before it writes anything, goes only into an empty database,
and compares the restored row counts with the manifest.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url

from slideserver.db.engine import normalise_url
from slideserver.ops import postgres, sqlite
from slideserver.ops.errors import BackupError, CountMismatch
from slideserver.ops.manifest import MANIFEST_NAME, Manifest, describe
from slideserver.ops.tables import Contents, differences

PREFIX = "slideserver-backup-"
PARTIAL_PREFIX = ".partial-"
_TIME_FORMAT = "%Y%m%dT%H%M%S%fZ"


def source_kind(url: str) -> str:
    """Return ``sqlite`` or ``postgresql`` for a database URL (refusing anything else)."""
    backend = make_url(normalise_url(url)).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise BackupError(f"cannot back up a {backend} database (only SQLite and PostgreSQL)")
    return backend


def backup_name(at: datetime) -> str:
    """Return the folder name of a backup taken at ``at`` (sorts by time)."""
    return PREFIX + at.astimezone(UTC).strftime(_TIME_FORMAT)


def list_backups(folder: Path) -> list[Path]:
    """Return the complete backups in ``folder`` (with a manifest), oldest first."""
    if not folder.is_dir():
        return []
    found = [
        p for p in folder.iterdir() if p.name.startswith(PREFIX) and (p / MANIFEST_NAME).is_file()
    ]
    return sorted(found, key=lambda p: p.name)


@dataclass(frozen=True)
class BackupInfo:
    """A finished backup: where it is, its manifest and how long it took."""

    path: Path
    manifest: Manifest
    seconds: float


def create_backup(url: str, destination: Path) -> BackupInfo:
    """Back up the database ``url`` into a new folder in ``destination`` and return it."""
    kind = source_kind(url)
    started = time.monotonic()
    at = datetime.now(UTC)
    try:
        destination.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=PARTIAL_PREFIX, dir=destination))
    except OSError as exc:
        raise BackupError(f"cannot write to the backup folder ({_os_reason(exc)})") from None
    try:
        engine = sqlite if kind == "sqlite" else postgres
        try:
            file_name, contents, server_version = engine.dump(url, partial)
            manifest = Manifest(
                created_at=at,
                source=kind,
                database_file=file_name,
                schema_versions=contents.schema_versions,
                tables=contents.tables,
                files={file_name: describe(partial, file_name)},
                server_version=server_version,
            )
            manifest.write(partial)
            _fsync_file(partial / file_name)
            final = destination / backup_name(at)
            partial.rename(final)
            _fsync_dir(destination)
        except OSError as exc:
            raise BackupError(f"cannot write the backup ({_os_reason(exc)})") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return BackupInfo(final, manifest, time.monotonic() - started)


def restore_backup(source: Path, url: str) -> Contents:
    """Restore the backup folder ``source`` into the empty database ``url``.

    Raises :class:`CorruptBackup` (nothing written) when a file fails its checksum,
    :class:`DatabaseNotEmpty` when the target holds tables, :class:`CountMismatch` when the
    restored counts differ from the manifest's.
    """
    kind = source_kind(url)
    manifest = Manifest.read(source)
    manifest.verify_files(source)
    if manifest.source != kind:
        raise BackupError(
            f"this is a {manifest.source} backup; it cannot be restored into a {kind} database"
        )
    engine = sqlite if kind == "sqlite" else postgres
    engine.ensure_empty(url)
    restored: Contents = engine.load(source / manifest.database_file, url)
    mismatch = differences(manifest.tables, restored.tables)
    if mismatch:
        raise CountMismatch(mismatch)
    return restored


def verify_backup(info: BackupInfo, url: str, scratch_folder: Path) -> str:
    """Restore ``info`` into a scratch database and compare counts; return how it was verified.

    SQLite restores into a temporary file in ``scratch_folder``; PostgreSQL into a database
    created next to ``url``'s and dropped afterwards, or not at all when the role may not
    create databases (the answer says so).
    """
    if info.manifest.source == "sqlite":
        with tempfile.TemporaryDirectory(prefix=".verify-", dir=scratch_folder) as folder:
            restore_backup(info.path, f"sqlite:///{Path(folder) / 'verify.db'}")
        return "restored into a scratch database"
    with postgres.scratch_database(url) as scratch:
        if scratch is None:
            return "not restored: the database role may not create a scratch database"
        restore_backup(info.path, scratch)
    return "restored into a scratch database"


def _os_reason(exc: OSError) -> str:
    """The operating system's words without the file name (``Permission denied``)."""
    return exc.strerror or type(exc).__name__


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
