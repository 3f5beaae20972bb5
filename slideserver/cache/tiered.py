"""Two tiers: the in-process LRU first, then Redis shared by every process and machine.

A Redis hit is copied into the local tier, so a tile popular on this process costs a dict lookup
the next time. What goes to Redis at all is the service's decision (``set_local_sync``): a stored
tile sent as it is can be cheaper to read again than to fetch over the network.
"""

from __future__ import annotations

from slideserver.cache.base import CacheStats
from slideserver.cache.memory import MemoryCache
from slideserver.cache.redis import RedisCache


class TieredCache:
    """Memory LRU in front of Redis; Redis faults are misses, never errors."""

    def __init__(self, local: MemoryCache, remote: RedisCache) -> None:
        self.local = local
        self.remote = remote

    def get_local_sync(self, key: str) -> bytes | None:
        """Return the value from the in-process tier only."""
        return self.local.get_sync(key)

    def set_local_sync(self, key: str, value: bytes) -> None:
        """Store in the in-process tier only."""
        self.local.set_sync(key, value)

    async def get(self, key: str) -> bytes | None:
        """Return the value from the first tier that has it."""
        value = self.local.get_sync(key)
        if value is not None:
            return value
        return await self.get_remote(key)

    async def get_remote(self, key: str) -> bytes | None:
        """Ask Redis only; copy a hit into the local tier."""
        value = await self.remote.get(key)
        if value is not None:
            self.local.set_sync(key, value)
        return value

    async def set(self, key: str, value: bytes) -> None:
        """Store in both tiers (the Redis write runs in the background)."""
        self.local.set_sync(key, value)
        await self.remote.set(key, value)

    async def healthy(self) -> bool:
        """Tell whether Redis is reachable (the local tier always is)."""
        return await self.remote.healthy()

    def stats(self) -> CacheStats:
        """The local tier's counters."""
        return self.local.stats()

    async def close(self) -> None:
        """Flush and close Redis, then drop the local tier."""
        await self.remote.close()
        await self.local.close()
