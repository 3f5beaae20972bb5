"""The manifest of a backup: what it holds, from which schema, and the checksum of each file.

A backup is a folder holding the database copy and ``manifest.json``; the manifest is written
last, so a folder without one was never finished. Checksums are verified before a restore
writes anything.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slideserver import __version__
from slideserver.ops.errors import CorruptBackup

MANIFEST_NAME = "manifest.json"
FORMAT = "slideserver-backup"
FORMAT_VERSION = 1
_CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    """Return the hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class BackupFile:
    """One file of the backup: its size and SHA-256."""

    sha256: str
    bytes: int


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` says; ``source`` is ``sqlite`` or ``postgresql`` (never a URL)."""

    created_at: datetime
    source: str
    database_file: str
    schema_versions: dict[str, str | None]
    tables: dict[str, int]
    files: dict[str, BackupFile] = field(default_factory=dict)
    server_version: str = ""
    slideserver_version: str = __version__
    format_version: int = FORMAT_VERSION

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files.values())

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.astimezone(UTC).isoformat()
        return {"format": FORMAT, **data}

    def write(self, folder: Path) -> None:
        """Write ``manifest.json`` into ``folder`` (flushed to disk)."""
        path = folder / MANIFEST_NAME
        with path.open("w", encoding="utf-8") as stream:
            json.dump(self.to_json(), stream, indent=2, sort_keys=True)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        """Read and check the manifest of the backup in ``folder``."""
        path = folder / MANIFEST_NAME
        if not path.is_file():
            raise CorruptBackup(
                f"no {MANIFEST_NAME}: not a slideserver backup, or an unfinished one"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT:
                raise CorruptBackup(f"{MANIFEST_NAME} is not a slideserver backup manifest")
            if data.get("format_version") != FORMAT_VERSION:
                raise CorruptBackup(
                    f"backup format version {data.get('format_version')!r} is not supported "
                    f"(this slideserver reads version {FORMAT_VERSION})"
                )
            return cls(
                created_at=datetime.fromisoformat(data["created_at"]),
                source=str(data["source"]),
                database_file=str(data["database_file"]),
                schema_versions=dict(data["schema_versions"]),
                tables={str(k): int(v) for k, v in data["tables"].items()},
                files={
                    str(name): BackupFile(str(f["sha256"]), int(f["bytes"]))
                    for name, f in data["files"].items()
                },
                server_version=str(data.get("server_version", "")),
                slideserver_version=str(data.get("slideserver_version", "")),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptBackup(f"{MANIFEST_NAME} is unreadable ({type(exc).__name__})") from None

    def verify_files(self, folder: Path) -> None:
        """Raise :class:`CorruptBackup` unless every listed file is there, whole and unchanged."""
        if self.database_file not in self.files:
            raise CorruptBackup(f"{MANIFEST_NAME} lists no checksum for the database copy")
        for name, expected in sorted(self.files.items()):
            path = folder / name
            if Path(name).name != name or not path.is_file():
                raise CorruptBackup(f"backup file {name} is missing")
            if path.stat().st_size != expected.bytes or sha256_of(path) != expected.sha256:
                raise CorruptBackup(
                    f"backup file {name} does not match its SHA-256 in {MANIFEST_NAME}: "
                    "the backup is corrupted"
                )


def describe(folder: Path, name: str) -> BackupFile:
    """Return the checksum entry of the file ``name`` in ``folder``."""
    path = folder / name
    return BackupFile(sha256_of(path), path.stat().st_size)
