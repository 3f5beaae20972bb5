"""Scheduled backups run by the server itself, one process at a time, each verified.

Every process of a deployment runs :meth:`BackupSchedule.run`; a lock lets one of them back up at
a time (SQLite: ``flock`` on a file in the backup folder; PostgreSQL: a session advisory lock),
and under the lock a process that finds a backup younger than the interval adopts it instead of
making another. Each backup is restored into a scratch database and its counts compared before
older backups are removed (only the newest ``backup_keep`` are kept). The last result is what
``/readyz`` and the metrics show; a failure is logged at ERROR every time.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from anyio import sleep
from anyio.to_thread import run_sync
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from slideserver.db.engine import default_database_url, make_engine, normalise_url
from slideserver.metrics import Metrics
from slideserver.ops.backup import (
    PARTIAL_PREFIX,
    BackupInfo,
    create_backup,
    list_backups,
    verify_backup,
)
from slideserver.ops.errors import BackupError
from slideserver.ops.manifest import Manifest
from slideserver.settings import Settings

log = logging.getLogger(__name__)

LOCK_FILE = ".slideserver-backup.lock"
ADVISORY_LOCK = 0x51_1DE5_BAC0
"""PostgreSQL advisory lock key held while a process backs up (differs from the migrations')."""
RETRY_AFTER = 300.0
"""Seconds before a failed or contended backup is tried again (or the interval, if shorter)."""
_FRESH = 0.9
"""A backup younger than this share of the interval counts as this interval's backup."""


@dataclass(frozen=True)
class BackupResult:
    """The outcome of one scheduled backup, safe to show (no paths, no PHI)."""

    at: datetime
    ok: bool
    reason: str = ""
    name: str = ""
    bytes: int = 0
    seconds: float = 0.0
    verified: str = ""

    def check(self) -> str:
        """The ``/readyz`` check: ``ok`` or ``failing: <reason>``."""
        return "ok" if self.ok else f"failing: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "ok": self.ok,
            "reason": self.reason,
            "name": self.name,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "verified": self.verified,
        }


class BackupSchedule:
    """Back up the settings' database into ``backup_dir`` every ``backup_interval`` seconds."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.folder = Path(settings.backup_dir)
        self.interval = float(settings.backup_interval)
        self.keep = max(1, settings.backup_keep)
        self.url = default_database_url(settings)
        self.metrics = metrics
        self.last: BackupResult | None = None

    def check(self) -> str:
        """The ``/readyz`` check: ``pending`` before the first result, then the result's."""
        return "pending" if self.last is None else self.last.check()

    async def run(self) -> None:
        """Back up when due, forever (a lifespan background task; cancelled at shutdown)."""
        while True:
            delay = await run_sync(self.run_once)
            await sleep(delay)

    def run_once(self) -> float:
        """Back up if this interval has no backup yet; return the seconds until the next try."""
        try:
            with self.lock() as held:
                if not held:
                    log.info("another process is making the scheduled backup")
                    return min(self.interval, RETRY_AFTER)
                adopted = self._recent_backup()
                if adopted is not None:
                    self.last = adopted
                    self.metrics.observe_backup(True, adopted.at.timestamp())
                    age = (datetime.now(UTC) - adopted.at).total_seconds()
                    return max(1.0, self.interval - age)
                self._record(self._backup())
                return self.interval
        except BackupError as exc:
            reason = str(exc)
        except Exception as exc:  # never let a backup take the server down; say what it was
            reason = f"unexpected error ({type(exc).__name__})"
        self._record(BackupResult(datetime.now(UTC), ok=False, reason=reason))
        return min(self.interval, RETRY_AFTER)

    def _backup(self) -> BackupResult:
        self._remove_leftovers()
        info = create_backup(self.url, self.folder)
        try:
            verified = verify_backup(info, self.url, self.folder)
        except BackupError as exc:
            shutil.rmtree(info.path, ignore_errors=True)
            raise BackupError(f"the new backup failed verification: {exc}") from None
        self._apply_retention()
        return _result(info, verified)

    def _record(self, result: BackupResult) -> None:
        self.last = result
        self.metrics.observe_backup(result.ok, result.at.timestamp())
        if result.ok:
            log.info(
                "scheduled backup %s: %d bytes in %.1f s, %s",
                result.name,
                result.bytes,
                result.seconds,
                result.verified,
            )
        else:
            log.error("SCHEDULED BACKUP FAILED: %s", result.reason)

    def _recent_backup(self) -> BackupResult | None:
        """The newest backup when it is younger than the interval (made by any process)."""
        backups = list_backups(self.folder)
        if not backups:
            return None
        try:
            manifest = Manifest.read(backups[-1])
        except BackupError:
            return None
        age = (datetime.now(UTC) - manifest.created_at).total_seconds()
        if age >= self.interval * _FRESH:
            return None
        return BackupResult(
            manifest.created_at,
            ok=True,
            name=backups[-1].name,
            bytes=manifest.total_bytes,
            verified="made by another process",
        )

    def _remove_leftovers(self) -> None:
        """Remove unfinished backups and scratch files of runs that died (the lock is ours)."""
        for path in self.folder.glob(".*"):
            if path.name.startswith((PARTIAL_PREFIX, ".verify-")) and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)

    def _apply_retention(self) -> None:
        """Keep the newest ``keep`` backups; delete the older ones."""
        backups = list_backups(self.folder)
        for old in backups[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
            log.info("removed backup %s (keeping the newest %d)", old.name, self.keep)

    @contextlib.contextmanager
    def lock(self) -> Iterator[bool]:
        """Hold the deployment-wide backup lock; yields whether this process got it."""
        if make_url(normalise_url(self.url)).get_backend_name() == "postgresql":
            with _advisory_lock(self.url) as held:
                yield held
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            stream = (self.folder / LOCK_FILE).open("a")
        except OSError as exc:
            raise BackupError(
                f"cannot write to the backup folder ({exc.strerror or type(exc).__name__})"
            ) from None
        with stream:
            try:
                fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(stream.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _advisory_lock(url: str) -> Iterator[bool]:
    """Hold ``pg_try_advisory_lock`` on a connection of its own for the block."""
    engine = make_engine(url)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            held = bool(
                connection.execute(
                    text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_LOCK}
                ).scalar()
            )
            try:
                yield held
            finally:
                if held:
                    connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK})
    except SQLAlchemyError as exc:
        raise BackupError(f"cannot reach the database ({type(exc).__name__})") from None
    finally:
        engine.dispose()


def _result(info: BackupInfo, verified: str) -> BackupResult:
    return BackupResult(
        info.manifest.created_at,
        ok=True,
        name=info.path.name,
        bytes=info.manifest.total_bytes,
        seconds=info.seconds,
        verified=verified,
    )


def backup_schedule(settings: Settings, metrics: Metrics) -> BackupSchedule | None:
    """Return the schedule the settings ask for, or ``None`` when no backup folder is set."""
    return BackupSchedule(settings, metrics) if settings.backup_dir else None
