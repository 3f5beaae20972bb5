"""Small helpers shared by the API tests."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

SVS = "S24-01234_A1_HE.svs"
GENERIC_TIFF = "S24-01234_A2_KI67.tif"
OME_TIFF = "S24-05678_B1_HE.ome.tiff"
DICOM = "S24-05678_B2_PAS"
ALL_SAMPLES = (SVS, GENERIC_TIFF, OME_TIFF, DICOM)


def slide_id(client: Any, name: str) -> str:
    """Return the ID the server gave the slide called ``name``."""
    body = client.get("/api/slides", params={"limit": 1000}).json()
    for item in body["items"]:
        if item["name"] == name:
            return str(item["id"])
    raise AssertionError(f"{name} not listed; listed: {[i['name'] for i in body['items']]}")


def decode(data: bytes) -> NDArray[np.int16]:
    """Decode image bytes into signed RGB pixels for comparisons."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def assert_error(response: Any, status: int, code: str | None = None) -> None:
    """Assert the JSON error contract: status, ``error`` code and a ``detail`` message."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    assert isinstance(body["detail"], str) and body["detail"]
    if code is not None:
        assert body["error"] == code, body
    assert "Traceback" not in response.text
