"""Single flight: concurrent callers of one key share one computation and its outcome."""

from __future__ import annotations

import asyncio

import pytest

from slideserver.services.single_flight import SingleFlight


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
