"""The cache interface the tile service uses, and the counters it reports for /metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters of a cache's in-process tier (zeros for a cache without one)."""

    memory_bytes: int = 0
    memory_hits: int = 0
    memory_misses: int = 0


class TileCache(Protocol):
    """Bytes by key, in tiers. Implementations never raise for a backend fault: a miss is reported.

    Every cache has an in-process tier (possibly empty: a Redis-only cache keeps nothing
    locally) and may have a shared one. The ``*_local_sync`` methods reach the in-process tier
    only and never wait: the service answers from them on the event loop, and keeps there what
    is cheaper to make again than to fetch over the network (stored tiles sent as they are).
    """

    def get_local_sync(self, key: str) -> bytes | None:
        """Return the value from the in-process tier, or ``None``; never waits."""

    def set_local_sync(self, key: str, value: bytes) -> None:
        """Store ``value`` in the in-process tier only (it never reaches a shared tier)."""

    async def get(self, key: str) -> bytes | None:
        """Return the value from the first tier that has it, or ``None``."""

    async def get_remote(self, key: str) -> bytes | None:
        """Ask only the shared tier (the caller already missed the in-process one).

        A hit is copied into the in-process tier. ``None`` when there is no shared tier.
        """

    async def set(self, key: str, value: bytes) -> None:
        """Store ``value`` in every tier; may silently drop it."""

    async def healthy(self) -> bool:
        """Tell whether every tier is reachable."""

    def stats(self) -> CacheStats:
        """Return the counters /metrics reports."""

    async def close(self) -> None:
        """Release connections."""
