"""``AsyncClient``: the asyncio client, method for method the same as :class:`Client`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import httpx

from slideserver.client.errors import Unavailable
from slideserver.client.geometry import SlideGeometry, plan_region
from slideserver.client.retry import RETRY_STATUSES, RetryPolicy
from slideserver.client.sync import DEFAULT_WORKERS, client_options
from slideserver.client.wire import (
    DeepZoomInfo,
    DeepZoomTile,
    Pixels,
    Region,
    assemble,
    decode_image,
    next_page,
    parse_dzi,
    raise_for_answer,
    slide_filters,
    slide_path,
)


class AsyncClient:
    """The asyncio twin of :class:`~slideserver.client.Client` (``await`` each call;
    :meth:`slides` and :meth:`tiles` are async iterators)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        http2: bool | None = None,
        max_workers: int = DEFAULT_WORKERS,
        **httpx_options: Any,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.retry = retry or RetryPolicy()
        self.max_workers = max(1, max_workers)
        options = client_options(base_url, token, timeout, http2, self.max_workers * 2)
        self._http = httpx.AsyncClient(**options, **httpx_options)
        self._geometry: dict[str, SlideGeometry] = {}

    async def get(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        """GET ``path``, retrying 503, 429 and lost connections; raise the server's error."""
        attempt = 0
        while True:
            try:
                response = await self._http.get(path, params=params)
            except httpx.TransportError as exc:
                if attempt >= self.retry.retries:
                    raise Unavailable("unreachable", f"{type(exc).__name__}: {exc}") from exc
                await asyncio.sleep(self.retry.wait(attempt))
                attempt += 1
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.retry.retries:
                await asyncio.sleep(self.retry.wait(attempt, response.headers.get("retry-after")))
                attempt += 1
                continue
            raise_for_answer(
                response.status_code, response.headers.get("content-type", ""), response.content
            )
            return response

    async def get_json(self, path: str, params: dict[str, str] | None = None) -> Any:
        return (await self.get(path, params)).json()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def slides(self, **filters: Any) -> AsyncIterator[dict[str, Any]]:
        """Every slide matching the filters, page after page."""
        params = slide_filters(filters)
        while True:
            page = await self.get_json("/api/slides", params)
            for item in page["items"]:
                yield item
            if not page.get("next"):
                return
            params = {**params, "cursor": page["next"]}

    async def slide(self, slide_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self.get_json(slide_path(slide_id))
        return answer

    async def info(self, slide_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self.get_json(f"/iiif/3/{slide_id}/info.json")
        return answer

    async def geometry(self, slide_id: str) -> SlideGeometry:
        known = self._geometry.get(slide_id)
        if known is None:
            slide, info = await asyncio.gather(self.slide(slide_id), self.info(slide_id))
            known = self._geometry[slide_id] = SlideGeometry.from_answers(slide, info)
        return known

    async def read_region(
        self,
        slide_id: str,
        x: int,
        y: int,
        width: int,
        height: int,
        mpp: float | None = None,
        *,
        format: str = "png",
    ) -> Pixels:
        """See :meth:`Client.read_region`; the pieces of a large region are fetched together."""
        geometry = await self.geometry(slide_id)
        plan = plan_region(geometry, x, y, width, height, geometry.downsample_for(mpp))
        answers = await asyncio.gather(
            *(self.get(piece.iiif_path(slide_id, format)) for piece in plan.pieces)
        )
        return assemble(plan, [decode_image(a.content) for a in answers])

    async def read_regions(
        self,
        regions: Iterable[Region | Sequence[Any]],
        mpp: float | None = None,
        *,
        format: str = "png",
        max_workers: int | None = None,
    ) -> list[Pixels]:
        """Read many regions at once, in order, at most ``max_workers`` in flight."""
        gate = asyncio.Semaphore(max_workers or self.max_workers)

        async def one(region: Region) -> Pixels:
            async with gate:
                return await self.read_region(
                    region.slide_id,
                    region.x,
                    region.y,
                    region.width,
                    region.height,
                    mpp,
                    format=format,
                )

        items = [r if isinstance(r, Region) else Region(*r) for r in regions]
        return list(await asyncio.gather(*(one(r) for r in items)))

    async def thumbnail(self, slide_id: str, max_size: int = 512) -> Pixels:
        response = await self.get(slide_path(slide_id, "thumbnail"), {"max": str(max_size)})
        return decode_image(response.content)

    async def deepzoom(self, slide_id: str) -> DeepZoomInfo:
        return parse_dzi(slide_id, (await self.get(f"/dz/{slide_id}.dzi")).content)

    async def tiles(self, slide_id: str, level: int) -> AsyncIterator[DeepZoomTile]:
        """Every Deep Zoom tile of ``level``, row by row, ``max_workers`` fetched at a time."""
        dzi = await self.deepzoom(slide_id)
        paths = list(dzi.tile_paths(level))
        for start in range(0, len(paths), self.max_workers):
            batch = paths[start : start + self.max_workers]
            answers = await asyncio.gather(*(self.get(path) for _, _, path in batch))
            for (col, row, _), answer in zip(batch, answers, strict=True):
                yield DeepZoomTile(level, col, row, decode_image(answer.content))

    async def annotations(self, slide_id: str, cls: str | None = None) -> list[dict[str, Any]]:
        """See :meth:`Client.annotations`."""
        params = {"class": cls} if cls else {}
        features: list[dict[str, Any]] = []
        path: str | None = slide_path(slide_id, "annotations")
        while path is not None:
            page = await self.get_json(path, params)
            features.extend(page.get("features") or [])
            path, params = next_page(path, params, page)
        return features
