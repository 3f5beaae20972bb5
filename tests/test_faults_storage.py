"""Slide storage failing: a hung read answers 504 in bounded time, the other slides keep serving.

A hung network mount is simulated without FUSE: a reader whose reads of one slide block on an
event until the test releases them (Python cannot kill a thread stuck in a read, so the server
must abandon it and cap how many threads one slide holds).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from slideserver.api.app import create_app
from slideserver.readers.base import WouldBlock
from slideserver.readers.registry import ReaderRegistry
from slideserver.readers.tiff.reader import TiffReader
from slideserver.settings import Settings
from tests.helpers import assert_error, slide_id

PER_SLIDE = 2
RELEASE_DEADLINE = 30.0
"""Seconds the released reads have to give their threads back."""


class HangingReader(TiffReader):
    """Reads of files named ``hung*`` block until ``release`` is set, once ``armed``."""

    priority = 0
    armed = False
    """Off while indexing, whose pixel check reads pixels."""
    release = threading.Event()

    def _hang(self) -> None:
        if HangingReader.armed and self.source.path.name.startswith("hung"):
            HangingReader.release.wait(60)

    def read_encoded_tile(self, *args: Any, **kwargs: Any) -> Any:
        if (
            HangingReader.armed
            and self.source.path.name.startswith("hung")
            and kwargs.get("nowait")
        ):
            raise WouldBlock  # a read that would wait never runs on the event loop
        self._hang()
        return super().read_encoded_tile(*args, **kwargs)

    def read_region(self, *args: Any, **kwargs: Any) -> Any:
        self._hang()
        return super().read_region(*args, **kwargs)


@pytest.fixture
def hanging_app(tiny_slides: Any) -> Iterator[Any]:
    tiny_slides("hung.tif")
    tiny_slides("fine.tif")
    settings = Settings(
        roots=(tiny_slides.root,),
        read_timeout=0.5,
        slide_read_threads=PER_SLIDE,
        threads=4,
        io_threads=4,
    )
    HangingReader.armed = False
    HangingReader.release = threading.Event()
    app = create_app(settings, registry=ReaderRegistry([HangingReader]))
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client
    finally:
        HangingReader.release.set()
        HangingReader.armed = False


def hung_tiles(client: Any, sid: str, count: int) -> list[Any]:
    """Ask for ``count`` different tiles of the slide (none cached)."""
    return [client.get(f"/dz/{sid}_files/9/{i % 2}_{i // 2}.jpeg") for i in range(count)]


def test_a_hung_read_answers_504_and_other_slides_keep_serving(hanging_app: Any) -> None:
    client = hanging_app
    hung, fine = slide_id(client, "hung.tif"), slide_id(client, "fine.tif")
    HangingReader.armed = True
    for response in hung_tiles(client, hung, 4):
        assert_error(response, 504, "slide_storage_timeout")
    # More hung reads than the pool has threads, yet the other slide still gets its tiles.
    for z in (8, 9):
        assert client.get(f"/dz/{fine}_files/{z}/0_0.jpeg").status_code == 200


def test_a_hung_slide_holds_at_most_its_share_of_threads(hanging_app: Any) -> None:
    client = hanging_app
    hung = slide_id(client, "hung.tif")
    assert client.get(f"/dz/{hung}.dzi").status_code == 200  # opened before the mount hangs
    HangingReader.armed = True
    hung_tiles(client, hung, 2 * PER_SLIDE + 2)
    assert client.app.state.slideserver.service.reads.held(hung) == PER_SLIDE


def test_a_slide_serves_again_once_its_storage_answers(hanging_app: Any) -> None:
    client = hanging_app
    hung = slide_id(client, "hung.tif")
    HangingReader.armed = True
    hung_tiles(client, hung, PER_SLIDE + 1)
    HangingReader.armed = False
    HangingReader.release.set()
    reads = client.app.state.slideserver.service.reads
    deadline = time.monotonic() + RELEASE_DEADLINE
    while reads.held(hung) and time.monotonic() < deadline:
        client.get("/healthz")  # lets the event loop take the slots back
        time.sleep(0.05)
    assert reads.held(hung) == 0
    assert client.get(f"/dz/{hung}_files/9/1_1.jpeg").status_code == 200


def test_a_deleted_file_answers_404_slide_gone(tiny_slides: Any) -> None:
    path: Path = tiny_slides("gone.tif")
    settings = Settings(roots=(tiny_slides.root,), fingerprint_ttl=0)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        sid = slide_id(client, "gone.tif")
        path.unlink()
        assert_error(client.get(f"/dz/{sid}_files/9/0_0.jpeg"), 404, "slide_gone")


# A folder made unreadable (chmod 000) is not tested: the tests run as root, which reads it
# anyway; the reader's OSError would answer 404 slide_gone like a deleted file.
