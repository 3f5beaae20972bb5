"""A researcher's first session with slideserver: find slides, read regions, build a dataset.

Run it against a server with a researcher token:

    SLIDESERVER_URL=https://slides.example.org SLIDESERVER_TOKEN=... python docs/examples/researcher.py

It prints what it finds and checks what it reads; the test suite runs it against a live server.
"""

from __future__ import annotations

import asyncio
import os

import numpy as np

from slideserver.client import AsyncClient, Client, TileDataset


def main() -> None:
    url = os.environ.get("SLIDESERVER_URL", "http://127.0.0.1:8000")
    token = os.environ.get("SLIDESERVER_TOKEN")
    with Client(url, token) as client:
        # 1. The slides this token may see (researchers: de-identified, their collections only).
        slides = [s for s in client.slides() if s["status"] == "ok" and s.get("mpp_x")]
        print(f"{len(slides)} slides")
        slide = slides[0]
        print("first:", slide["id"], slide["width"], "x", slide["height"], "at", slide["mpp_x"], "µm/px")

        # 2. A region in level-0 pixels, read at 1 µm per pixel: the server picks the stored
        #    level, nothing is upsampled, and large regions are fetched in pieces.
        x, y = slide["width"] // 4, slide["height"] // 4
        region = client.read_region(slide["id"], x, y, 2048, 2048, mpp=1.0)
        scale = 1.0 / slide["mpp_x"]
        print("region:", region.shape, "mean", round(float(region.mean()), 1))
        assert region.shape == (round(2048 / scale), round(2048 / scale), 3)

        # 3. A dataset: 256 px patches at 0.5 µm/px over the tissue of every slide.
        dataset = TileDataset(client, slides, size=256, mpp=0.5)
        print(f"dataset: {len(dataset)} patches; skipped: {dataset.skipped or 'none'}")
        pixels, meta = dataset[len(dataset) // 2]
        assert pixels.shape == (256, 256, 3)
        print("one patch:", meta)
        # Any framework wraps it, e.g. torch.utils.data.DataLoader(dataset, batch_size=64,
        # num_workers=8, collate_fn=...): each worker process opens its own connections.

    # 4. The same calls, asynchronously: many regions in flight at once.
    async def corners() -> list[np.ndarray]:
        async with AsyncClient(url, token) as aclient:
            boxes = [(slide["id"], cx, cy, 512, 512) for cx in (0, 512) for cy in (0, 512)]
            return await aclient.read_regions(boxes, mpp=0.5)

    print("async corners:", [r.shape for r in asyncio.run(corners())])


if __name__ == "__main__":
    main()
