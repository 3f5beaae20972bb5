"""Deep Zoom tiles, thumbnails and associated images: cache -> handles -> tiling -> imaging.

What the routes call for slide pixels; the IIIF service (:mod:`slideserver.services.iiif`) is
built on it. No HTTP types here.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import NamedTuple, TypeVar

import anyio
from anyio.to_thread import run_sync

from slideserver.cache.base import TileCache
from slideserver.catalog.base import Catalog, SlideRecord
from slideserver.catalog.discovery import content_hash
from slideserver.errors import (
    AssociatedImageNotFound,
    BackendUnavailable,
    BadRequest,
    SlideChanged,
    SlideGone,
    SlideNotFound,
    SlideUnreadable,
)
from slideserver.handles import HandlePool, named_safely
from slideserver.imaging.encode import MEDIA_TYPES, encode_image, normalize_format
from slideserver.imaging.regions import read_scaled_array, read_scaled_region
from slideserver.models import SlideInfo
from slideserver.readers.base import SlideReader, WouldBlock
from slideserver.services.read_gate import ReadGate
from slideserver.services.single_flight import SingleFlight
from slideserver.settings import Settings
from slideserver.tiling.deepzoom import DeepZoomGrid

T = TypeVar("T")

log = logging.getLogger(__name__)


class TileSource(StrEnum):
    """Where an image came from: the ``X-Tile-Source`` header and the metrics label."""

    PASSTHROUGH = "passthrough"
    """The stored tile's bytes, sent as they are."""
    CACHE = "cache"
    """A tier of the tile cache."""
    RENDER = "render"
    """Read, resampled and encoded for this request."""


# Members as module constants: on Python 3.11 ``TileSource.CACHE`` costs a few hundred
# nanoseconds per lookup (the enum metaclass), as much as the rest of a cache hit.
_CACHE = TileSource.CACHE
_PASSTHROUGH = TileSource.PASSTHROUGH
_RENDER = TileSource.RENDER


class ImageResult(NamedTuple):
    """Encoded image bytes with what HTTP caching needs (a tuple: made for every tile)."""

    data: bytes
    media_type: str
    etag: str
    source: TileSource = _RENDER


class SlideView(NamedTuple):
    """What serving a slide needs, looked up once per ``fingerprint_ttl``.

    ``fingerprint`` identifies the file's current bytes: it goes into every cache key and ETag.
    """

    record: SlideRecord
    fingerprint: str
    grid: DeepZoomGrid
    info: SlideInfo


def etag_for(key: str) -> str:
    """Return a strong ETag derived from a cache key."""
    return '"' + hashlib.blake2b(key.encode(), digest_size=12).hexdigest() + '"'


DEADLINE_PIXELS = 16_000_000
"""Pixels a render may make per ``read_timeout`` (a 40 MP IIIF image gets 2.5 of them)."""


class TileService:
    """Slides from catalog lookup to encoded Deep Zoom tiles, thumbnails and associated images."""

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
        # The hot path's in-process lookup, bound once (see deepzoom_tile).
        self._get_local = cache.get_local_sync
        self._views: dict[str, tuple[float, SlideView]] = {}
        self._grids: dict[tuple[str, str], tuple[DeepZoomGrid, SlideInfo]] = {}
        self._changed: dict[tuple[str, str], str] = {}
        """(slide ID, fingerprint) whose file holds other content than indexed: the answer."""
        self.limiter = anyio.CapacityLimiter(settings.thread_count)
        self.io_limiter = anyio.CapacityLimiter(max(1, settings.io_threads))
        self.reads = ReadGate(settings.read_timeout, settings.slide_read_threads)
        self.flights = SingleFlight()
        self._confirmed: dict[str, float] = {}
        """When the catalog last answered for each slide (bounds serving through an outage)."""

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
        timeout: float | None = None,
    ) -> T:
        """Run ``func`` with the slide's reader in a worker thread (``io``: from the I/O pool).

        Within the read deadline, and holding at most ``slide_read_threads`` threads per slide
        (:class:`~slideserver.services.read_gate.ReadGate`): a hung mount answers 504.
        """

        def call() -> T:
            with self.handles.borrow(record.id, record.source, fingerprint) as reader:
                return func(reader)

        pool = self.io_limiter if io else self.limiter
        return await self.reads.run(record.id, call, pool, timeout)

    async def with_reader(
        self, view: SlideView, func: Callable[[SlideReader], T], pixels: int = 0
    ) -> T:
        """Run ``func`` with the slide's reader in the worker pool (IIIF and other renderers).

        ``pixels``: how many pixels ``func`` makes. The read deadline is there to notice hung
        storage, not to cut short a large render on a busy machine: each
        :data:`DEADLINE_PIXELS` pixels beyond the first earn another ``read_timeout``.
        """
        timeout = self.settings.read_timeout * max(1.0, pixels / DEADLINE_PIXELS)
        return await self._with_reader(view.record, view.fingerprint, func, timeout=timeout)

    def _known_view(self, slide_id: str) -> SlideView | None:
        """The last :meth:`view`, while ``fingerprint_ttl`` trusts it: no await, no allocation."""
        known = self._views.get(slide_id)
        if known is None or time.monotonic() - known[0] >= self.settings.fingerprint_ttl:
            return None
        return known[1]

    async def view(self, slide_id: str) -> SlideView:
        """Return the record, fingerprint, Deep Zoom grid and reader info of a slide.

        A catalog query and a stat cost a thread hop (the catalog may be SQL, the disk may be
        remote): per request, that is as much as sending a stored tile. So both are trusted for
        ``fingerprint_ttl``; a replaced file gets a new fingerprint, hence new cache keys
        and ETags, within that time. The grid and info are kept per fingerprint.
        """
        known = self._known_view(slide_id)
        if known is not None:
            return known
        ttl = self.settings.fingerprint_ttl
        now = time.monotonic()

        async def recheck() -> SlideView:
            record, fingerprint = await self._look_up(slide_id, now)
            grid_info = self._grids.get((slide_id, fingerprint))
            if grid_info is None:
                if (slide_id, fingerprint) in self._changed:
                    raise SlideChanged(self._changed[(slide_id, fingerprint)])
                await self._in_thread(lambda: self._check_content(record, fingerprint), io=True)
                info = await self._with_reader(record, fingerprint, lambda r: r.info)
                grid_info = (DeepZoomGrid.for_slide(info), info)
                if len(self._grids) > 4096:
                    self._grids.clear()
                self._grids[(slide_id, fingerprint)] = grid_info
            view = SlideView(record, fingerprint, grid_info[0], grid_info[1])
            if ttl > 0:
                if len(self._views) > 4096:
                    self._views.clear()
                self._views[slide_id] = (now, view)
            return view

        # When the check expires under load, one request looks up; the others wait for it.
        return await self.flights.run("check:" + slide_id, recheck)

    def _check_content(self, record: SlideRecord, fingerprint: str) -> None:
        """Refuse a slide whose file now holds other content than was indexed under its ID.

        Called once per on-disk fingerprint (a new one: first use, or the file was touched or
        replaced). A file replaced under the same name gets a new ID at the next scan; until
        then its old ID must not serve the new pixels, which would be cached as the old ID's for
        a year. Touching a file without changing its bytes keeps the hash, so changes nothing.
        """
        if not record.content_hash:
            return
        try:
            current = content_hash(record.source)
        except OSError as exc:
            raise SlideGone(f"slide {record.id!r} is no longer available") from exc
        if current != record.content_hash:
            log.warning("slide %s changed on disk; it is served again once re-indexed", record.id)
            detail = (
                f"the file of slide {record.id!r} changed since it was indexed; "
                "it will be listed again under a new id"
            )
            if len(self._changed) > 4096:
                self._changed.clear()
            self._changed[(record.id, fingerprint)] = detail
            raise SlideChanged(detail)

    async def _look_up(self, slide_id: str, now: float) -> tuple[SlideRecord, str]:
        """Return the slide's catalog record and its file's fingerprint (a stat).

        While the catalog database is unreachable, a slide looked up within the last
        ``catalog_outage_grace`` seconds keeps its last good record (viewers keep panning the
        slides they have open); any other slide answers 503. The stat runs under the read
        deadline: a hung mount answers 504.
        """
        trusted = self._trusted_record(slide_id, now)
        if trusted is not None:
            try:
                fingerprint = await self._fingerprint(trusted)
            except SlideGone:
                pass  # moved or removed: ask the catalog where it is now
            else:
                if fingerprint == trusted[1]:
                    return trusted[0], fingerprint
        try:
            record = await self._in_thread(lambda: self.record(slide_id))
        except BackendUnavailable:
            last_good = self._last_good_record(slide_id, now)
            if last_good is None:
                raise
            record = last_good
        else:
            if len(self._confirmed) > 4096:
                self._confirmed.clear()
            self._confirmed[slide_id] = now
        return record, await self._fingerprint((record, ""))

    async def _fingerprint(self, known: tuple[SlideRecord, str]) -> str:
        """Stat the slide's file(s) under the read deadline: a hung mount answers 504."""
        record = known[0]
        return await self.reads.run(
            record.id, lambda: self.handles.fingerprint(record.id, record.source), self.limiter
        )

    def _trusted_record(self, slide_id: str, now: float) -> tuple[SlideRecord, str] | None:
        """The last record and fingerprint, while ``catalog_record_ttl`` trusts the record.

        Between catalog look-ups only the file is checked (a stat): at the peak of a shift every
        open slide's record was read again each second on every instance, one database round
        trip for nearly every tile. A changed or vanished file asks the catalog at once.
        """
        confirmed = self._confirmed.get(slide_id)
        known = self._views.get(slide_id)
        if confirmed is None or known is None:
            return None
        if now - confirmed >= self.settings.catalog_record_ttl:
            return None
        return known[1].record, known[1].fingerprint

    def _last_good_record(self, slide_id: str, now: float) -> SlideRecord | None:
        """The slide's record from its last catalog answer, unless older than the grace."""
        confirmed = self._confirmed.get(slide_id)
        known = self._views.get(slide_id)
        if confirmed is None or known is None:
            return None
        if now - confirmed >= self.settings.catalog_outage_grace:
            return None
        return known[1].record

    async def info(self, slide_id: str) -> tuple[SlideRecord, SlideInfo]:
        """Return the record and what its reader reports."""
        view = await self.view(slide_id)
        return view.record, view.info

    # -- cached images -------------------------------------------------------------------------

    async def _cached_image(
        self,
        key: str,
        media_type: str,
        make: Callable[[], Awaitable[tuple[bytes, TileSource]]],
        *,
        shared: bool = True,
        local_checked: bool = False,
    ) -> ImageResult:
        """Serve from the cache, else compute once (single flight) and store.

        ``shared=False`` keeps the bytes out of Redis: for stored tiles sent as they are, a pread
        of a page-cached file is cheaper than a network round trip, and Redis memory is better
        spent on what is costly to make. ``local_checked``: the caller already missed the
        in-process tier, so only the shared tier is asked.
        """
        cache = self.cache
        if local_checked:
            cached = await cache.get_remote(key) if shared else None
        elif shared:
            cached = await cache.get(key)
        else:
            cached = cache.get_local_sync(key)
        if cached is not None:
            return ImageResult(cached, media_type, etag_for(key), _CACHE)

        async def compute() -> ImageResult:
            data, source = await make()
            if source is _PASSTHROUGH:
                cache.set_local_sync(key, data)
            else:
                await cache.set(key, data)
            return ImageResult(data, media_type, etag_for(key), source)

        return await self.flights.run(key, compute)

    async def cached(
        self, key: str, media_type: str, make: Callable[[], Awaitable[tuple[bytes, TileSource]]]
    ) -> ImageResult:
        """Serve ``make``'s bytes through the cache and single flight under ``key``."""
        return await self._cached_image(key, media_type, make)

    # -- Deep Zoom ----------------------------------------------------------------------------

    async def dzi(self, slide_id: str, fmt: str = "jpeg") -> str:
        """Return the Deep Zoom descriptor."""
        view = await self.view(slide_id)
        return view.grid.dzi_xml(normalize_format(fmt))

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
        view = self._known_view(slide_id) or await self.view(slide_id)
        record = view.record
        fingerprint = view.fingerprint
        grid = view.grid
        quality = self.settings.jpeg_quality
        key = (
            f"dz:{record.id}:{record.content_hash}:{fingerprint}:"
            f"{z_level}:{t_col}:{t_row}:{fmt}:{quality}"
        )
        media_type = MEDIA_TYPES[fmt]
        cached = self._get_local(key)
        if cached is not None:  # only valid addresses are ever stored: no geometry to check
            return ImageResult(cached, media_type, etag_for(key), _CACHE)
        geometry = grid.geometry(z_level, t_col, t_row)
        stored = geometry.stored_level
        if stored is not None:
            level = view.info.levels[stored]
            if (t_col + 1) * grid.tile_size > level.width or (
                t_row + 1
            ) * grid.tile_size > level.height:
                stored = None
        passthrough = stored is not None and fmt == "jpeg"
        if passthrough:
            assert stored is not None
            data = self._stored_tile_nowait(record, fingerprint, stored, t_col, t_row)
            if data is not None:
                self.cache.set_local_sync(key, data)
                return ImageResult(data, media_type, etag_for(key), _PASSTHROUGH)

        def make(reader: SlideReader) -> tuple[bytes, TileSource]:
            if stored is not None and fmt == "jpeg":
                encoded = reader.read_encoded_tile(stored, t_col, t_row)
                if encoded is not None and encoded.media_type == "image/jpeg":
                    return encoded.data, _PASSTHROUGH
            pixels = read_scaled_array(
                reader,
                geometry.l0_x,
                geometry.l0_y,
                geometry.l0_width,
                geometry.l0_height,
                geometry.z_width,
                geometry.z_height,
            )
            return encode_image(pixels, fmt, quality), _RENDER

        async def compute() -> tuple[bytes, TileSource]:
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
        except SlideUnreadable as exc:
            raise named_safely(exc, record.source) from exc.__cause__
        finally:
            loan.release()
        if encoded is None or encoded.media_type != "image/jpeg":
            return None
        return encoded.data

    # -- whole-slide images --------------------------------------------------------------------

    async def thumbnail(self, slide_id: str, max_size: int) -> ImageResult:
        """Return a JPEG of the whole slide fitting in ``max_size`` x ``max_size``.

        Never larger than the slide itself: like IIIF without ``^``, a small slide's thumbnail
        is the slide at its own size, not an upscaled copy.
        """
        if not 1 <= max_size <= self.settings.thumbnail_max:
            raise BadRequest(f"max must be between 1 and {self.settings.thumbnail_max}")
        view = await self.view(slide_id)
        record, info = view.record, view.info
        max_size = min(max_size, max(info.width, info.height))
        scale = max(info.width, info.height) / max_size
        z_w = max(1, round(info.width / scale))
        z_h = max(1, round(info.height / scale))
        quality = self.settings.jpeg_quality
        key = f"thumb:{record.id}:{record.content_hash}:{view.fingerprint}:{max_size}:{quality}"

        def make(reader: SlideReader) -> tuple[bytes, TileSource]:
            image = read_scaled_region(reader, 0, 0, info.width, info.height, z_w, z_h)
            return encode_image(image, "jpeg", quality), _RENDER

        async def compute() -> tuple[bytes, TileSource]:
            return await self.with_reader(view, make)

        return await self._cached_image(key, "image/jpeg", compute)

    async def associated(self, slide_id: str, name: str) -> ImageResult:
        """Return an associated image (label, macro, ...) as JPEG."""
        view = await self.view(slide_id)
        if name not in view.info.associated:
            raise AssociatedImageNotFound(
                f"slide {slide_id!r} has no associated image {name[:40]!r}"
            )
        record = view.record
        quality = self.settings.jpeg_quality
        key = f"assoc:{record.id}:{record.content_hash}:{view.fingerprint}:{name}:{quality}"

        def make(reader: SlideReader) -> tuple[bytes, TileSource]:
            return encode_image(reader.associated(name), "jpeg", quality), _RENDER

        async def compute() -> tuple[bytes, TileSource]:
            return await self.with_reader(view, make)

        return await self._cached_image(key, "image/jpeg", compute)
