"""The service layer without HTTP: TileService and IIIFService on the real sample slides."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from slideserver.cache.base import TileCache
from slideserver.cache.memory import MemoryCache
from slideserver.cache.redis import RedisCache
from slideserver.catalog.base import SlideQuery
from slideserver.catalog.memory import MemoryCatalog
from slideserver.errors import (
    AssociatedImageNotFound,
    BadRequest,
    InvalidIIIFParameter,
    SlideNotFound,
    UnsupportedTileFormat,
)
from slideserver.handles import HandlePool
from slideserver.readers.registry import default_registry
from slideserver.services.iiif import IIIFService
from slideserver.services.tiles import TileService, TileSource
from slideserver.settings import Settings
from slideserver.tiling.iiif import parse_image_request
from tests.helpers import SVS, decode

T = TypeVar("T")

RENDERED = (12, 1, 1)
"""A tile of the SVS sample's Deep Zoom level 12, which has no stored copy."""
STORED = (13, 3, 2)
"""A full-resolution tile of the SVS sample: its stored JPEG is sent as it is."""
SVS_SIZE = (8192, 6144)
HTTP_FEATURES = ("cors",)


@asynccontextmanager
async def tile_service(
    root: Path, cache: TileCache | None = None, **settings: Any
) -> AsyncIterator[TileService]:
    """A tile service over a memory catalog of ``root``, closed afterwards."""
    options: dict[str, Any] = {"roots": (root,), "fingerprint_ttl": 3600.0, **settings}
    config = Settings(**options)
    registry = default_registry()
    catalog = MemoryCatalog(config.roots, registry)
    await asyncio.to_thread(catalog.refresh)
    handles = HandlePool(registry, config.roots, config.handle_pool_size)
    cache = cache if cache is not None else MemoryCache(config.memory_cache_bytes)
    try:
        yield TileService(config, catalog, handles, cache)
    finally:
        await cache.close()
        handles.close()
        catalog.close()


def svs_id(service: TileService) -> str:
    page = service.catalog.search(SlideQuery(limit=1000))
    return next(record.id for record in page.items if record.name == SVS)


def run(root: Path, body: Callable[[TileService], Awaitable[T]], **settings: Any) -> T:
    """Run ``body`` with a fresh tile service on its own event loop."""

    async def main() -> T:
        async with tile_service(root, **settings) as service:
            return await body(service)

    return asyncio.run(main())


# --- TileService ---------------------------------------------------------------------------


def test_tile_sources_keep_their_header_and_metric_values() -> None:
    assert [source.value for source in TileSource] == ["passthrough", "cache", "render"]
    assert f"{TileSource.CACHE}" == "cache"
    assert TileSource.PASSTHROUGH.encode() == b"passthrough"


def test_a_stored_tile_is_passed_through_then_served_from_the_cache(samples_root: Path) -> None:
    async def body(service: TileService) -> list[Any]:
        sid = svs_id(service)
        return [await service.deepzoom_tile(sid, *STORED, "jpeg") for _ in range(2)]

    first, second = run(samples_root, body)
    assert first.source is TileSource.PASSTHROUGH
    assert second.source is TileSource.CACHE
    assert (second.data, second.etag) == (first.data, first.etag)
    assert first.media_type == "image/jpeg"
    assert decode(first.data).shape == (256, 256, 3)


def test_a_tile_without_a_stored_copy_is_rendered_then_cached(samples_root: Path) -> None:
    async def body(service: TileService) -> list[Any]:
        sid = svs_id(service)
        return [await service.deepzoom_tile(sid, *RENDERED, "jpg") for _ in range(2)]

    first, second = run(samples_root, body)
    assert first.source is TileSource.RENDER
    assert second.source is TileSource.CACHE
    assert second.data == first.data
    assert decode(first.data).shape == (256, 256, 3)


def test_a_stored_tile_asked_for_as_png_is_rendered(samples_root: Path) -> None:
    async def body(service: TileService) -> Any:
        return await service.deepzoom_tile(svs_id(service), *STORED, "png")

    result = run(samples_root, body)
    assert result.source is TileSource.RENDER
    assert result.media_type == "image/png"


def test_tile_etags_are_the_same_for_every_service_on_the_same_file(samples_root: Path) -> None:
    async def body(service: TileService) -> str:
        return (await service.deepzoom_tile(svs_id(service), *RENDERED, "jpeg")).etag

    assert run(samples_root, body) == run(samples_root, body)


def test_a_view_names_the_record_fingerprint_grid_and_info(samples_root: Path) -> None:
    async def body(service: TileService) -> tuple[Any, Any]:
        sid = svs_id(service)
        return await service.view(sid), await service.view(sid)

    view, again = run(samples_root, body)
    assert view.record.name == SVS
    assert view.fingerprint
    assert (view.info.width, view.info.height) == SVS_SIZE
    assert view.grid.tile_size == 256
    assert again is view  # trusted for fingerprint_ttl: no second lookup


def _catalog_reads_of_two_views(
    tiny_slides: Any, between: Callable[[Path], None], **settings: Any
) -> int:
    """View a tiny slide, let its view expire, call ``between``, view it again: how many
    times the catalog was asked for its record."""
    path = tiny_slides("one.tif")
    asked: list[str] = []

    async def body(service: TileService) -> int:
        sid = service.catalog.search(SlideQuery(limit=10)).items[0].id
        read = service.catalog.get

        def counting_get(slide_id: str) -> Any:
            asked.append(slide_id)
            return read(slide_id)

        service.catalog.get = counting_get  # type: ignore[method-assign]
        await service.view(sid)
        await asyncio.sleep(0.05)  # past fingerprint_ttl: the view is checked again
        between(path)
        await service.view(sid)
        return len(asked)

    return run(tiny_slides.root, body, fingerprint_ttl=0.01, **settings)


def test_within_the_record_ttl_an_expired_view_checks_the_file_not_the_catalog(
    tiny_slides: Any,
) -> None:
    assert _catalog_reads_of_two_views(tiny_slides, lambda p: None, catalog_record_ttl=3600) == 1


def test_a_changed_file_asks_the_catalog_at_once(tiny_slides: Any) -> None:
    def touch(path: Path) -> None:
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))

    assert _catalog_reads_of_two_views(tiny_slides, touch, catalog_record_ttl=3600) == 2


def test_past_the_record_ttl_the_catalog_is_asked_again(tiny_slides: Any) -> None:
    assert _catalog_reads_of_two_views(tiny_slides, lambda p: None, catalog_record_ttl=0.01) == 2


def test_an_unknown_slide_is_not_found(samples_root: Path) -> None:
    async def body(service: TileService) -> Any:
        return await service.deepzoom_tile("0123456789abcdef", *RENDERED, "jpeg")

    with pytest.raises(SlideNotFound):
        run(samples_root, body)


def test_a_thumbnail_fits_its_box_and_is_cached(samples_root: Path) -> None:
    async def body(service: TileService) -> list[Any]:
        sid = svs_id(service)
        return [await service.thumbnail(sid, 300) for _ in range(2)]

    first, second = run(samples_root, body)
    assert first.source is TileSource.RENDER
    assert second.source is TileSource.CACHE
    assert first.media_type == "image/jpeg"
    assert decode(first.data).shape == (225, 300, 3)


def test_a_thumbnail_beyond_the_limit_is_refused(samples_root: Path) -> None:
    async def body(service: TileService) -> Any:
        return await service.thumbnail(svs_id(service), 2049)

    with pytest.raises(BadRequest):
        run(samples_root, body)


def test_associated_images_are_encoded_and_unknown_names_refused(samples_root: Path) -> None:
    async def body(service: TileService) -> Any:
        sid = svs_id(service)
        label = await service.associated(sid, "label")
        with pytest.raises(AssociatedImageNotFound):
            await service.associated(sid, "nonesuch")
        return label

    label = run(samples_root, body)
    assert label.media_type == "image/jpeg"
    assert label.source is TileSource.RENDER
    assert decode(label.data).std() > 5


@pytest.mark.redis
def test_on_redis_alone_rendered_tiles_are_shared_and_stored_ones_never_sent(
    samples_root: Path, redis_server: Any
) -> None:
    """Any TileCache will do: a Redis-only cache has no local tier, so stored tiles stay out."""

    async def body(service: TileService) -> list[TileSource]:
        assert isinstance(service.cache, RedisCache)
        sid = svs_id(service)
        sources = []
        for address in (RENDERED, STORED):
            for _ in range(2):
                sources.append((await service.deepzoom_tile(sid, *address, "jpeg")).source)
                await service.cache.flush_writes()
        return sources

    async def main() -> list[TileSource]:
        async with tile_service(samples_root, RedisCache(redis_server.url)) as service:
            return await body(service)

    assert asyncio.run(main()) == [
        TileSource.RENDER,
        TileSource.CACHE,
        TileSource.PASSTHROUGH,
        TileSource.PASSTHROUGH,
    ]


# --- IIIFService ---------------------------------------------------------------------------


def iiif_run(root: Path, body: Callable[[IIIFService, str], Awaitable[T]], **settings: Any) -> T:
    async def tiles_body(service: TileService) -> T:
        return await body(IIIFService(service), svs_id(service))

    return run(root, tiles_body, **settings)


def test_an_iiif_image_is_planned_rendered_and_cached(samples_root: Path) -> None:
    async def body(iiif: IIIFService, sid: str) -> list[Any]:
        args = ("0,0,4096,4096", "!300,300", "90", "gray", "png")
        return [await iiif.image(sid, *args) for _ in range(2)]

    first, second = iiif_run(samples_root, body)
    assert first.canonical == "0,0,4096,4096/300,300/90/gray.png"
    assert first.result.media_type == "image/png"
    assert first.result.source is TileSource.RENDER
    assert second.result.source is TileSource.CACHE
    assert second.result.data == first.result.data
    assert decode(first.result.data).shape == (300, 300, 3)


def test_equivalent_iiif_requests_share_one_cache_entry(samples_root: Path) -> None:
    async def body(iiif: IIIFService, sid: str) -> list[Any]:
        full = await iiif.image(sid, "full", "256,", "0", "default", "jpg")
        same = await iiif.image(sid, "0,0,8192,6144", "256,192", "360", "default", "jpg")
        return [full, same]

    full, same = iiif_run(samples_root, body)
    assert full.canonical == same.canonical == "full/256,192/0/default.jpg"
    assert same.result.source is TileSource.CACHE
    assert same.result.etag == full.result.etag


def test_the_iiif_cache_key_names_the_file_request_and_encoder(samples_root: Path) -> None:
    async def body(iiif: IIIFService, sid: str) -> tuple[str, str, str]:
        view = await iiif.tiles.view(sid)
        request = parse_image_request("full", "max", "0", "default", "jpg")
        key = iiif.cache_key(view, iiif.plan(view, request))
        return key, view.record.content_hash, view.fingerprint

    first, content_hash, fingerprint = iiif_run(samples_root, body)
    again, _, _ = iiif_run(samples_root, body)
    other_quality, _, _ = iiif_run(samples_root, body, jpeg_quality=70)
    assert first == again  # stable across processes: Redis shares it
    assert content_hash in first and fingerprint in first
    assert first.endswith(":full/max/0/default.jpg:85")
    assert other_quality != first


def test_iiif_refusals_come_from_the_plan(samples_root: Path) -> None:
    async def body(iiif: IIIFService, sid: str) -> None:
        with pytest.raises(InvalidIIIFParameter):
            await iiif.image(sid, "full", "^10001,", "0", "default", "jpg")  # maxWidth
        with pytest.raises(InvalidIIIFParameter):
            await iiif.image(sid, "8192,0,10,10", "max", "0", "default", "jpg")  # outside

    iiif_run(samples_root, body)


def test_iiif_parameters_are_checked_before_the_slide_is_looked_up(samples_root: Path) -> None:
    async def body(iiif: IIIFService, sid: str) -> None:
        await iiif.image("0123456789abcdef", "full", "max", "0", "default", "tif")

    with pytest.raises(UnsupportedTileFormat):
        iiif_run(samples_root, body)


def test_iiif_info_describes_the_slide(samples_root: Path) -> None:
    async def body(iiif: IIIFService, sid: str) -> dict[str, Any]:
        return await iiif.info(sid, f"https://example.org/iiif/3/{sid}", HTTP_FEATURES)

    info = iiif_run(samples_root, body, iiif_max_width=5000)
    assert info["id"].startswith("https://example.org/iiif/3/")
    assert (info["width"], info["height"]) == SVS_SIZE
    assert info["tiles"] == [{"width": 256, "height": 256, "scaleFactors": [1, 2, 4, 8, 16, 32]}]
    assert info["maxWidth"] == 5000
    assert "cors" in info["extraFeatures"]
    assert "mirroring" in info["extraFeatures"]
    assert {"width": 256, "height": 192} in info["sizes"]
