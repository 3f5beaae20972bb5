"""Run ``slideserver serve`` as a real process on a free loopback port, bounded in time."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scrubbed_environ() -> dict[str, str]:
    """This process's environment without any ``SLIDESERVER_*`` variable (only flags configure)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SLIDESERVER_")}


@contextmanager
def live_server(
    roots: Sequence[Path],
    *extra: str,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    log: Path | None = None,
    cwd: Path | None = None,
    scrub_env: bool = False,
    start_new_session: bool = False,
    tls_ca: Path | None = None,
) -> Iterator[str]:
    """Start the server, wait for ``/healthz``, yield its base URL, and always stop it.

    ``env`` is added to this process's environment (without its ``SLIDESERVER_*`` variables when
    ``scrub_env``); the server's output goes to ``log`` when given (else to a pipe read on failure);
    ``cwd`` and ``start_new_session`` go to :class:`subprocess.Popen`. With ``tls_ca`` (the
    certificate the server was given with ``--ssl-certfile``) the server is reached over HTTPS.
    """
    port = free_port()
    cmd = [sys.executable, "-m", "slideserver", "serve", *map(str, roots)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), *extra]
    full_env = {**(scrubbed_environ() if scrub_env else os.environ), **(env or {})}
    with ExitStack() as files:
        out = files.enter_context(log.open("wb")) if log is not None else subprocess.PIPE
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=start_new_session,
        )

    def output() -> str:
        if log is not None:
            return log.read_text(errors="replace")
        return proc.stdout.read().decode(errors="replace") if proc.stdout else ""

    base = f"{'https' if tls_ca else 'http'}://127.0.0.1:{port}"
    verify: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=str(tls_ca)) if tls_ca is not None else True
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{output()[-4000:]}")
            try:
                if httpx.get(f"{base}/healthz", timeout=2, verify=verify).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                tail = output()[-4000:] if log is not None else ""
                raise TimeoutError(f"server did not answer /healthz within {timeout} s\n{tail}")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
