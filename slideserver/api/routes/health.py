"""Liveness, readiness and metrics."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from slideserver import __version__
from slideserver.api.state import state_of
from slideserver.cache.memory import MemoryCache


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok", "version": __version__})


async def readyz(request: Request) -> Response:
    state = state_of(request)
    cache_ok = await state.cache.healthy()
    checks = {"catalog": "ok", "cache": "ok" if cache_ok else "degraded"}
    status = "ok" if cache_ok else "degraded"
    # A degraded cache still serves tiles from the source: ready, but say so.
    return JSONResponse({"status": status, "checks": checks}, status_code=200)


async def metrics(request: Request) -> Response:
    state = state_of(request)
    extra: dict[str, float] = {"slideserver_open_slides": float(len(state.handles))}
    local = getattr(state.cache, "local", state.cache)
    if isinstance(local, MemoryCache):
        extra["slideserver_memory_cache_bytes"] = float(local.size_bytes)
        extra["slideserver_memory_cache_hits"] = float(local.hits)
        extra["slideserver_memory_cache_misses"] = float(local.misses)
    return PlainTextResponse(
        state.metrics.render(extra), media_type="text/plain; version=0.0.4; charset=utf-8"
    )


def routes() -> list[Route]:
    """Return the health and metrics routes."""
    return [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
