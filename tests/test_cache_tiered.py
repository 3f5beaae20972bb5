"""The two tiers together: memory first, Redis second, Redis faults are misses."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from slideserver.api.app import build_cache
from slideserver.cache.memory import MemoryCache
from slideserver.cache.redis import RedisCache
from slideserver.cache.tiered import TieredCache
from slideserver.settings import Settings
from tests.redis_server import RedisServer, free_port


def dead_redis() -> RedisCache:
    """A Redis tier nothing listens behind."""
    return RedisCache(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)


def test_build_cache_is_memory_only_without_a_url() -> None:
    assert isinstance(build_cache(Settings()), MemoryCache)
    tiered = build_cache(Settings(redis_url="redis://127.0.0.1:1/0", memory_cache_bytes=1000))
    assert isinstance(tiered, TieredCache)
    assert tiered.local.max_bytes == 1000
    asyncio.run(tiered.close())


def test_a_local_hit_never_asks_redis() -> None:
    async def scenario() -> tuple[bytes | None, int]:
        cache = TieredCache(MemoryCache(1 << 20), dead_redis())
        cache.local.set_sync("k", b"v")
        value = await cache.get("k")
        faults = cache.remote.faults
        await cache.close()
        return value, faults

    assert asyncio.run(scenario()) == (b"v", 0)


def test_a_dead_redis_is_a_miss_and_the_local_tier_still_works() -> None:
    async def scenario() -> tuple[bytes | None, bytes | None, bool, int]:
        cache = TieredCache(MemoryCache(1 << 20), dead_redis())
        missing = await cache.get("a")
        await cache.set("a", b"tile")
        await cache.remote.flush_writes()
        found = await cache.get("a")
        healthy = await cache.healthy()
        faults = cache.remote.faults
        await cache.close()
        return missing, found, healthy, faults

    missing, found, healthy, faults = asyncio.run(scenario())
    assert missing is None
    assert found == b"tile"
    assert healthy is False
    assert faults >= 1


def test_while_backing_off_redis_is_not_asked() -> None:
    async def scenario() -> tuple[int, int]:
        remote = dead_redis()
        remote.backoff_min = 60.0
        cache = TieredCache(MemoryCache(1 << 20), remote)
        for _ in range(20):
            await cache.get("x")
        faults, skipped = remote.faults, remote.skipped
        await cache.close()
        return faults, skipped

    faults, skipped = asyncio.run(scenario())
    assert faults == 1
    assert skipped == 19


@pytest.mark.redis
def test_a_redis_hit_fills_the_local_tier(redis_server: RedisServer, tmp_path: Path) -> None:
    async def scenario() -> tuple[bytes | None, bytes | None]:
        writer = TieredCache(MemoryCache(1 << 20), RedisCache(redis_server.url))
        await writer.set("shared", b"bytes")
        await writer.remote.flush_writes()
        await writer.close()
        reader = TieredCache(MemoryCache(1 << 20), RedisCache(redis_server.url))
        value = await reader.get("shared")
        local = reader.local.get_sync("shared")
        await reader.close()
        return value, local

    assert asyncio.run(scenario()) == (b"bytes", b"bytes")
