"""The in-process tile cache and single flight."""

from __future__ import annotations

import asyncio

import pytest

from slideserver.cache.memory import MemoryCache
from slideserver.services.single_flight import SingleFlight


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


def test_single_flight_computes_once_for_concurrent_callers() -> None:
    calls = 0

    async def compute() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return 42

    async def main() -> list[int]:
        flights = SingleFlight()
        return await asyncio.gather(*(flights.run("k", compute) for _ in range(10)))

    assert asyncio.run(main()) == [42] * 10
    assert calls == 1


def test_single_flight_shares_a_failure_and_then_retries() -> None:
    calls = 0

    async def compute() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise ValueError("boom")

    async def main() -> list[int | BaseException]:
        flights = SingleFlight()
        first = await asyncio.gather(
            *(flights.run("k", compute) for _ in range(3)), return_exceptions=True
        )
        with pytest.raises(ValueError):
            await flights.run("k", compute)
        return first

    results = asyncio.run(main())
    assert all(isinstance(r, ValueError) for r in results)
    assert calls == 2
