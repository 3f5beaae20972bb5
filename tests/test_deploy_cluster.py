"""Losing an instance costs nothing: nginx retries idempotent requests on the other one.

The layout of ``make cluster`` for real (PostgreSQL, Redis, two instances, nginx with
deploy/nginx.conf), on loopback. A client thread sends a steady, bounded stream of tile requests
through nginx while instances are killed with SIGKILL and restarted; it must see no failure.
"""

from __future__ import annotations

import glob
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deploy.cluster import NGINX_CONF, Cluster

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

MAX_REQUESTS = 5000
"""The client's bound: it stops after this many requests whatever happens."""
PAUSE = 0.02
"""Seconds between two requests: a steady viewer's pace, not a flood."""
DEADLINE = 120.0
FAIL_TIMEOUT = max(float(s) for s in re.findall(r"fail_timeout=(\d+)s", NGINX_CONF.read_text()))
"""Seconds nginx keeps a failed instance out of rotation: a rolling restart waits that long."""


class TileLoad:
    """A thread requesting the tiles of one slide in a loop through nginx, recording failures."""

    def __init__(self, base: str, urls: list[str]) -> None:
        self.base = base
        self.urls = urls
        self.sent = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as client:
            while not self._stop.is_set() and self.sent < MAX_REQUESTS:
                url = self.urls[self.sent % len(self.urls)]
                self.sent += 1
                try:
                    answer = client.get(url)
                    if answer.status_code != 200:
                        self.failures.append(f"{url}: {answer.status_code} {answer.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failures.append(f"{url}: {type(exc).__name__}")
                self._stop.wait(PAUSE)

    def __enter__(self) -> TileLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=DEADLINE)

    def wait_for_more(self, count: int) -> None:
        """Wait until ``count`` more requests were sent (bounded)."""
        target = self.sent + count
        deadline = time.monotonic() + DEADLINE
        while self.sent < target:
            assert self._thread.is_alive(), "the client stopped early"
            assert time.monotonic() < deadline, "the client made no progress"
            time.sleep(0.02)


@pytest.fixture(scope="module")
def cluster(samples_root: Path) -> Iterator[Cluster]:
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        pytest.skip("PostgreSQL is not installed (`make system-deps`)")
    nginx = shutil.which("nginx") or Path("/usr/sbin/nginx").exists()
    if shutil.which("redis-server") is None or not nginx:
        pytest.skip("redis-server and nginx are needed (`make system-deps`)")
    running = Cluster([samples_root])
    running.start()
    try:
        yield running
    finally:
        running.stop()


def tile_urls(base: str) -> list[str]:
    """Tile URLs of the first slide, every tile of its lowest few Deep Zoom levels."""
    slide = httpx.get(f"{base}/api/slides", timeout=30).json()["items"][0]["id"]
    urls = []
    for level in range(0, 13):
        side = 1 << level
        for col in range(min(side, 4)):
            for row in range(min(side, 4)):
                urls.append(f"/dz/{slide}_files/{level}/{col}_{row}.jpeg")
    # Keep the tiles that exist (small levels have fewer than 4 x 4).
    return [u for u in urls if httpx.get(f"{base}{u}", timeout=30).status_code == 200]


def test_killing_either_instance_loses_no_request(cluster: Cluster) -> None:
    urls = tile_urls(cluster.url)
    assert len(urls) >= 9
    with TileLoad(cluster.url, urls) as load:
        load.wait_for_more(50)
        cluster.kill_instance(0)
        load.wait_for_more(150)
        cluster.start_instance(0)
        # Back in nginx's rotation once its failure mark expires, as in a rolling restart.
        time.sleep(FAIL_TIMEOUT + 1)
        load.wait_for_more(50)
        cluster.kill_instance(1)
        load.wait_for_more(150)
        cluster.start_instance(1)
        load.wait_for_more(50)
    assert load.failures == []
    assert load.sent >= 450
