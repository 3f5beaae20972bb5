"""An in-process LRU of encoded tiles, bounded in bytes."""

from __future__ import annotations

import threading
from collections import OrderedDict

from slideserver.cache.base import CacheStats


class MemoryCache:
    """Thread-safe LRU; evicts least recently used entries once ``max_bytes`` is exceeded."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def get_sync(self, key: str) -> bytes | None:
        """Return the value and mark it recently used."""
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def set_sync(self, key: str, value: bytes) -> None:
        """Store ``value`` unless it alone exceeds the budget."""
        size = len(value)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            self._items[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= len(evicted)

    # The whole cache is the in-process tier: the protocol's local methods are the sync ones.
    get_local_sync = get_sync
    set_local_sync = set_sync

    async def get(self, key: str) -> bytes | None:
        return self.get_sync(key)

    async def get_remote(self, key: str) -> bytes | None:
        """No shared tier: always a miss."""
        return None

    async def set(self, key: str, value: bytes) -> None:
        self.set_sync(key, value)

    async def healthy(self) -> bool:
        return True

    def stats(self) -> CacheStats:
        return CacheStats(
            memory_bytes=self._bytes,
            memory_hits=self.hits,
            memory_misses=self.misses,
        )

    async def close(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)
