"""Thumbnails of a real tiny slide (openslide-python's 16 x 16 ``small.svs``): never upscaled."""

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


@pytest.mark.parametrize("box", [16, 256, 2048])
def test_a_thumbnail_is_never_larger_than_the_slide(
    small_client: Any, small_root: Path, box: int
) -> None:
    """As IIIF without ``^``: a box larger than the slide gives the slide at its own size."""
    sid = slide_id(small_client, SMALL)
    response = small_client.get(f"/api/slides/{sid}/thumbnail", params={"max": box})
    assert response.status_code == 200, response.text
    got = decode(response.content)
    with openslide.OpenSlide(small_root / SMALL) as osr:
        assert osr.dimensions == (16, 16)
        reference = osr.get_thumbnail((box, box)).convert("RGB")
    expected = np.asarray(reference, dtype=np.int16)
    assert got.shape == expected.shape == (16, 16, 3)
    assert np.abs(got - expected).mean() < 6  # JPEG of a 16 x 16 image


def test_a_thumbnail_smaller_than_the_slide_is_scaled_down(small_client: Any) -> None:
    sid = slide_id(small_client, SMALL)
    response = small_client.get(f"/api/slides/{sid}/thumbnail", params={"max": 8})
    assert decode(response.content).shape == (8, 8, 3)
