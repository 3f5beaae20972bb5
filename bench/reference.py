"""The reference server: Starlette + OpenSlide's ``DeepZoomGenerator.get_tile`` + PIL per request.

This is what a straightforward Python tile server does (openslide-python's example server, made
ASGI): no cache, no passthrough, every tile read, resampled and JPEG-encoded on request. The same
grid as slideserver's (256 px tiles, no overlap), so both answer the same tile addresses.

Run: ``BENCH_SLIDES=name=/path.svs:name2=/path.tif uvicorn --factory bench.reference:create_app``.
"""

from __future__ import annotations

import io
import os

import openslide
from openslide.deepzoom import DeepZoomGenerator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

TILE_SIZE = 256
QUALITY = 85


def create_app() -> Starlette:
    """Open every slide named in ``BENCH_SLIDES`` and serve its Deep Zoom tiles."""
    generators: dict[str, DeepZoomGenerator] = {}
    for item in os.environ.get("BENCH_SLIDES", "").split(os.pathsep):
        if item:
            name, _, path = item.partition("=")
            slide = openslide.OpenSlide(path)
            generators[name] = DeepZoomGenerator(
                slide, tile_size=TILE_SIZE, overlap=0, limit_bounds=False
            )

    def tile(request: Request) -> Response:
        # A sync endpoint: Starlette runs it in its thread pool, as the example server would.
        params = request.path_params
        generator = generators.get(params["name"])
        if generator is None:
            return PlainTextResponse("no such slide", status_code=404)
        try:
            image = generator.get_tile(params["level"], (params["col"], params["row"]))
        except ValueError:
            return PlainTextResponse("no such tile", status_code=404)
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "jpeg", quality=QUALITY)
        return Response(buffer.getvalue(), media_type="image/jpeg")

    def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/ref/{name}_files/{level:int}/{col:int}_{row:int}.jpeg", tile),
        ]
    )
