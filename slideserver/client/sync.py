"""``Client``: the blocking client. One connection pool, reused; GETs retried on 503 and 429."""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from slideserver.client.errors import NotFound, Unavailable
from slideserver.client.geometry import SlideGeometry, plan_region
from slideserver.client.retry import RETRY_STATUSES, RetryPolicy
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

DEFAULT_WORKERS = 8


def http2_available() -> bool:
    """HTTP/2 needs the ``h2`` package (``pip install 'httpx[http2]'``); without it, HTTP/1.1."""
    return importlib.util.find_spec("h2") is not None


def client_options(
    base_url: str, token: str | None, timeout: float, http2: bool | None, connections: int
) -> dict[str, Any]:
    """The httpx options both clients share: auth header, pool size, HTTP/2 when possible."""
    headers = {"Accept": "application/json, image/*;q=0.9"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return {
        "base_url": base_url.rstrip("/"),
        "headers": headers,
        "timeout": timeout,
        "http2": http2_available() if http2 is None else http2,
        "limits": httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    }


class Client:
    """A slideserver client: slides and metadata, regions as numpy arrays, tiles, thumbnails.

    ``token`` is an API token (``slideserver token create``), sent as a bearer token. The
    client is thread-safe; :meth:`read_regions` uses that to read many regions at once.
    """

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
        self._http = httpx.Client(**options, **httpx_options)
        self._geometry: dict[str, SlideGeometry] = {}
        self._lock = threading.Lock()

    # -- plumbing --

    def get(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        """GET ``path``, retrying 503, 429 and lost connections; raise the server's error."""
        attempt = 0
        while True:
            try:
                response = self._http.get(path, params=params)
            except httpx.TransportError as exc:
                if attempt >= self.retry.retries:
                    raise Unavailable("unreachable", f"{type(exc).__name__}: {exc}") from exc
                time.sleep(self.retry.wait(attempt))
                attempt += 1
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.retry.retries:
                time.sleep(self.retry.wait(attempt, response.headers.get("retry-after")))
                attempt += 1
                continue
            raise_for_answer(
                response.status_code, response.headers.get("content-type", ""), response.content
            )
            return response

    def get_json(self, path: str, params: dict[str, str] | None = None) -> Any:
        return self.get(path, params).json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- slides --

    def slides(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every slide matching the filters (``q``, ``stain``, ``format``...), page after page."""
        params = slide_filters(filters)
        while True:
            page = self.get_json("/api/slides", params)
            yield from page["items"]
            if not page.get("next"):
                return
            params = {**params, "cursor": page["next"]}

    def slide(self, slide_id: str) -> dict[str, Any]:
        """A slide's metadata: size, levels, µm per pixel, vendor, properties."""
        answer: dict[str, Any] = self.get_json(slide_path(slide_id))
        return answer

    def info(self, slide_id: str) -> dict[str, Any]:
        """The slide's IIIF ``info.json`` (size, tiles, the server's output limits)."""
        answer: dict[str, Any] = self.get_json(f"/iiif/3/{slide_id}/info.json")
        return answer

    def geometry(self, slide_id: str) -> SlideGeometry:
        """What region reads need to know of a slide (cached for the client's life)."""
        with self._lock:
            known = self._geometry.get(slide_id)
        if known is None:
            known = SlideGeometry.from_answers(self.slide(slide_id), self.info(slide_id))
            with self._lock:
                self._geometry[slide_id] = known
        return known

    # -- pixels --

    def read_region(
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
        """A level-0 region as a ``(h, w, 3)`` uint8 RGB array at ``mpp`` µm/px (default: full).

        The server reads the stored level closest to ``mpp`` without going below it, so nothing
        is upsampled; regions larger than its IIIF limits are read in pieces. Outside the slide
        is white. ``format="jpg"`` is faster and lossy; PNG gives the server's pixels exactly.
        """
        geometry = self.geometry(slide_id)
        plan = plan_region(geometry, x, y, width, height, geometry.downsample_for(mpp))
        pieces = [
            decode_image(self.get(piece.iiif_path(slide_id, format)).content)
            for piece in plan.pieces
        ]
        return assemble(plan, pieces)

    def read_regions(
        self,
        regions: Iterable[Region | Sequence[Any]],
        mpp: float | None = None,
        *,
        format: str = "png",
        max_workers: int | None = None,
    ) -> list[Pixels]:
        """Read many regions at once (``Region`` or ``(slide_id, x, y, w, h)``), in order,
        at most ``max_workers`` requests in flight."""
        items = [r if isinstance(r, Region) else Region(*r) for r in regions]
        with ThreadPoolExecutor(max_workers or self.max_workers) as pool:
            return list(
                pool.map(
                    lambda r: self.read_region(
                        r.slide_id, r.x, r.y, r.width, r.height, mpp, format=format
                    ),
                    items,
                )
            )

    def thumbnail(self, slide_id: str, max_size: int = 512) -> Pixels:
        """The whole slide fitting in ``max_size`` x ``max_size`` (never larger than the slide)."""
        response = self.get(slide_path(slide_id, "thumbnail"), {"max": str(max_size)})
        return decode_image(response.content)

    def deepzoom(self, slide_id: str) -> DeepZoomInfo:
        """The slide's Deep Zoom descriptor: size, tile size, overlap, format."""
        return parse_dzi(slide_id, self.get(f"/dz/{slide_id}.dzi").content)

    def tiles(self, slide_id: str, level: int) -> Iterator[DeepZoomTile]:
        """Every Deep Zoom tile of ``level``, row by row, fetched ``max_workers`` at a time."""
        dzi = self.deepzoom(slide_id)
        paths = list(dzi.tile_paths(level))
        with ThreadPoolExecutor(self.max_workers) as pool:
            contents = pool.map(lambda item: self.get(item[2]).content, paths)
            for (col, row, _), data in zip(paths, contents, strict=True):
                yield DeepZoomTile(level, col, row, decode_image(data))

    # -- annotations (issue 16) --

    def annotations(self, slide_id: str, cls: str | None = None) -> list[dict[str, Any]]:
        """The slide's annotation features (GeoJSON), of class ``cls`` when given.

        Raises :class:`NotFound` when the slide, or the annotation API, does not exist.
        """
        params = {"class": cls} if cls else {}
        features: list[dict[str, Any]] = []
        path: str | None = slide_path(slide_id, "annotations")
        while path is not None:
            page = self.get_json(path, params)
            features.extend(page.get("features") or [])
            path, params = next_page(path, params, page)
        return features


__all__ = ["Client", "NotFound", "http2_available"]
