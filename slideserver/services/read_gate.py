"""Slide reads in worker threads, each with a deadline and a per-slide share of the pool.

Python cannot stop a thread blocked in a read of a hung network mount. So a read that misses
its deadline is abandoned: the request answers :class:`~slideserver.errors.SlideStorageTimeout`
at once, its pool slot goes back to the other slides, and the thread keeps the slide's own slot
until the read returns. One slide therefore holds at most ``per_slide`` threads, hung or not;
its further reads wait for a slot (within their deadline) and never reach the shared pool.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

import anyio
from anyio import CapacityLimiter, from_thread
from anyio.lowlevel import current_token
from anyio.to_thread import run_sync

from slideserver.errors import SlideStorageTimeout

T = TypeVar("T")


class _Read:
    """Who gives the slide's slot back: the request (read done or never started) or the thread."""

    __slots__ = ("abandoned", "finished", "lock", "started")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = False
        self.finished = False
        self.abandoned = False


class ReadGate:
    """Run slide reads with a deadline, at most ``per_slide`` threads per slide."""

    def __init__(self, timeout: float, per_slide: int) -> None:
        self.timeout = timeout
        self.per_slide = max(1, per_slide)
        self._slots: dict[str, CapacityLimiter] = {}  # touched on the event loop only

    def held(self, key: str) -> int:
        """How many threads reads of ``key`` hold now (hung ones included)."""
        slots = self._slots.get(key)
        return 0 if slots is None else int(slots.borrowed_tokens)

    async def run(
        self, key: str, func: Callable[[], T], pool: CapacityLimiter, timeout: float | None = None
    ) -> T:
        """Run ``func`` in a thread of ``pool`` under ``key``'s slots, within the deadline
        (``timeout``, default :attr:`timeout`)."""
        timeout = self.timeout if timeout is None else timeout
        slots = self._slots.get(key)
        if slots is None:
            slots = self._slots[key] = CapacityLimiter(self.per_slide)
        read = _Read()
        token = current_token()

        def hand_back() -> None:
            self._release(key, slots, read)

        def guarded() -> T:
            with read.lock:
                if read.abandoned:  # the request gave up before this thread started
                    raise SlideStorageTimeout("abandoned")
                read.started = True
            try:
                return func()
            finally:
                with read.lock:
                    read.finished = True
                    late = read.abandoned
                if late:  # the request answered 504 long ago: give the slot back now
                    with contextlib.suppress(RuntimeError):  # the event loop has ended
                        from_thread.run_sync(hand_back, token=token)

        acquired = False
        try:
            with anyio.move_on_after(timeout) as deadline:
                await slots.acquire_on_behalf_of(read)
                acquired = True
                return await run_sync(guarded, limiter=pool, abandon_on_cancel=True)
        finally:
            if acquired:
                with read.lock:
                    read.abandoned = True
                    running = read.started and not read.finished
                if not running:
                    self._release(key, slots, read)
        if deadline.cancelled_caught:
            raise SlideStorageTimeout(
                f"slide {key!r} did not answer within {timeout:g}s; its storage may be hanging"
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def _release(self, key: str, slots: CapacityLimiter, read: _Read) -> None:
        slots.release_on_behalf_of(read)
        idle = slots.borrowed_tokens == 0 and slots.statistics().tasks_waiting == 0
        if idle and self._slots.get(key) is slots:
            del self._slots[key]
