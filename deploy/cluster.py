"""The deployment of deploy/ on one machine, without Docker: ``make cluster``.

PostgreSQL (initdb in a temporary folder), Redis, two ``slideserver serve`` instances on loopback
ports sharing both, and Debian's nginx with deploy/nginx.conf in front (its upstream servers and
listener replaced by loopback addresses; plain HTTP, loopback only). Ctrl-C stops everything.
The tests drive the same :class:`Cluster` (kill an instance, restart it).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
NGINX_CONF = HERE / "nginx.conf"
START_TIMEOUT = 90.0
"""Seconds any one component may take to answer after it is started."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    check: Callable[[], bool], what: str, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll ``check()`` until it is true; raise if ``proc`` exits or the time is up."""
    deadline = time.monotonic() + START_TIMEOUT
    while not check():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not answer within {START_TIMEOUT:.0f} s")
        time.sleep(0.1)


def http_status(url: str) -> int | None:
    """The status of GET ``url``, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            status: int = answer.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def render_nginx_site(conf: str, upstreams: list[str], listen: str) -> str:
    """deploy/nginx.conf with loopback upstream servers and a plain listener in place of TLS."""
    servers = re.findall(r"^\s*server slideserver-\d+:8000(.*);$", conf, flags=re.M)
    if not servers:
        raise ValueError("deploy/nginx.conf names no upstream server slideserver-N:8000")
    params = servers[0]
    lines: list[str] = []
    for line in conf.splitlines():
        stripped = line.strip()
        if re.match(r"server slideserver-\d+:8000", stripped):
            if stripped.startswith("server slideserver-1:"):
                lines += [f"    server {address}{params};" for address in upstreams]
        elif stripped == "listen 443 ssl;":
            lines.append(f"    listen {listen};")
        elif not stripped.startswith("ssl_"):
            lines.append(line)
    return "\n".join(lines) + "\n"


class Cluster:
    """PostgreSQL, Redis, ``instances`` slideservers and nginx, in one temporary folder."""

    def __init__(self, roots: list[Path], instances: int = 2, port: int | None = None) -> None:
        self.roots = roots
        self.folder = Path(tempfile.mkdtemp(prefix="slideserver-cluster-"))
        os.chmod(self.folder, 0o755)  # PostgreSQL and nginx's workers run as other users
        self.port = port or free_port()
        self.instance_ports = [free_port() for _ in range(instances)]
        self.instances: list[subprocess.Popen[bytes] | None] = [None] * instances
        self.processes: list[subprocess.Popen[bytes]] = []
        self.pg_port = free_port()
        self.redis_port = free_port()
        self.session_secret = secrets.token_hex(32)
        self._as_postgres: list[str] = []
        self._pg_bin = self._postgres_bin()
        self._pg_started = False

    @property
    def url(self) -> str:
        """Where clients reach the cluster: nginx."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def database_url(self) -> str:
        folder = self.folder / "postgres"
        return f"postgresql+psycopg://postgres@/slideserver?host={folder}&port={self.pg_port}"

    # --- components ---

    @staticmethod
    def _postgres_bin() -> Path:
        found = sorted(
            glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
        )
        if not found:
            raise FileNotFoundError("PostgreSQL is not installed (`make system-deps`)")
        return Path(found[-1]).parent

    def _log(self, name: str) -> int:
        return os.open(self.folder / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _spawn(
        self, name: str, cmd: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = self._log(name)
        try:
            proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, start_new_session=True)
        finally:
            os.close(log)
        self.processes.append(proc)
        return proc

    def start_postgres(self) -> None:
        folder = self.folder / "postgres"
        folder.mkdir()
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            account = pwd.getpwnam("postgres")
            os.chown(folder, account.pw_uid, account.pw_gid)
            self._as_postgres = ["runuser", "-u", "postgres", "--"]
        run = [*self._as_postgres]
        initdb = [str(self._pg_bin / "initdb"), "-D", str(folder / "data"), "-U", "postgres"]
        initdb += ["--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"]
        subprocess.run([*run, *initdb], check=True, capture_output=True, cwd=folder, timeout=120)
        options = f"-k {folder} -p {self.pg_port} -c listen_addresses='' -c max_connections=200"
        pg_ctl = [str(self._pg_bin / "pg_ctl"), "start", "-D", str(folder / "data"), "-w"]
        pg_ctl += ["-o", options, "-l", str(folder / "server.log"), "-t", "60"]
        subprocess.run([*run, *pg_ctl], check=True, capture_output=True, cwd=folder, timeout=90)
        self._pg_started = True
        createdb = [str(self._pg_bin / "createdb"), "-h", str(folder), "-p", str(self.pg_port)]
        subprocess.run(
            [*run, *createdb, "-U", "postgres", "slideserver"],
            check=True,
            capture_output=True,
            cwd=folder,
            timeout=60,
        )

    def start_redis(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise FileNotFoundError("redis-server is not installed (`make system-deps`)")
        cmd = [executable, "--bind", "127.0.0.1", "--port", str(self.redis_port)]
        cmd += ["--dir", str(self.folder), "--save", "", "--appendonly", "no"]
        cmd += ["--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru"]
        proc = self._spawn("redis", cmd)

        def pong() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    return s.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        wait_for(pong, "redis-server", proc)

    def start_instance(self, index: int) -> None:
        """Start instance ``index`` (again) and wait until it is ready."""
        port = self.instance_ports[index]
        env = {
            **os.environ,
            "SLIDESERVER_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "SLIDESERVER_SESSION_SECRET": self.session_secret,
        }
        env.setdefault("SLIDESERVER_DRAIN_SECONDS", "2")
        cmd = [sys.executable, "-m", "slideserver", "serve", *map(str, self.roots)]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--database-url", self.database_url]
        proc = self._spawn(f"slideserver-{index + 1}", cmd, env)
        self.instances[index] = proc
        ready = f"http://127.0.0.1:{port}/readyz"
        wait_for(lambda: http_status(ready) == 200, f"slideserver-{index + 1}", proc)

    def kill_instance(self, index: int) -> None:
        """Kill instance ``index`` with SIGKILL, as a crash would."""
        proc = self.instances[index]
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        self.instances[index] = None

    def start_nginx(self) -> None:
        executable = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(executable).exists():
            raise FileNotFoundError("nginx is not installed (`make system-deps`)")
        folder = self.folder / "nginx"
        folder.mkdir()
        os.chmod(folder, 0o777)  # temporary files of nginx's unprivileged workers
        upstreams = [f"127.0.0.1:{port}" for port in self.instance_ports]
        site = render_nginx_site(NGINX_CONF.read_text(), upstreams, f"127.0.0.1:{self.port}")
        (folder / "site.conf").write_text(site)
        user = "user nobody nogroup;\n" if os.geteuid() == 0 else ""
        main = (
            # Each client connection may hold an upstream one too: 4096 serves ~2000 browsers
            # (the shift change of `make loadtest` opens up to 1200).
            f"{user}worker_processes 1;\nworker_rlimit_nofile 16384;\ndaemon off;\n"
            f"pid {folder}/nginx.pid;\n"
            f"error_log {folder}/error.log warn;\nevents {{ worker_connections 4096; }}\n"
            f"http {{\n    access_log off;\n"
            + "".join(
                f"    {kind}_temp_path {folder}/{kind};\n"
                for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            )
            + f"    include {folder}/site.conf;\n}}\n"
        )
        (folder / "nginx.conf").write_text(main)
        cmd = [executable, "-p", str(folder), "-c", str(folder / "nginx.conf")]
        proc = self._spawn("nginx", cmd)
        wait_for(lambda: http_status(f"{self.url}/healthz") == 200, "nginx", proc)

    # --- the whole ---

    def start(self) -> None:
        """Start every component, databases first; stop what started if one fails."""
        try:
            self.start_postgres()
            self.start_redis()
            # One after the other: the first instance creates the tables.
            for index in range(len(self.instances)):
                self.start_instance(index)
            self.start_nginx()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every process we started (SIGTERM, then SIGKILL), PostgreSQL, and the folder."""
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.processes):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.processes.clear()
        if self._pg_started:
            with contextlib.suppress(subprocess.SubprocessError):
                pg_ctl = [str(self._pg_bin / "pg_ctl"), "stop", "-D"]
                pg_ctl += [str(self.folder / "postgres" / "data"), "-m", "fast", "-w", "-t", "30"]
                subprocess.run(
                    [*self._as_postgres, *pg_ctl], capture_output=True, timeout=40, check=False
                )
            self._pg_started = False
        shutil.rmtree(self.folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.cluster", description=__doc__)
    parser.add_argument("roots", nargs="+", type=Path, help="folders of slides")
    parser.add_argument("--port", type=int, default=8080, help="nginx's port on 127.0.0.1")
    parser.add_argument("--instances", type=int, default=2)
    args = parser.parse_args(argv)
    cluster = Cluster(args.roots, args.instances, args.port)
    print(f"starting in {cluster.folder} (logs there) ...", file=sys.stderr)
    cluster.start()
    ports = ", ".join(str(p) for p in cluster.instance_ports)
    print(f"slideserver cluster at {cluster.url} (instances on ports {ports}); Ctrl-C stops it")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
