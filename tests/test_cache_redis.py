"""The Redis tier against a real redis-server: hits, invalidation, crashes and reconnection."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from slideserver.api.app import create_app
from slideserver.cache.redis import RedisCache
from slideserver.settings import Settings
from tests.helpers import slide_id
from tests.redis_server import RedisServer, free_port

pytestmark = pytest.mark.redis

RENDERED = "12/1_1.jpeg"
"""A tile of the SVS sample's Deep Zoom level 12, which has no stored copy: rendered, cached."""
PASSTHROUGH = "13/3_2.jpeg"
"""A full-resolution tile: the stored JPEG, never written to Redis."""


def wait_until(condition: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    """Poll ``condition`` until it holds; fail (not time) the test if it never does."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.05)


@pytest.fixture
def svs_root(tmp_path: Path, samples_dir: dict[str, Path]) -> Path:
    """A folder of its own holding a copy of the SVS sample (tests replace it)."""
    svs = next(path for path in samples_dir.values() if path.suffix == ".svs")
    root = tmp_path / "slides"
    root.mkdir()
    shutil.copy2(svs, root / svs.name)
    return root


def make_client(root: Path, redis_url: str) -> TestClient:
    settings = Settings(roots=(root,), redis_url=redis_url, redis_timeout=0.5, fingerprint_ttl=0)
    return TestClient(create_app(settings), raise_server_exceptions=False)


def only_slide(client: TestClient) -> str:
    items = client.get("/api/slides").json()["items"]
    assert len(items) == 1, items
    return slide_id(client, items[0]["name"])


def tile_keys(server: RedisServer) -> list[bytes]:
    with redis.Redis.from_url(server.url) as r:
        return sorted(r.scan_iter("slideserver:dz:*"))


def test_get_set_ttl_and_miss(redis_server: RedisServer) -> None:
    async def scenario() -> tuple[bytes | None, bytes | None]:
        cache = RedisCache(redis_server.url, ttl=60)
        try:
            missing = await cache.get("nope")
            await cache.set("k", b"\xff\xd8bytes")
            await cache.flush_writes()
            return missing, await cache.get("k")
        finally:
            await cache.close()

    missing, found = asyncio.run(scenario())
    assert missing is None
    assert found == b"\xff\xd8bytes"
    with redis.Redis.from_url(redis_server.url) as r:
        assert 0 < r.ttl("slideserver:k") <= 60


def test_rendered_tiles_are_shared_and_passthrough_stays_local(
    redis_server: RedisServer, svs_root: Path
) -> None:
    with make_client(svs_root, redis_server.url) as first:
        sid = only_slide(first)
        rendered = first.get(f"/dz/{sid}_files/{RENDERED}")
        assert rendered.status_code == 200
        assert rendered.headers["x-tile-source"] == "render"
        passthrough = first.get(f"/dz/{sid}_files/{PASSTHROUGH}")
        assert passthrough.headers["x-tile-source"] == "passthrough"
        wait_until(lambda: len(tile_keys(redis_server)) == 1, "the rendered tile reached Redis")
        again = first.get(f"/dz/{sid}_files/{PASSTHROUGH}")
        assert again.headers["x-tile-source"] == "cache"  # the local tier
    # Another process (empty memory tier) gets the rendered tile from Redis.
    with make_client(svs_root, redis_server.url) as second:
        shared = second.get(f"/dz/{sid}_files/{RENDERED}")
        assert shared.status_code == 200
        assert shared.headers["x-tile-source"] == "cache"
        assert shared.content == rendered.content
        assert shared.headers["etag"] == rendered.headers["etag"]
        assert second.get(f"/dz/{sid}_files/{PASSTHROUGH}").headers["x-tile-source"] == (
            "passthrough"
        )
        assert second.get("/readyz").json()["checks"]["cache"] == "ok"
    assert len(tile_keys(redis_server)) == 1


def test_a_replaced_file_gets_new_keys(redis_server: RedisServer, svs_root: Path) -> None:
    path = next(svs_root.iterdir())
    with make_client(svs_root, redis_server.url) as client:
        sid = only_slide(client)
        before = client.get(f"/dz/{sid}_files/{RENDERED}")
        assert before.headers["x-tile-source"] == "render"
        wait_until(lambda: len(tile_keys(redis_server)) == 1, "the first tile reached Redis")
        # Replace the file under the same name (new inode and mtime: a new fingerprint).
        replacement = svs_root / "incoming.tmp"
        shutil.copy2(path, replacement)
        stat = path.stat()
        os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        replacement.replace(path)
        after = client.get(f"/dz/{sid}_files/{RENDERED}")
        assert after.status_code == 200
        assert after.headers["x-tile-source"] == "render"
        assert after.headers["etag"] != before.headers["etag"]
        wait_until(lambda: len(tile_keys(redis_server)) == 2, "the new tile reached Redis")
        # A client holding the old ETag gets the new bytes, not a 304.
        revalidated = client.get(
            f"/dz/{sid}_files/{RENDERED}", headers={"If-None-Match": before.headers["etag"]}
        )
        assert revalidated.status_code == 200


def test_redis_killed_mid_run_then_back(redis_server: RedisServer, svs_root: Path) -> None:
    with make_client(svs_root, redis_server.url) as client:
        sid = only_slide(client)
        assert client.get(f"/dz/{sid}_files/{RENDERED}").status_code == 200
        assert client.get("/readyz").json() == {
            "status": "ok",
            "checks": {"catalog": "ok", "cache": "ok"},
        }
        redis_server.kill()
        # Tiles keep coming: from the local tier, from the file, and freshly rendered.
        for url in (RENDERED, PASSTHROUGH, "12/2_1.jpeg", "11/0_0.jpeg", "12/0_0.png"):
            response = client.get(f"/dz/{sid}_files/{url}")
            assert response.status_code == 200, (url, response.text[:200])
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["status"] == "degraded"
        assert ready.json()["checks"]["cache"] == "degraded"
        redis_server.start()
        wait_until(lambda: client.get("/readyz").json()["status"] == "ok", "the cache reconnected")
        # Written to Redis again once reconnected.
        assert client.get(f"/dz/{sid}_files/12/3_1.jpeg").status_code == 200
        wait_until(lambda: len(tile_keys(redis_server)) >= 1, "a tile reached the new Redis")


def test_redis_down_at_start(tmp_path: Path, svs_root: Path) -> None:
    server = RedisServer(tmp_path / "late-redis", port=free_port())
    try:
        with make_client(svs_root, server.url) as client:
            sid = only_slide(client)
            for url in (RENDERED, PASSTHROUGH, RENDERED):
                assert client.get(f"/dz/{sid}_files/{url}").status_code == 200
            assert client.get("/readyz").json()["checks"]["cache"] == "degraded"
            server.start()
            wait_until(
                lambda: client.get("/readyz").json()["checks"]["cache"] == "ok",
                "the cache connected once Redis came up",
            )
            assert client.get(f"/dz/{sid}_files/12/2_2.jpeg").status_code == 200
            wait_until(lambda: len(tile_keys(server)) >= 1, "a tile reached Redis")
    finally:
        server.stop()


def test_a_hung_redis_costs_a_bounded_wait(redis_server: RedisServer) -> None:
    """A stopped (SIGSTOP) server neither answers nor refuses: the timeout turns it into a miss."""
    assert redis_server.process is not None
    process = redis_server.process

    async def scenario(cache: RedisCache) -> tuple[bytes | None, bool, bool]:
        value = await cache.get("any")
        healthy = await cache.healthy()
        return value, healthy, cache.up

    cache_holder: list[Any] = []

    async def run() -> tuple[bytes | None, bool, bool]:
        cache = RedisCache(redis_server.url, timeout=0.2)
        cache_holder.append(cache)
        await cache.healthy()  # connect while the server still answers
        process.send_signal(signal.SIGSTOP)
        try:
            return await scenario(cache)
        finally:
            process.send_signal(signal.SIGCONT)
            await cache.close()

    value, healthy, up = asyncio.run(run())
    assert value is None
    assert healthy is False
    assert up is False
    assert cache_holder[0].faults >= 1
