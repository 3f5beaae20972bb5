"""The read deadline notices hung storage without cutting short a large render.

:class:`ReadGate` runs each read under a deadline; a render that makes many pixels earns a
longer one (``read_timeout`` per :data:`DEADLINE_PIXELS`), so a full-size IIIF image on a busy
machine is not mistaken for a hung mount.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from anyio import CapacityLimiter

from slideserver.errors import SlideStorageTimeout
from slideserver.services.read_gate import ReadGate
from slideserver.services.tiles import DEADLINE_PIXELS
from tests.helpers import slide_id

T = TypeVar("T")


def run_in_gate(gate: ReadGate, func: Callable[[], T], timeout: float | None = None) -> T:
    async def main() -> T:
        return await gate.run("slide", func, CapacityLimiter(2), timeout)

    return anyio.run(main)


def slow_read() -> str:
    time.sleep(0.3)
    return "pixels"


def test_a_read_past_the_deadline_answers_storage_timeout() -> None:
    with pytest.raises(SlideStorageTimeout):
        run_in_gate(ReadGate(timeout=0.05, per_slide=2), slow_read)


def test_a_read_given_a_longer_deadline_finishes() -> None:
    assert run_in_gate(ReadGate(timeout=0.05, per_slide=2), slow_read, timeout=5.0) == "pixels"


class RecordingGate(ReadGate):
    """A gate that notes the deadline each read was given."""

    def __init__(self, timeout: float, per_slide: int) -> None:
        super().__init__(timeout, per_slide)
        self.deadlines: list[float] = []

    async def run(
        self, key: str, func: Callable[[], T], pool: CapacityLimiter, timeout: float | None = None
    ) -> T:
        self.deadlines.append(self.timeout if timeout is None else timeout)
        return await super().run(key, func, pool, timeout)


def test_an_iiif_render_gets_a_deadline_for_its_pixels(samples_root: Path) -> None:
    from starlette.testclient import TestClient

    from slideserver.api.app import create_app
    from slideserver.settings import Settings

    app = create_app(Settings(roots=(samples_root,), read_timeout=4.0))
    with TestClient(app, raise_server_exceptions=False) as client:
        service: Any = app.state.slideserver.service
        gate = service.reads = RecordingGate(4.0, 8)
        sid = slide_id(client, "S24-01234_A1_HE.svs")
        small = client.get(f"/iiif/3/{sid}/0,0,512,512/256,/0/default.jpg")
        assert small.status_code == 200
        assert gate.deadlines[-1] == 4.0
        width, height = 6000, 4000  # 24 MP: 1.5 times DEADLINE_PIXELS
        large = client.get(f"/iiif/3/{sid}/0,0,{width},{height}/{width},/0/default.jpg")
        assert large.status_code == 200, large.text
        assert gate.deadlines[-1] == pytest.approx(4.0 * width * height / DEADLINE_PIXELS)
