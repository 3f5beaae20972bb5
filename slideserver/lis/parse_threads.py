"""LIS messages are parsed in worker threads, a few at a time.

Parsing a large HL7 v2 message or FHIR Bundle is pure Python work; on the event loop it would
stall every tile request meanwhile. In worker threads behind their own small limiter, big or many
messages can neither hold the loop nor take the threads other work runs in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, TypeVarTuple, Unpack

from anyio import CapacityLimiter
from anyio.lowlevel import RunVar
from anyio.to_thread import run_sync

PARSE_THREADS = 2
"""Messages parsed at once (per event loop)."""

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_limiter: RunVar[CapacityLimiter] = RunVar("slideserver_lis_parse_limiter")


def parse_limiter() -> CapacityLimiter:
    """The running event loop's parse limiter (made on first use, like anyio's own default)."""
    try:
        return _limiter.get()
    except LookupError:
        limiter = CapacityLimiter(PARSE_THREADS)
        _limiter.set(limiter)
        return limiter


async def run_parse(func: Callable[[Unpack[Ts]], T], *args: *Ts) -> T:
    """Run ``func(*args)`` in a worker thread, at most :data:`PARSE_THREADS` at a time."""
    return await run_sync(func, *args, limiter=parse_limiter())


__all__ = ["PARSE_THREADS", "parse_limiter", "run_parse"]
