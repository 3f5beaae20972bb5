"""IIIF sizes over HTTP on a real tiny slide: openslide-python's 16 x 16 ``small.svs``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openslide
import pytest

from tests.helpers import decode, slide_id
from tests.realworld import copy_slides

SMALL = "small.svs"


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_slides({"openslide-python/small.svs": SMALL}, tmp_path_factory.mktemp("small"))


@pytest.fixture(scope="module")
def small_client(small_root: Path) -> Iterator[Any]:
    from starlette.testclient import TestClient

    from slideserver.api.app import create_app
    from slideserver.settings import Settings

    with TestClient(create_app(Settings(roots=(small_root,))), raise_server_exceptions=False) as c:
        yield c


def test_confined_size_larger_than_a_small_slide_returns_the_whole_slide(
    small_client: Any, small_root: Path
) -> None:
    """Spec 4.2: !w,h is "as large as possible but not larger than the extracted region"."""
    sid = slide_id(small_client, SMALL)
    response = small_client.get(f"/iiif/3/{sid}/full/!128,128/0/default.png")
    assert response.status_code == 200, response.text
    assert "full/max/0/default.png" in response.headers["link"]
    got = decode(response.content)
    with openslide.OpenSlide(small_root / SMALL) as osr:
        expected = np.asarray(osr.read_region((0, 0), 0, (16, 16)).convert("RGB"), np.int16)
    assert got.shape == (16, 16, 3)
    assert np.abs(got - expected).max() == 0
