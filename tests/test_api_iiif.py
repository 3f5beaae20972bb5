"""IIIF Image API 3.0 over HTTP, checked against an independent reference reader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import openslide
import pytest
from PIL import Image

from tests.helpers import ALL_SAMPLES, SVS, decode, slide_id


def test_info_json_describes_the_image_service(client: Any) -> None:
    sid = slide_id(client, SVS)
    response = client.get(f"/iiif/3/{sid}/info.json")
    assert response.status_code == 200
    info = response.json()
    assert info["@context"] == "http://iiif.io/api/image/3/context.json"
    assert info["type"] == "ImageService3" and info["profile"] == "level2"
    assert info["id"].endswith(f"/iiif/3/{sid}")
    assert (info["width"], info["height"]) == (8192, 6144)
    assert info["tiles"][0]["width"] == 256
    assert 1 in info["tiles"][0]["scaleFactors"]
    assert {"png", "webp"} <= set(info["extraFormats"])
    assert response.headers["access-control-allow-origin"] == "*"


INFO_MEDIA_TYPE = 'application/ld+json;profile="http://iiif.io/api/image/3/context.json"'


@pytest.mark.parametrize(
    "accept",
    [
        None,
        "*/*",
        "application/ld+json",
        "application/json, application/ld+json",
        "application/ld+json;q=0.9, application/json;q=0.9",
        "application/json;q=0",
    ],
)
def test_info_json_is_json_ld_with_the_iiif_profile_by_default(
    client: Any, accept: str | None
) -> None:
    """IIIF Image 3.0, section 5: JSON-LD with the profile unless plain JSON is preferred."""
    sid = slide_id(client, SVS)
    headers = {"Accept": accept} if accept is not None else {}
    response = client.get(f"/iiif/3/{sid}/info.json", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == INFO_MEDIA_TYPE
    assert response.json()["@context"] == "http://iiif.io/api/image/3/context.json"
    assert "Accept" in response.headers["vary"]


@pytest.mark.parametrize(
    "accept",
    [
        "application/json",
        "application/json, */*;q=0.5",
        "application/ld+json;q=0.5, application/json",
    ],
)
def test_info_json_is_plain_json_when_the_client_prefers_it(client: Any, accept: str) -> None:
    sid = slide_id(client, SVS)
    response = client.get(f"/iiif/3/{sid}/info.json", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["type"] == "ImageService3"


def test_base_uri_redirects_to_info_json(client: Any) -> None:
    sid = slide_id(client, SVS)
    response = client.get(f"/iiif/3/{sid}", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].endswith(f"/iiif/3/{sid}/info.json")


def test_region_matches_openslide(client: Any, samples_dir: dict[str, Path]) -> None:
    sid = slide_id(client, SVS)
    response = client.get(f"/iiif/3/{sid}/2048,1024,1024,512/512,/0/default.png")
    assert response.status_code == 200
    got = decode(response.content)
    with openslide.OpenSlide(samples_dir[SVS]) as osr:
        ref = osr.read_region((2048, 1024), 0, (1024, 512)).convert("RGB")
    expected = np.asarray(ref.resize((512, 256), Image.Resampling.LANCZOS), dtype=np.int16)
    assert got.shape == expected.shape
    assert np.abs(got - expected).mean() < 4


@pytest.mark.parametrize("name", ALL_SAMPLES)
def test_full_image_at_a_small_size_for_every_format(client: Any, name: str) -> None:
    sid = slide_id(client, name)
    response = client.get(f"/iiif/3/{sid}/full/!300,300/0/default.jpg")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    height, width, _ = decode(response.content).shape
    assert max(width, height) == 300
    assert decode(response.content).std() > 5


def test_rotation_swaps_the_output_size(client: Any) -> None:
    sid = slide_id(client, SVS)
    response = client.get(f"/iiif/3/{sid}/0,0,800,400/400,/90/default.jpg")
    height, width, _ = decode(response.content).shape
    assert (width, height) == (200, 400)


def test_gray_quality_gives_a_grayscale_image(client: Any) -> None:
    sid = slide_id(client, SVS)
    response = client.get(f"/iiif/3/{sid}/square/200,/0/gray.png")
    import io

    with Image.open(io.BytesIO(response.content)) as image:
        assert image.mode == "L"
        assert image.size == (200, 200)


def test_image_response_names_its_canonical_uri(client: Any) -> None:
    sid = slide_id(client, SVS)
    response = client.get(f"/iiif/3/{sid}/full/pct:5/0/default.jpg")
    assert response.status_code == 200
    assert 'rel="canonical"' in response.headers["link"]
    assert response.headers["etag"]


def test_region_outside_the_image_is_400(client: Any) -> None:
    sid = slide_id(client, SVS)
    response = client.get(f"/iiif/3/{sid}/9000,9000,10,10/max/0/default.jpg")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_iiif_parameter"
