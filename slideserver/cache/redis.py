"""The shared tier: Redis, reached with redis-py's asyncio client (hiredis parser).

Redis is an accelerator, never a dependency: every operation is bounded by ``timeout``, a fault
is counted and turns into a miss, and after a fault the cache stops asking Redis for a backoff
period (doubling up to ``backoff_max``) so a dead or hung server costs one probe per period, not
one timeout per request. When a probe succeeds the cache is back; redis-py reopens its
connections by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from slideserver.cache.base import CacheStats

log = logging.getLogger(__name__)

FAULTS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
"""What a broken, refused, hung or misconfigured Redis raises through redis-py."""


class RedisCache:
    """Bytes by key in Redis with a TTL; faults become misses and trigger a backoff."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.25,
        ttl: int = 7 * 24 * 3600,
        prefix: str = "slideserver:",
        max_pending_writes: int = 256,
        backoff_min: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.ttl = ttl
        self.prefix = prefix
        self.max_pending_writes = max_pending_writes
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        # No retries inside redis-py: our own backoff decides when to try again, and a retry
        # would multiply the time a request waits on a dead server.
        self._client: Redis = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            health_check_interval=0,
        )
        self._up = True
        self._consecutive_faults = 0
        self._retry_at = 0.0
        self._probing = False
        self._pending: set[asyncio.Task[None]] = set()
        self.hits = 0
        self.misses = 0
        self.faults = 0
        self.skipped = 0
        self.dropped_writes = 0

    # -- state ---------------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        """Whether the last operation reached Redis."""
        return self._up

    def _may_try(self) -> bool:
        """Tell whether to ask Redis now; while down, let one probe through per backoff period."""
        if self._up:
            return True
        if self._probing or time.monotonic() < self._retry_at:
            self.skipped += 1
            return False
        self._probing = True
        return True

    def _succeeded(self) -> None:
        if not self._up:
            log.warning("redis cache reachable again at %s", self._safe_url())
        self._up = True
        self._probing = False
        self._consecutive_faults = 0

    def _failed(self, exc: BaseException) -> None:
        self.faults += 1
        self._consecutive_faults += 1
        delay = min(self.backoff_max, self.backoff_min * 2 ** (self._consecutive_faults - 1))
        self._retry_at = time.monotonic() + delay
        if self._up:
            log.warning(
                "redis cache unreachable (%s); serving without it, retrying in %.1fs",
                type(exc).__name__,
                delay,
            )
        self._up = False
        self._probing = False

    def _safe_url(self) -> str:
        """The URL without credentials, for logs."""
        head, _, tail = self.url.rpartition("@")
        return f"redis://...@{tail}" if head else self.url

    # -- operations ----------------------------------------------------------------------------

    def get_local_sync(self, key: str) -> bytes | None:
        """No in-process tier: always a miss (used alone, Redis is the only tier)."""
        return None

    def set_local_sync(self, key: str, value: bytes) -> None:
        """No in-process tier: what is meant to stay local is dropped, never sent to Redis."""

    async def get_remote(self, key: str) -> bytes | None:
        """Redis is the shared tier: the same as :meth:`get`."""
        return await self.get(key)

    def stats(self) -> CacheStats:
        """No in-process tier to count."""
        return CacheStats()

    async def get(self, key: str) -> bytes | None:
        """Return the value, or ``None`` on a miss, a fault or while backing off."""
        if not self._may_try():
            return None
        try:
            async with asyncio.timeout(self.timeout):
                value = await self._client.get(self.prefix + key)
        except FAULTS as exc:
            self._failed(exc)
            return None
        finally:
            self._probing = False
        self._succeeded()
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        # decode_responses is off, so redis-py hands back bytes.
        return value if isinstance(value, bytes) else value.encode()

    async def set(self, key: str, value: bytes) -> None:
        """Store ``value`` in the background: a request never waits for the write."""
        if len(self._pending) >= self.max_pending_writes or not self._may_try():
            self.dropped_writes += 1
            return
        task = asyncio.get_running_loop().create_task(self._write(key, value))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write(self, key: str, value: bytes) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self._client.set(self.prefix + key, value, ex=self.ttl)
        except FAULTS as exc:
            self._failed(exc)
        else:
            self._succeeded()
        finally:
            self._probing = False

    async def flush_writes(self) -> None:
        """Wait for the background writes started so far (tests, shutdown)."""
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def healthy(self) -> bool:
        """Ping Redis (bounded), unless backing off after a fault."""
        if not self._may_try():
            return False
        try:
            async with asyncio.timeout(self.timeout):
                await self._client.ping()
        except FAULTS as exc:
            self._failed(exc)
            return False
        finally:
            self._probing = False
        self._succeeded()
        return True

    async def close(self) -> None:
        """Finish pending writes (bounded), then close the connections."""
        try:
            async with asyncio.timeout(max(self.timeout, 1.0)):
                await self.flush_writes()
        except TimeoutError:
            for task in self._pending:
                task.cancel()
        with contextlib.suppress(*FAULTS):
            await self._client.aclose()
