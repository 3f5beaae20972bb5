"""Locust scenario of the soak: 64 connections of mixed traffic for as long as it runs.

Tiles (most of it), IIIF regions, slide searches, case reads and LIS orders, from 64 users that
barely pause, through nginx. Run by ``python -m deploy.loadtest soak`` (``make soak``), which
samples every process's memory, open files and threads while it runs.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import uuid
from pathlib import Path
from typing import Any

from locust import HttpUser, between, task

DATA: dict[str, Any] = json.loads(Path(os.environ["LOADTEST_DATA"]).read_text())
_USERS = itertools.count()
_HEADERS = {"X-Requested-With": "slideserver"}


class MixedClient(HttpUser):
    """A viewer, a search page and the LIS, in the proportions of a working day."""

    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        index = next(_USERS)
        self.rng = random.Random(index)
        token = DATA["tokens"][index % len(DATA["tokens"])]
        self.client.post(
            "/api/session",
            headers={"Authorization": f"Bearer {token}", **_HEADERS},
            name="sign-in",
        )
        self.slides: list[dict[str, Any]] = DATA["slides"]

    def _slide(self) -> dict[str, Any]:
        return self.rng.choice(self.slides)

    @task(60)
    def tile(self) -> None:
        slide = self._slide()
        scale = 2 ** self.rng.randrange(3)  # the three finest levels
        level = slide["top"] - scale.bit_length() + 1
        width, height = math.ceil(slide["width"] / scale), math.ceil(slide["height"] / scale)
        columns = max(1, math.ceil(width / slide["tile"]))
        rows = max(1, math.ceil(height / slide["tile"]))
        col, row = self.rng.randrange(columns), self.rng.randrange(rows)
        self.client.get(
            f"/dz/{slide['id']}_files/{level}/{col}_{row}.jpeg", headers=_HEADERS, name="tile"
        )

    @task(10)
    def iiif_region(self) -> None:
        slide = self._slide()
        x = self.rng.randrange(max(1, slide["width"] - 2048))
        y = self.rng.randrange(max(1, slide["height"] - 2048))
        self.client.get(
            f"/iiif/3/{slide['id']}/{x},{y},2048,2048/512,/0/default.jpg",
            headers=_HEADERS,
            name="iiif region",
        )

    @task(10)
    def search(self) -> None:
        accession = self.rng.choice(DATA["accessions"])
        self.client.get(f"/api/slides?q={accession}", headers=_HEADERS, name="search")

    @task(10)
    def case(self) -> None:
        accession = self.rng.choice(DATA["accessions"])
        self.client.get(f"/api/cases/{accession}", headers=_HEADERS, name="case")

    @task(10)
    def lis_order(self) -> None:
        """An order update for an existing case, each with a message ID of its own."""
        index = self.rng.randrange(len(DATA["accessions"]))
        body = dict(DATA["orders"][index])
        body["message_id"] = uuid.uuid4().hex
        self.client.post(
            "/api/lis/cases",
            json=body,
            headers={"Authorization": f"Bearer {DATA['lis_token']}"},
            name="lis order",
        )
