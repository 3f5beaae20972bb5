"""A live ``auth=tokens`` app for the annotation tests: slides with known MPP and none.

``S24-01234_A1_HE.tif`` (the calibrated slide): 2048 x 1536 pixels, MPP 0.5 across and 0.25
down (non-square pixels, so a measurement that mixes up x and y is caught), linked by a JSON LIS
order to case S24-01234 of patient MRN-0012345 (audit rows must name them);
``uncalibrated.tif``: no resolution tags.
Tokens: one per role, and a second pathologist and researcher (``pathologist2``,
``researcher2``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from starlette.testclient import TestClient

WIDTH, HEIGHT = 2048, 1536
CALIBRATED = "S24-01234_A1_HE.tif"
ACCESSION, MRN = "S24-01234", "MRN-0012345"
ORDER = Path(__file__).resolve().parent / "fixtures" / "lis" / "json_order.json"
MPP_X, MPP_Y = 0.5, 0.25
CALLERS = {
    "admin": "admin",
    "pathologist": "pathologist",
    "pathologist2": "pathologist",
    "researcher": "researcher",
    "researcher2": "researcher",
    "lis": "lis",
}


def write_slide(path: Path, mpp: tuple[float, float] | None) -> Path:
    """A tiled TIFF OpenSlide opens as generic-tiff; ``mpp`` in its resolution tags."""
    pixels = np.full((HEIGHT, WIDTH, 3), 220, np.uint8)
    options: dict[str, Any] = {}
    if mpp is not None:
        options = {
            "resolution": (1e4 / mpp[0], 1e4 / mpp[1]),
            "resolutionunit": "CENTIMETER",
        }
    tifffile.imwrite(
        path, pixels, tile=(256, 256), photometric="rgb", compression="zlib", **options
    )
    return path


@dataclass
class AnnotationEnv:
    """The running app, its slides and one bearer token per caller."""

    client: TestClient
    app: Any
    tokens: dict[str, str]
    calibrated: str
    uncalibrated: str

    def headers(self, caller: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[caller]}", **extra}

    def call(self, caller: str, method: str, url: str, **kwargs: Any) -> Any:
        headers = self.headers(caller, **kwargs.pop("headers", {}))
        return self.client.request(method, url, headers=headers, **kwargs)

    def subject(self, caller: str) -> str:
        return f"token:{caller}"


def open_env(folder: Path, database_url: str, **overrides: Any) -> Iterator[AnnotationEnv]:
    """Start the app over two fresh slides in ``folder`` and the database at the URL."""
    from slideserver.api.app import create_app
    from slideserver.security import Security
    from slideserver.settings import Settings

    root = folder / "slides"
    root.mkdir()
    write_slide(root / CALIBRATED, (MPP_X, MPP_Y))
    write_slide(root / "uncalibrated.tif", None)
    settings = Settings(
        roots=(root,),
        auth="tokens",
        database_url=database_url,
        session_secret="annotation-tests",
        **overrides,
    )
    security = Security(settings)
    security.open()
    try:
        assert security.tokens is not None
        tokens = {name: security.tokens.create(name, role, "")[1] for name, role in CALLERS.items()}
    finally:
        security.close()
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        ordered = client.post(
            "/api/lis/cases",
            content=ORDER.read_bytes(),
            headers={
                "Authorization": f"Bearer {tokens['lis']}",
                "Content-Type": "application/json",
            },
        )
        assert ordered.status_code in (200, 201), ordered.text
        listed = client.get(
            "/api/slides", headers={"Authorization": f"Bearer {tokens['admin']}"}
        ).json()
        ids = {item["name"]: item["id"] for item in listed["items"]}
        yield AnnotationEnv(client, app, tokens, ids[CALIBRATED], ids["uncalibrated.tif"])
