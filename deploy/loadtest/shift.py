"""Locust scenario of the shift change: every pathologist signs in, opens a case, its slides, pans.

Run by ``python -m deploy.loadtest shift`` (``make loadtest``), which starts the cluster and
hands this file the tokens and cases in ``LOADTEST_DATA`` (a JSON file). What a browser running
the viewer asks for, in its order: the session (sign-in), the case with the thumbnails of its
slides (case open), the first slide's Deep Zoom descriptor and its first tile (first tile), then
tiles of the finest levels as the pathologist pans.

The users are :class:`~locust.contrib.fasthttp.FastHttpUser` (geventhttpclient): the load
generator shares the two cores with the cluster, and python-requests' client cost it about
1 ms of CPU per request, enough under the shift's peak to delay its own greenlets by seconds
and to count that delay as the server's latency (a case open measured 5 s whose requests took
1 s).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import re
import time
from pathlib import Path
from typing import Any

import gevent.pool
from locust import between, events, task
from locust.contrib.fasthttp import FastHttpUser

DATA: dict[str, Any] = json.loads(Path(os.environ["LOADTEST_DATA"]).read_text())
_USERS = itertools.count()
_HEADERS = {"X-Requested-With": "slideserver"}
_DZI = re.compile(r'TileSize="(\d+)"')


def _fire(name: str, started: float, error: Exception | None = None) -> None:
    """Record a step made of several requests (case open, first tile) as one locust entry."""
    events.request.fire(  # type: ignore[no-untyped-call]
        request_type="STEP",
        name=name,
        response_time=(time.perf_counter() - started) * 1000,
        response_length=0,
        exception=error,
        context={},
    )


class Pathologist(FastHttpUser):
    """One pathologist at the start of the shift."""

    wait_time = between(2, 6)  # reading the case, looking at the slide
    concurrency = 6  # a browser's connections per host

    def on_start(self) -> None:
        index = next(_USERS)
        token = DATA["tokens"][index % len(DATA["tokens"])]
        accessions: list[str] = DATA["accessions"]
        offset = index % len(accessions)
        self.cases = itertools.cycle(accessions[offset:] + accessions[:offset])
        self.rng = random.Random(index)
        with self.client.post(
            "/api/session",
            headers={"Authorization": f"Bearer {token}", **_HEADERS},
            name="sign-in",
            catch_response=True,
        ) as answer:
            if answer.status_code != 200 or "set-cookie" not in answer.headers:
                answer.failure(f"sign-in answered {answer.status_code}")
            cookie = str(answer.headers.get("set-cookie", "")).split(";", 1)[0]
        # The session cookie goes in a header, as a browser attaches it: locust's cookie jar
        # (Python's http.cookiejar, run for every request) was a tenth of the load
        # generator's CPU, which it takes from the cluster on this machine.
        self.client.client.cookiejar = None
        self.headers = {**_HEADERS, "Cookie": cookie}

    @task
    def open_case_and_pan(self) -> None:
        accession = next(self.cases)
        started = time.perf_counter()
        with self.client.get(
            f"/api/cases/{accession}", headers=self.headers, name="case", catch_response=True
        ) as answer:
            if answer.status_code != 200:
                answer.failure(f"case answered {answer.status_code}")
                return
            slides = [s for s in answer.json()["slides"] if s.get("status", "ok") == "ok"]
            if not slides:
                answer.failure("the case has no viewable slide")
                return
        group = gevent.pool.Pool(6)  # a browser's connections per host
        for slide in slides:
            group.spawn(
                self.client.get,
                f"/api/slides/{slide['id']}/thumbnail?max=256",
                headers=self.headers,
                name="thumbnail",
            )
        group.join()
        _fire("case open (case + thumbnails)", started)
        self.view(slides[0])

    def view(self, slide: dict[str, Any]) -> None:
        """Open one slide in the viewer: descriptor, the whole-slide view, then pan deep."""
        started = time.perf_counter()
        sid = slide["id"]
        answer = self.client.get(f"/dz/{sid}.dzi", headers=self.headers, name="dzi")
        match = _DZI.search(answer.text or "")
        if answer.status_code != 200 or match is None:
            return
        size = int(match.group(1))
        top = math.ceil(math.log2(max(slide["width"], slide["height"])))
        home = max(0, top - math.ceil(math.log2(max(slide["width"], slide["height"]) / 1024)))
        with self.client.get(
            f"/dz/{sid}_files/{home}/0_0.jpeg",
            headers=self.headers,
            name="first tile",
            catch_response=True,
        ) as tile:
            if tile.status_code != 200:
                tile.failure(f"first tile answered {tile.status_code}")
        _fire("first view (descriptor + first tile)", started)
        columns = max(1, math.ceil(slide["width"] / size))
        rows = max(1, math.ceil(slide["height"] / size))
        col, row = self.rng.randrange(columns), self.rng.randrange(rows)
        for _ in range(4):  # four pans, each bringing in a few tiles at full resolution
            group = gevent.pool.Pool(6)
            for dc in range(3):
                for dr in range(2):
                    c, r = min(columns - 1, col + dc), min(rows - 1, row + dr)
                    group.spawn(
                        self.client.get,
                        f"/dz/{sid}_files/{top}/{c}_{r}.jpeg",
                        headers=self.headers,
                        name="pan tile",
                    )
            group.join()
            col = (col + 3) % columns
            time.sleep(self.rng.uniform(0.1, 0.4))
