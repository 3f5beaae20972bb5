"""The in-process tile cache: a byte-budgeted LRU."""

from __future__ import annotations

from slideserver.cache.memory import MemoryCache


def test_memory_cache_returns_what_was_stored() -> None:
    cache = MemoryCache(1000)
    cache.set_sync("a", b"123")
    assert cache.get_sync("a") == b"123"
    assert cache.get_sync("b") is None


def test_memory_cache_evicts_least_recently_used_beyond_its_byte_budget() -> None:
    cache = MemoryCache(10)
    cache.set_sync("a", b"xxxx")
    cache.set_sync("b", b"yyyy")
    cache.get_sync("a")
    cache.set_sync("c", b"zzzz")
    assert cache.get_sync("b") is None
    assert cache.get_sync("a") == b"xxxx"
    assert cache.size_bytes <= 10


def test_memory_cache_skips_values_larger_than_the_budget() -> None:
    cache = MemoryCache(4)
    cache.set_sync("a", b"12345")
    assert len(cache) == 0
