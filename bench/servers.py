"""Processes the benchmark starts on loopback and always stops: Redis, nginx, the servers.

Every process runs in its own session so it can be stopped with its children (uvicorn workers,
nginx workers) by its own process-group ID, and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

HOST = "127.0.0.1"
PYTHON = sys.executable


def free_port() -> int:
    """Return a loopback port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def cores() -> int:
    return len(os.sched_getaffinity(0))


def pinned(command: Sequence[str], cpu: int | None) -> list[str]:
    """Prefix ``command`` with ``taskset`` to run it on one core (when there is more than one)."""
    if cpu is None or cores() < 2 or shutil.which("taskset") is None:
        return list(command)
    return ["taskset", "-c", str(cpu), *command]


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 200 <= int(response.status) < 300
    except OSError:
        return False


class Process:
    """One started process (and its children), stopped by its process group on exit."""

    def __init__(self, name: str, command: Sequence[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                list(command),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def wait_ready(
        self, check: str | None = None, port: int | None = None, limit: float = 60
    ) -> None:
        """Wait until ``check`` answers 2xx (or ``port`` accepts); bounded."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.name} exited early:\n{tail}")
            if check is not None and http_ok(check):
                return
            if port is not None:
                with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.5):
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} not ready within {limit:.0f}s; see {self.log}")

    def cpu_seconds(self) -> float:
        """CPU time used so far by every live process of the group (server and its workers).

        The machine may be shared: req/s then depends on what else runs, requests per CPU
        second much less so.
        """
        total = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # fields[0] is field 3 (state): pgrp is field 5, utime and stime fields 14 and 15.
            if int(fields[2]) == self.popen.pid:
                total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """SIGTERM the group, then SIGKILL it if it lingers."""
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)


@contextlib.contextmanager
def started(process: Process) -> Iterator[Process]:
    try:
        yield process
    finally:
        process.stop()


def redis(workdir: Path) -> tuple[Process, str]:
    """Start redis-server with a memory bound and LRU eviction, as docs/cache.md advises."""
    port = free_port()
    folder = workdir / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    command = [
        "redis-server",
        "--bind", HOST,
        "--port", str(port),
        "--dir", str(folder),
        "--save", "",
        "--appendonly", "no",
        "--maxmemory", "1gb",
        "--maxmemory-policy", "allkeys-lru",
    ]  # fmt: skip
    process = Process("redis", command, workdir / "redis.log", dict(os.environ))
    process.wait_ready(port=port, limit=20)
    return process, f"redis://{HOST}:{port}/0"


def flush_redis(url: str) -> None:
    """Empty Redis between runs (each run starts cold)."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(b"FLUSHALL\r\n")
        if not sock.recv(16).startswith(b"+OK"):
            raise RuntimeError("FLUSHALL failed")


def slideserver(
    root: Path, workdir: Path, *, workers: int, cpu: int | None, redis_url: str
) -> tuple[Process, str]:
    """Start ``slideserver serve`` as an operator would, with the log level at warning."""
    port = free_port()
    env = dict(os.environ)
    env["SLIDESERVER_DATABASE_URL"] = f"sqlite:///{workdir / 'catalog.db'}"
    command = pinned(
        [
            PYTHON, "-m", "slideserver", "serve", str(root),
            "--host", HOST, "--port", str(port), "--workers", str(workers),
            "--log-level", "warning",
            *(["--redis-url", redis_url] if redis_url else []),
        ],
        cpu,
    )  # fmt: skip
    process = Process(f"slideserver x{workers}", command, workdir / "slideserver.log", env)
    base = f"http://{HOST}:{port}"
    process.wait_ready(check=f"{base}/readyz")
    return process, base


def reference(slides: dict[str, Path], workdir: Path, *, cpu: int | None) -> tuple[Process, str]:
    """Start the reference server (one process, like openslide's example server)."""
    port = free_port()
    env = dict(os.environ)
    env["BENCH_SLIDES"] = os.pathsep.join(f"{name}={path}" for name, path in slides.items())
    command = pinned(
        [
            PYTHON, "-m", "uvicorn", "--factory", "bench.reference:create_app",
            "--host", HOST, "--port", str(port), "--log-level", "warning", "--no-access-log",
        ],
        cpu,
    )  # fmt: skip
    process = Process("reference", command, workdir / "reference.log", env)
    base = f"http://{HOST}:{port}"
    process.wait_ready(check=f"{base}/healthz")
    return process, base


NGINX_CONF = """
{user}
worker_processes {workers};
worker_rlimit_nofile 65536;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 65;
    open_file_cache max=16000 inactive=120s;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    types {{ image/jpeg jpeg; }}
    default_type application/octet-stream;
    server {{
        listen {host}:{port};
        location /tiles/ {{
            alias {root}/;
            add_header Cache-Control "public, max-age=31536000, immutable";
        }}
        location = /healthz {{ return 200 "ok"; }}
    }}
}}
"""


def nginx(tiles: Path, workdir: Path, *, workers: int, cpu: int | None) -> tuple[Process, str]:
    """Start nginx serving pre-extracted tile files from ``tiles`` under ``/tiles/``."""
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="nginx-", dir=workdir))
    conf = tmp / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            user="user root;" if os.geteuid() == 0 else "",
            workers=workers,
            tmp=tmp,
            host=HOST,
            port=port,
            root=tiles,
        )
    )
    command = pinned(["nginx", "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")], cpu)
    process = Process(f"nginx x{workers}", command, tmp / "stdout.log", dict(os.environ))
    base = f"http://{HOST}:{port}"
    process.wait_ready(check=f"{base}/healthz", limit=20)
    return process, base
