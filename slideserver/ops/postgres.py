"""PostgreSQL backups: ``pg_dump`` (custom format) of one exported snapshot, ``pg_restore`` back.

The row counts of the manifest are read in the very snapshot ``pg_dump`` dumps
(``pg_export_snapshot`` + ``--snapshot``), so they match the dump under concurrent writers.
The client programs come from the server's major version (Debian installs each version under
``/usr/lib/postgresql/<major>/bin``). The password goes to them in ``PGPASSWORD``, never on a
command line, and no error message repeats the URL.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

from slideserver.db.engine import make_engine, normalise_url
from slideserver.ops.errors import BackupError, DatabaseNotEmpty
from slideserver.ops.tables import Contents, read_contents, table_names

log = logging.getLogger(__name__)

FILE_NAME = "database.pgdump"
TOOL_TIMEOUT = 6 * 3600
"""Seconds ``pg_dump`` or ``pg_restore`` may run before the attempt counts as failed."""
_PATH = re.compile(r"(?:[A-Za-z]:)?/[^\s\"',;:]+")


def server_major(engine: Engine) -> int:
    """Return the major version of the server behind ``engine`` (e.g. 16)."""
    with engine.connect() as connection:
        return int(connection.execute(text("SHOW server_version_num")).scalar_one()) // 10000


def find_tool(name: str, major: int) -> Path:
    """Return ``pg_dump`` or ``pg_restore`` of the server's major version (or a newer one).

    Debian's versioned folders first, then ``PATH`` (whose version is checked).
    """
    installed = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    versions = {int(p.split("/")[4]): Path(p) for p in installed}
    for version in sorted(v for v in versions if v >= major):
        return versions[version]
    on_path = shutil.which(name)
    if on_path:
        out = subprocess.run([on_path, "--version"], capture_output=True, text=True, timeout=30)
        found = re.search(r"(\d+)(?:\.\d+)?", out.stdout)
        if found and int(found.group(1)) >= major:
            return Path(on_path)
    raise BackupError(
        f"{name} {major} is not installed (the PostgreSQL client of the server's major version; "
        f"Debian: postgresql-client-{major})"
    )


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """Return a libpq connection URI without the password, and the environment carrying it."""
    parsed: URL = make_url(normalise_url(url))
    env = dict(os.environ)
    if parsed.password is not None:
        env["PGPASSWORD"] = str(parsed.password)
    plain = parsed.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _run(tool: Path, args: list[str], url: str, what: str) -> None:
    dsn, env = _libpq(url)
    try:
        done = subprocess.run(
            [str(tool), *args, f"--dbname={dsn}"],
            capture_output=True,
            text=True,
            env=env,
            timeout=TOOL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BackupError(f"{what} did not finish within {TOOL_TIMEOUT} s") from None
    if done.returncode != 0:
        raise BackupError(f"{what} failed (exit {done.returncode}): {_last_line(done.stderr)}")


def _last_line(stderr: str) -> str:
    """The tool's last message, with paths and connection strings taken out."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    message = lines[-1] if lines else "no message"
    message = re.sub(r"postgres(?:ql)?://\S+", "<database>", message)
    return _PATH.sub("<path>", message)[:300]


def _fail(exc: SQLAlchemyError, doing: str) -> BackupError:
    return BackupError(f"cannot {doing} ({type(exc).__name__})")


def dump(url: str, folder: Path) -> tuple[str, Contents, str]:
    """Dump the database into ``folder``; return the file name, what it holds, server version."""
    engine = make_engine(url)
    try:
        tool = find_tool("pg_dump", server_major(engine))
        snapshot_reader = engine.connect().execution_options(isolation_level="REPEATABLE READ")
        with snapshot_reader as connection, connection.begin():
            snapshot = str(connection.execute(text("SELECT pg_export_snapshot()")).scalar_one())
            version = str(connection.execute(text("SHOW server_version")).scalar_one())
            contents = read_contents(connection)
            _run(
                tool,
                ["--format=custom", f"--snapshot={snapshot}", f"--file={folder / FILE_NAME}"],
                url,
                "pg_dump",
            )
    except SQLAlchemyError as exc:
        raise _fail(exc, "read the PostgreSQL database") from None
    finally:
        engine.dispose()
    return FILE_NAME, contents, version.split()[0]


def ensure_empty(url: str) -> None:
    """Raise :class:`DatabaseNotEmpty` when the database holds any table in its schema."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            names = table_names(connection)
    except SQLAlchemyError as exc:
        raise _fail(exc, "open the target database") from None
    finally:
        engine.dispose()
    if names:
        raise DatabaseNotEmpty(
            f"the target database is not empty ({len(names)} tables): restore only into an "
            "empty database (create a new one, or drop and re-create it, first)"
        )


def load(backup_file: Path, url: str) -> Contents:
    """Restore the dump into the (empty) database ``url`` in one transaction; return what it holds.

    Owners and privileges are not restored (``--no-owner --no-privileges``): the restoring role
    owns everything, as the migrations would have made it.
    """
    engine = make_engine(url)
    try:
        tool = find_tool("pg_restore", server_major(engine))
        _run(
            tool,
            [
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                "--single-transaction",
                str(backup_file),
            ],
            url,
            "pg_restore",
        )
        with engine.connect() as connection:
            return read_contents(connection)
    except SQLAlchemyError as exc:
        raise _fail(exc, "read the restored PostgreSQL database") from None
    finally:
        engine.dispose()


@contextmanager
def scratch_database(url: str) -> Iterator[str | None]:
    """Create an empty database next to ``url``'s, yield its URL, and always drop it.

    Yields ``None`` when the role may not create databases (then nothing is created).
    """
    admin = make_engine(url).execution_options(isolation_level="AUTOCOMMIT")
    name = f"slideserver_verify_{uuid.uuid4().hex[:12]}"
    try:
        try:
            with admin.connect() as connection:
                allowed = connection.execute(
                    text(
                        "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
                    )
                ).scalar()
                if allowed:
                    connection.execute(text(f'CREATE DATABASE "{name}"'))
        except SQLAlchemyError as exc:
            raise _fail(exc, "create a scratch database to verify the backup") from None
        if not allowed:
            yield None
            return
        try:
            yield (
                make_url(normalise_url(url))
                .set(database=name)
                .render_as_string(hide_password=False)
            )
        finally:
            try:
                with admin.connect() as connection:
                    connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            except SQLAlchemyError as exc:
                log.warning("could not drop the scratch database %s (%s)", name, type(exc).__name__)
    finally:
        admin.engine.dispose()
