"""SQLite backups: SQLite's online backup API, consistent while the server keeps writing.

The copy is taken in one step (``pages=-1``), which reads one snapshot of the WAL database
while writers go on; it is then switched to a rollback journal so the backup is one
self-contained file, and checked with ``PRAGMA quick_check``.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from slideserver.db.engine import BUSY_TIMEOUT_MS
from slideserver.ops.errors import BackupError, DatabaseNotEmpty
from slideserver.ops.tables import Contents, read_contents

FILE_NAME = "database.sqlite"


def database_path(url: str) -> Path:
    """Return the file a ``sqlite:///`` URL names (in-memory databases cannot be backed up)."""
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up or restored")
    return Path(database)


def _uri(path: Path, mode: str) -> str:
    return f"file:{quote(str(path.absolute()))}?mode={mode}"


@contextlib.contextmanager
def _connect(path: Path, mode: str) -> Iterator[sqlite3.Connection]:
    """Open ``path`` (``mode`` ro, rw or rwc) with the server's busy timeout; always close it."""
    connection = sqlite3.connect(_uri(path, mode), uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    connection.isolation_level = None
    try:
        yield connection
    finally:
        connection.close()


def contents_of(path: Path) -> Contents:
    """Count the rows of every table of the SQLite file ``path`` (read-only)."""
    engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(_uri(path, "ro"), uri=True))
    try:
        with engine.connect() as connection:
            return read_contents(connection)
    except SQLAlchemyError as exc:
        raise BackupError(f"cannot read the SQLite copy ({type(exc).__name__})") from None
    finally:
        engine.dispose()


def dump(url: str, folder: Path) -> tuple[str, Contents, str]:
    """Copy the database into ``folder``; return the file name, what it holds, SQLite's version."""
    source = database_path(url)
    if not source.is_file():
        raise BackupError("the SQLite catalog database does not exist (nothing to back up)")
    target = folder / FILE_NAME
    try:
        with _connect(source, "rw") as src, _connect(target, "rwc") as dst:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")
            check = dst.execute("PRAGMA quick_check").fetchone()
    except sqlite3.Error as exc:
        raise BackupError(f"SQLite could not copy the database ({_reason(exc)})") from None
    if not check or check[0] != "ok":
        raise BackupError("the copy of the SQLite database fails its integrity check")
    return FILE_NAME, contents_of(target), sqlite3.sqlite_version


def ensure_empty(url: str) -> None:
    """Raise :class:`DatabaseNotEmpty` when the SQLite file exists and holds any table."""
    path = database_path(url)
    if not path.exists() or path.stat().st_size == 0:
        return
    try:
        with _connect(path, "ro") as connection:
            count = connection.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
            ).fetchone()[0]
    except sqlite3.Error as exc:
        raise BackupError(f"cannot read the target database ({_reason(exc)})") from None
    if count:
        raise DatabaseNotEmpty(
            f"the target database is not empty ({count} tables): restore only into an empty "
            "database (move the old file away first)"
        )


def load(backup_file: Path, url: str) -> Contents:
    """Copy the backup file into the (empty) database ``url``; return what it then holds."""
    path = database_path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _connect(backup_file, "ro") as src, _connect(path, "rwc") as dst:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as exc:
        raise BackupError(f"SQLite could not restore the database ({_reason(exc)})") from None
    return contents_of(path)


def _reason(exc: sqlite3.Error) -> str:
    """SQLite's own words (they name no file)."""
    return str(exc) or type(exc).__name__
