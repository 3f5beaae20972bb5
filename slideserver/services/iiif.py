"""IIIF Image API 3.0 over the tile service: parse, plan, key, render, describe.

The IIIF pipeline reads as one story: :mod:`slideserver.tiling.iiif` parses a request and plans
it against the image (pure geometry, every refusal before any read); this service looks the
slide up, keys the plan in the shared cache, and renders through the tile service's reader pool
and single flight with :mod:`slideserver.imaging.iiif_transform`. No HTTP types here: the route
turns URLs into calls and results into responses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from slideserver.imaging.iiif_transform import render_iiif
from slideserver.services.tiles import ImageResult, SlideView, TileService, TileSource
from slideserver.settings import Settings
from slideserver.tiling.iiif import (
    IIIFLimits,
    IIIFPlan,
    IIIFRequest,
    info_json,
    parse_image_request,
    plan_image,
    scale_factors,
)


class IIIFImage(NamedTuple):
    """An encoded IIIF image and the canonical form of its request (for the Link header)."""

    result: ImageResult
    canonical: str


def limits_of(settings: Settings) -> IIIFLimits:
    """Return the output limits the settings impose (published in info.json)."""
    return IIIFLimits(
        max_width=settings.iiif_max_width,
        max_height=settings.iiif_max_height,
        max_area=settings.iiif_max_area,
    )


class IIIFService:
    """IIIF images and info.json, sharing the tile service's cache, flights and readers."""

    def __init__(self, tiles: TileService) -> None:
        self.tiles = tiles
        self.limits = limits_of(tiles.settings)

    async def info(
        self, slide_id: str, image_id: str, extra_features: Sequence[str] = ()
    ) -> dict[str, Any]:
        """Return the info.json body of a slide published at ``image_id`` (its base URI).

        ``extra_features`` are what the HTTP layer adds (``cors``, ``baseUriRedirect``...);
        the image-request features are :mod:`slideserver.tiling.iiif`'s.
        """
        view = await self.tiles.view(slide_id)
        info, tile = view.info, view.grid.tile_size
        return info_json(
            image_id=image_id,
            width=info.width,
            height=info.height,
            tile_width=tile,
            tile_height=tile,
            scale_factors=scale_factors(info.width, info.height, tile),
            limits=self.limits,
            extra={"extraFeatures": list(extra_features)},
        )

    def plan(self, view: SlideView, request: IIIFRequest) -> IIIFPlan:
        """Resolve a parsed request against the slide; raise the 400 errors of what cannot be."""
        return plan_image(request, view.info.width, view.info.height, self.limits)

    def cache_key(self, view: SlideView, plan: IIIFPlan) -> str:
        """Return the cache key: the slide's current bytes, the canonical request, the encoder."""
        record, quality = view.record, self.tiles.settings.jpeg_quality
        return (
            f"iiif:{record.id}:{record.content_hash}:{view.fingerprint}:{plan.canonical}:{quality}"
        )

    async def image(
        self, slide_id: str, region: str, size: str, rotation: str, quality: str, fmt: str
    ) -> IIIFImage:
        """Return the image a request names, from the cache or rendered once (single flight).

        The parameters are parsed before the slide is looked up and planned before any pixel is
        read, so a malformed or over-limit request costs no I/O beyond the lookup.
        """
        request = parse_image_request(region, size, rotation, quality, fmt)
        view = await self.tiles.view(slide_id)
        plan = self.plan(view, request)
        encoder_quality = self.tiles.settings.jpeg_quality

        async def make() -> tuple[bytes, TileSource]:
            data = await self.tiles.with_reader(
                view,
                lambda reader: render_iiif(reader, plan, encoder_quality),
                pixels=plan.width * plan.height,
            )
            return data, TileSource.RENDER

        result = await self.tiles.cached(self.cache_key(view, plan), plan.media_type, make)
        return IIIFImage(result, plan.canonical)
