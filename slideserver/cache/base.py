"""The cache interface the tile service uses."""

from __future__ import annotations

from typing import Protocol


class TileCache(Protocol):
    """Bytes by key. Implementations never raise for a backend fault: a miss is reported."""

    async def get(self, key: str) -> bytes | None:
        """Return the cached value or ``None``."""

    async def set(self, key: str, value: bytes) -> None:
        """Store ``value``; may silently drop it."""

    async def healthy(self) -> bool:
        """Tell whether every tier is reachable."""

    async def close(self) -> None:
        """Release connections."""
