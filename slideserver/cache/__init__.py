"""Tile caches: an in-process LRU, optionally backed by Redis shared by every process."""

from slideserver.cache.base import CacheStats, TileCache
from slideserver.cache.memory import MemoryCache

__all__ = ["CacheStats", "MemoryCache", "TileCache"]
