"""Database failures as domain errors: one SQLAlchemy ``handle_error`` hook on every engine.

A stopped, restarting or unreachable PostgreSQL, a SQLite file that became read-only, a full
disk: each is the backend failing, not a bug, so every store's query raises
:class:`~slideserver.errors.BackendUnavailable` (a 503) or
:class:`~slideserver.errors.InsufficientStorage` (a 507) instead of a driver error (a 500).
Errors that are bugs (a missing table, bad SQL, a constraint) pass through unchanged. The pool
still invalidates a dropped connection first, so the next query reconnects by itself.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy import Engine, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import InterfaceError, OperationalError

from slideserver.errors import BackendUnavailable, InsufficientStorage

UNREACHABLE = "the catalog database is unreachable; retry shortly"
READ_ONLY = "the catalog database is read-only; writes fail until it is writable again"
DISK_FULL = "the catalog database's disk is full; writes fail until space is freed"

# SQLite primary result codes (https://www.sqlite.org/rescode.html) that mean the file or its
# disk failed, not the statement.
_SQLITE_PERM = 3
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26
_SQLITE_BACKEND = {
    _SQLITE_PERM,
    _SQLITE_BUSY,
    _SQLITE_LOCKED,
    _SQLITE_IOERR,
    _SQLITE_CORRUPT,
    _SQLITE_CANTOPEN,
    _SQLITE_NOTADB,
}
_PG_DISK_FULL = "53100"
_PG_READ_ONLY = "25006"


class DatabaseReadOnly(BackendUnavailable):
    """The database refuses writes (a read-only file or mount, a standby): reads still work."""


def backend_error(
    original: BaseException, wrapped: BaseException | None
) -> BackendUnavailable | None:
    """Return the domain error for a driver error that means the database failed, else None.

    ``original`` is the driver's exception, ``wrapped`` SQLAlchemy's wrapper of it (if any).
    """
    if isinstance(original, sqlite3.Error):
        code = getattr(original, "sqlite_errorcode", -1) & 0xFF
        if code == _SQLITE_FULL:
            return InsufficientStorage(DISK_FULL)
        if code == _SQLITE_READONLY:
            return DatabaseReadOnly(READ_ONLY)
        if code in _SQLITE_BACKEND:
            return BackendUnavailable(UNREACHABLE)
        return None
    sqlstate = getattr(original, "sqlstate", None)
    if sqlstate == _PG_DISK_FULL:
        return InsufficientStorage(DISK_FULL)
    if sqlstate == _PG_READ_ONLY:
        return DatabaseReadOnly(READ_ONLY)
    if isinstance(wrapped, OperationalError | InterfaceError):
        return BackendUnavailable(UNREACHABLE)
    return None


def _translate(context: ExceptionContext) -> BaseException | None:
    if context.is_pre_ping:  # the pool is testing a connection: it handles the failure itself
        return None
    return backend_error(context.original_exception, context.sqlalchemy_exception)


def translate_errors(engine: Engine) -> None:
    """Make ``engine`` raise domain errors for database failures (see the module docstring)."""
    event.listen(engine, "handle_error", _translate)
