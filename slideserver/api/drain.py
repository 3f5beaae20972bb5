"""Draining on SIGTERM: say "not ready" while still serving, then let uvicorn stop.

uvicorn's own SIGTERM handling stops accepting connections within a tenth of a second, lets the
requests in flight finish, then runs the lifespan shutdown; a load balancer polling ``/readyz``
would learn of the stop only from refused connections. With ``drain_seconds`` > 0, :class:`Drain`
wraps the SIGTERM handler uvicorn installed (before the lifespan starts): the signal first marks
the process as draining, so ``/readyz`` answers 503 ``draining`` while every other route keeps
answering, and reaches uvicorn ``drain_seconds`` later. A second SIGTERM stops at once. uvicorn
has no public hook for this; wrapping the installed handler uses only :mod:`signal`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[int, FrameType | None], Any]


class Drain:
    """Whether this process is draining, and the SIGTERM hook that starts the drain."""

    def __init__(self) -> None:
        self.draining = False

    def install(self, seconds: float) -> Callable[[], None]:
        """Wrap the current SIGTERM handler; return the function that puts it back.

        Does nothing (and returns a no-op) without a drain period, off the main thread (an app
        under a test client) or when no Python handler is installed (not under uvicorn).
        """
        previous = signal.getsignal(signal.SIGTERM)
        if seconds <= 0 or threading.current_thread() is not threading.main_thread():
            return lambda: None
        if not callable(previous):
            return lambda: None
        loop = asyncio.get_running_loop()
        handler: Handler = previous

        def on_sigterm(sig: int, frame: FrameType | None) -> None:
            if self.draining:  # asked twice: stop now
                handler(sig, frame)
                return
            self.draining = True
            log.info("SIGTERM: draining for %.1fs (/readyz answers 503), then stopping", seconds)
            loop.call_soon_threadsafe(loop.call_later, seconds, handler, sig, None)

        signal.signal(signal.SIGTERM, on_sigterm)

        def uninstall() -> None:
            if signal.getsignal(signal.SIGTERM) is on_sigterm:
                signal.signal(signal.SIGTERM, previous)

        return uninstall
