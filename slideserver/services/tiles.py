"""Cache -> handles -> tiling -> render: what the routes call. No HTTP types here."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, TypeVar

import anyio
from anyio.to_thread import run_sync

from slideserver.cache.base import TileCache
from slideserver.cache.memory import MemoryCache
from slideserver.cache.redis import RedisCache
from slideserver.cache.tiered import TieredCache
from slideserver.catalog.base import Catalog, SlideRecord
from slideserver.errors import (
    AssociatedImageNotFound,
    BadRequest,
    SlideNotFound,
    SlideUnreadable,
)
from slideserver.handles import HandlePool
from slideserver.imaging.encode import MEDIA_TYPES, encode_image, normalize_format
from slideserver.imaging.regions import read_scaled_array, read_scaled_region
from slideserver.models import SlideInfo
from slideserver.readers.base import SlideReader, WouldBlock
from slideserver.settings import Settings
from slideserver.tiling.deepzoom import DeepZoomGrid

T = TypeVar("T")


class ImageResult(NamedTuple):
    """Encoded image bytes with what HTTP caching needs (a tuple: made for every tile)."""

    data: bytes
    media_type: str
    etag: str
    source: str = "render"
    """``passthrough``, ``cache`` or ``render``: for metrics and tests."""


class SingleFlight:
    """Concurrent callers of one key share one computation."""

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Future[Any]] = {}

    async def run(self, key: str, compute: Callable[[], Awaitable[T]]) -> T:
        running = self._running.get(key)
        if running is not None:
            return await asyncio.shield(running)  # type: ignore[no-any-return]
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            result = await compute()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._running[key]


def _as_memory(cache: TileCache) -> MemoryCache:
    if not isinstance(cache, MemoryCache):
        raise TypeError(f"the tile cache must be a MemoryCache or a TieredCache, not {cache!r}")
    return cache


def etag_for(key: str) -> str:
    """Return a strong ETag derived from a cache key."""
    return '"' + hashlib.blake2b(key.encode(), digest_size=12).hexdigest() + '"'


class SlideService:
    """Everything about slides, from catalog lookups to encoded tiles."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        handles: HandlePool,
        cache: TileCache,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.handles = handles
        self.cache = cache
        # Stored tiles sent as they are only ever go to the in-process tier (see deepzoom_tile).
        self.local_cache: MemoryCache = (
            cache.local if isinstance(cache, TieredCache) else _as_memory(cache)
        )
        self.remote_cache: RedisCache | None = (
            cache.remote if isinstance(cache, TieredCache) else None
        )
        self._checked: dict[str, tuple[float, SlideRecord, str]] = {}
        self.limiter = anyio.CapacityLimiter(settings.thread_count)
        self.io_limiter = anyio.CapacityLimiter(max(1, settings.io_threads))
        self.flights = SingleFlight()
        self._grids: dict[tuple[str, str], tuple[DeepZoomGrid, SlideInfo]] = {}

    # -- lookups -------------------------------------------------------------------------------

    def record(self, slide_id: str) -> SlideRecord:
        """Return the catalog record, or raise a 404 for an unknown or malformed ID."""
        if not slide_id or len(slide_id) > 64 or not slide_id.replace("-", "").isalnum():
            raise SlideNotFound(f"no slide with id {slide_id[:64]!r}")
        record = self.catalog.get(slide_id)
        if record is None:
            raise SlideNotFound(f"no slide with id {slide_id!r}")
        if record.status == "unreadable":
            raise SlideUnreadable(f"slide {slide_id!r} cannot be read: {record.error}")
        return record

    async def _in_thread(self, func: Callable[[], T], *, io: bool = False) -> T:
        return await run_sync(func, limiter=self.io_limiter if io else self.limiter)

    async def _with_reader(
        self,
        record: SlideRecord,
        fingerprint: str,
        func: Callable[[SlideReader], T],
        *,
        io: bool = False,
    ) -> T:
        """Run ``func`` with the slide's reader in a worker thread (``io``: from the I/O pool)."""

        def call() -> T:
            with self.handles.borrow(record.id, record.source, fingerprint) as reader:
                return func(reader)

        return await self._in_thread(call, io=io)

    async def fingerprint(self, record: SlideRecord) -> str:
        """Return the current on-disk fingerprint (raises SlideGone when the file went away)."""
        return await self._in_thread(lambda: self.handles.fingerprint(record.id, record.source))

    def _fresh_check(self, slide_id: str) -> tuple[SlideRecord, str] | None:
        """The record and fingerprint of the last check, while ``fingerprint_ttl`` trusts it."""
        known = self._checked.get(slide_id)
        if known is None or time.monotonic() - known[0] >= self.settings.fingerprint_ttl:
            return None
        return known[1], known[2]

    async def checked(self, slide_id: str) -> tuple[SlideRecord, str]:
        """Return the catalog record and on-disk fingerprint, looked up at most once a recheck.

        A catalog query and a stat cost a thread hop (the catalog may be SQL, the disk may be
        remote): per request, that is as much as sending a stored tile. So both are trusted for
        ``fingerprint_ttl``; a replaced file gets a new fingerprint, hence new cache keys
        and ETags, within that time.
        """
        known = self._fresh_check(slide_id)
        if known is not None:
            return known
        ttl = self.settings.fingerprint_ttl
        now = time.monotonic()

        def look_up() -> tuple[SlideRecord, str]:
            record = self.record(slide_id)
            return record, self.handles.fingerprint(record.id, record.source)

        async def recheck() -> tuple[SlideRecord, str]:
            record, fingerprint = await self._in_thread(look_up)
            if ttl > 0:
                if len(self._checked) > 4096:
                    self._checked.clear()
                self._checked[slide_id] = (now, record, fingerprint)
            return record, fingerprint

        # When the check expires under load, one request looks up; the others wait for it.
        return await self.flights.run("check:" + slide_id, recheck)

    async def grid(self, slide_id: str) -> tuple[SlideRecord, str, DeepZoomGrid, SlideInfo]:
        """Return the record, fingerprint, Deep Zoom grid and reader info of a slide."""
        record, fingerprint = await self.checked(slide_id)
        cached = self._grids.get((slide_id, fingerprint))
        if cached is None:
            info = await self._with_reader(record, fingerprint, lambda r: r.info)
            cached = (DeepZoomGrid.for_slide(info), info)
            if len(self._grids) > 4096:
                self._grids.clear()
            self._grids[(slide_id, fingerprint)] = cached
        return record, fingerprint, cached[0], cached[1]

    def _known_grid(self, slide_id: str) -> tuple[SlideRecord, str, DeepZoomGrid, SlideInfo] | None:
        """What :meth:`grid` returns, when it is known and fresh: no await, no I/O."""
        known = self._fresh_check(slide_id)
        cached = self._grids.get((slide_id, known[1])) if known is not None else None
        if known is None or cached is None:
            return None
        return known[0], known[1], cached[0], cached[1]

    async def info(self, slide_id: str) -> tuple[SlideRecord, SlideInfo]:
        """Return the record and what its reader reports."""
        record, _, _, info = await self.grid(slide_id)
        return record, info

    # -- cached images -------------------------------------------------------------------------

    async def _cached_image(
        self,
        key: str,
        media_type: str,
        make: Callable[[], Awaitable[tuple[bytes, str]]],
        *,
        shared: bool = True,
        local_checked: bool = False,
    ) -> ImageResult:
        """Serve from the cache, else compute once (single flight) and store.

        ``shared=False`` keeps the bytes out of Redis: for stored tiles sent as they are, a pread
        of a page-cached file is cheaper than a network round trip, and Redis memory is better
        spent on what is costly to make. ``local_checked``: the caller already missed the
        in-process tier, so only Redis is asked.
        """
        if local_checked:
            cached = await self.remote_cache.get(key) if shared and self.remote_cache else None
            if cached is not None:
                self.local_cache.set_sync(key, cached)
        else:
            cached = await (self.cache if shared else self.local_cache).get(key)
        if cached is not None:
            return ImageResult(cached, media_type, etag_for(key), "cache")

        async def compute() -> ImageResult:
            data, source = await make()
            if source == "passthrough":
                self.local_cache.set_sync(key, data)
            else:
                await self.cache.set(key, data)
            return ImageResult(data, media_type, etag_for(key), source)

        return await self.flights.run(key, compute)

    async def dzi(self, slide_id: str, fmt: str = "jpeg") -> str:
        """Return the Deep Zoom descriptor."""
        _, _, grid, _ = await self.grid(slide_id)
        return grid.dzi_xml(normalize_format(fmt))

    async def deepzoom_tile(
        self, slide_id: str, z_level: int, t_col: int, t_row: int, fmt: str
    ) -> ImageResult:
        """Return one Deep Zoom tile: the stored bytes where possible, else rendered.

        What a viewer asks for most is answered on the event loop, without a thread hop: tiles
        in the in-process cache, and stored tiles whose bytes are in the page cache. The rest
        (Redis, rendering, reads that would wait for a disk) goes through single flight and the
        worker threads.
        """
        fmt = normalize_format(fmt)
        record, fingerprint, grid, info = self._known_grid(slide_id) or await self.grid(slide_id)
        quality = self.settings.jpeg_quality
        key = (
            f"dz:{record.id}:{record.content_hash}:{fingerprint}:"
            f"{z_level}:{t_col}:{t_row}:{fmt}:{quality}"
        )
        media_type = MEDIA_TYPES[fmt]
        cached = self.local_cache.get_sync(key)
        if cached is not None:  # only valid addresses are ever stored: no geometry to check
            return ImageResult(cached, media_type, etag_for(key), "cache")
        geometry = grid.geometry(z_level, t_col, t_row)
        stored = geometry.stored_level
        if stored is not None:
            level = info.levels[stored]
            if (t_col + 1) * grid.tile_size > level.width or (
                t_row + 1
            ) * grid.tile_size > level.height:
                stored = None
        passthrough = stored is not None and fmt == "jpeg"
        if passthrough:
            assert stored is not None
            data = self._stored_tile_nowait(record, fingerprint, stored, t_col, t_row)
            if data is not None:
                self.local_cache.set_sync(key, data)
                return ImageResult(data, media_type, etag_for(key), "passthrough")

        def make(reader: SlideReader) -> tuple[bytes, str]:
            if stored is not None and fmt == "jpeg":
                encoded = reader.read_encoded_tile(stored, t_col, t_row)
                if encoded is not None and encoded.media_type == "image/jpeg":
                    return encoded.data, "passthrough"
            pixels = read_scaled_array(
                reader,
                geometry.l0_x,
                geometry.l0_y,
                geometry.l0_width,
                geometry.l0_height,
                geometry.z_width,
                geometry.z_height,
            )
            return encode_image(pixels, fmt, quality), "render"

        async def compute() -> tuple[bytes, str]:
            return await self._with_reader(record, fingerprint, make, io=passthrough)

        return await self._cached_image(
            key, media_type, compute, shared=not passthrough, local_checked=True
        )

    def _stored_tile_nowait(
        self, record: SlideRecord, fingerprint: str, level: int, t_col: int, t_row: int
    ) -> bytes | None:
        """Return a stored JPEG tile if its reader is open and its bytes are in memory, else None.

        Runs on the event loop: a ``preadv(RWF_NOWAIT)`` of a page-cached tile costs a few
        microseconds, a hop to a worker thread and back costs tens.
        """
        loan = self.handles.lend_if_open(record.id, fingerprint)
        if loan is None:
            return None
        try:
            encoded = loan.reader.read_encoded_tile(level, t_col, t_row, nowait=True)
        except WouldBlock:
            return None
        finally:
            loan.release()
        if encoded is None or encoded.media_type != "image/jpeg":
            return None
        return encoded.data

    async def thumbnail(self, slide_id: str, max_size: int) -> ImageResult:
        """Return a JPEG of the whole slide fitting in ``max_size`` x ``max_size``."""
        if not 1 <= max_size <= self.settings.thumbnail_max:
            raise BadRequest(f"max must be between 1 and {self.settings.thumbnail_max}")
        record, fingerprint, _, info = await self.grid(slide_id)
        scale = max(info.width, info.height) / max_size
        z_w = max(1, round(info.width / scale))
        z_h = max(1, round(info.height / scale))
        quality = self.settings.jpeg_quality
        key = f"thumb:{record.id}:{record.content_hash}:{fingerprint}:{max_size}:{quality}"

        def make(reader: SlideReader) -> tuple[bytes, str]:
            image = read_scaled_region(reader, 0, 0, info.width, info.height, z_w, z_h)
            return encode_image(image, "jpeg", quality), "render"

        async def compute() -> tuple[bytes, str]:
            return await self._with_reader(record, fingerprint, make)

        return await self._cached_image(key, "image/jpeg", compute)

    async def associated(self, slide_id: str, name: str) -> ImageResult:
        """Return an associated image (label, macro, ...) as JPEG."""
        record, fingerprint, _, info = await self.grid(slide_id)
        if name not in info.associated:
            raise AssociatedImageNotFound(
                f"slide {slide_id!r} has no associated image {name[:40]!r}"
            )
        quality = self.settings.jpeg_quality
        key = f"assoc:{record.id}:{record.content_hash}:{fingerprint}:{name}:{quality}"

        def make(reader: SlideReader) -> tuple[bytes, str]:
            return encode_image(reader.associated(name), "jpeg", quality), "render"

        async def compute() -> tuple[bytes, str]:
            return await self._with_reader(record, fingerprint, make)

        return await self._cached_image(key, "image/jpeg", compute)

    async def run_with_reader(self, slide_id: str, func: Callable[[SlideReader], T]) -> T:
        """Run ``func`` with the slide's reader in the worker pool (IIIF and other renderers)."""
        record, fingerprint, _, _ = await self.grid(slide_id)
        return await self._with_reader(record, fingerprint, func)

    async def cached(
        self, key: str, media_type: str, make: Callable[[], Awaitable[tuple[bytes, str]]]
    ) -> ImageResult:
        """Serve ``make``'s bytes through the cache and single flight under ``key``."""
        return await self._cached_image(key, media_type, make)
