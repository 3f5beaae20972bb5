"""A throw-away PostgreSQL server for the tests: initdb in a temporary folder, a unix socket there.

Debian's server binaries live in ``/usr/lib/postgresql/<version>/bin`` (``make system-deps``
installs them). PostgreSQL refuses to run as root, so under root the server runs as the
``postgres`` system user. Every wait is bounded; :meth:`TempPostgres.stop` always runs.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

START_TIMEOUT = 30.0
"""Seconds ``pg_ctl start`` may take."""


def find_bin_dir() -> Path | None:
    """Return the newest PostgreSQL server ``bin`` folder with ``initdb``, or ``None``."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TempPostgres:
    """One PostgreSQL cluster in a temporary folder, reachable on a unix socket in it."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.folder = Path(tempfile.mkdtemp(prefix="slideserver-pg-"))
        self.data = self.folder / "data"
        self.port = _free_port()
        self.user = "postgres"
        self._as: list[str] = []
        self._started = False
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.folder, account.pw_uid, account.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, timeout: float = START_TIMEOUT) -> None:
        subprocess.run(
            [*self._as, *args],
            check=True,
            capture_output=True,
            timeout=timeout,
            cwd=self.folder,
        )

    def start(self) -> None:
        """Create the cluster and start the server; raise if it is not up in time."""
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            self.user,
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        self.resume()

    def resume(self) -> None:
        """Start the (initialised) server again, as after :meth:`pause`."""
        options = (
            f"-k {self.folder} -p {self.port} -c listen_addresses='' -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "start",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.folder / "server.log"),
            "-w",
            "-t",
            str(int(START_TIMEOUT)),
            timeout=START_TIMEOUT + 5,
        )
        self._started = True

    def pause(self) -> None:
        """Stop the server but keep its data, so :meth:`resume` brings it back (a restart)."""
        self._run(str(self.bin_dir / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w")
        self._started = False

    def url(self, database: str = "postgres") -> str:
        """Return the SQLAlchemy URL of ``database`` (psycopg 3, unix socket)."""
        return f"postgresql+psycopg://{self.user}@/{database}?host={self.folder}&port={self.port}"

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URL."""
        import psycopg

        with psycopg.connect(
            host=str(self.folder),
            port=self.port,
            user=self.user,
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
        return self.url(name)

    def truncate_all(self, database: str) -> None:
        """Empty every table of ``database`` but migration versions (fast reset between tests)."""
        import psycopg

        with psycopg.connect(
            host=str(self.folder),
            port=self.port,
            user=self.user,
            dbname=database,
            autocommit=True,
            connect_timeout=10,
        ) as conn:
            conn.execute("SET lock_timeout = '10s'")
            names = [
                row[0]
                for row in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                    "AND tablename NOT LIKE '%version'"
                )
            ]
            if names:
                tables = ", ".join(f'"{n}"' for n in names)
                conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")  # type: ignore[arg-type]

    def stop(self) -> None:
        """Stop the server (fast, then immediate) and delete the folder."""
        try:
            if self._started:
                for mode in ("fast", "immediate"):
                    with contextlib.suppress(subprocess.SubprocessError):
                        self._run(
                            str(self.bin_dir / "pg_ctl"),
                            "stop",
                            "-D",
                            str(self.data),
                            "-m",
                            mode,
                            "-w",
                            "-t",
                            "15",
                            timeout=20,
                        )
                        break
        finally:
            self._started = False
            shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def temp_postgres() -> Iterator[TempPostgres]:
    """Run a temporary server for the duration of the block."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL server binaries (initdb) are not installed")
    server = TempPostgres(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
