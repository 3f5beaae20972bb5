"""IIIF size limits answer 400, as IIIF Image API 3.0 section 4.2 asks and the README says.

"For all requests the pixel dimensions of the scaled region must not be ... greater than the
server-imposed limits. Requests that would generate images of these sizes are errors that
should result in a 400 (Bad Request) status code." The limits are advertised in info.json.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import SVS, assert_error, slide_id


@pytest.fixture(scope="module")
def limited(samples_root: Path) -> Iterator[Any]:
    from starlette.testclient import TestClient

    from slideserver.api.app import create_app
    from slideserver.settings import Settings

    settings = Settings(
        roots=(samples_root,), iiif_max_width=1000, iiif_max_height=800, iiif_max_area=500_000
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def test_info_json_advertises_the_limits(limited: Any) -> None:
    info = limited.get(f"/iiif/3/{slide_id(limited, SVS)}/info.json").json()
    assert (info["maxWidth"], info["maxHeight"], info["maxArea"]) == (1000, 800, 500_000)


@pytest.mark.parametrize(
    ("size", "limit"), [("1001,", "maxWidth"), ("500,801", "maxHeight"), ("800,700", "maxArea")]
)
def test_a_size_over_a_limit_is_400(limited: Any, size: str, limit: str) -> None:
    response = limited.get(f"/iiif/3/{slide_id(limited, SVS)}/full/{size}/0/default.jpg")
    assert_error(response, 400, "invalid_iiif_parameter")
    assert limit in response.json()["detail"]


def test_max_is_fitted_to_the_limits(limited: Any) -> None:
    response = limited.get(f"/iiif/3/{slide_id(limited, SVS)}/full/max/0/default.jpg")
    assert response.status_code == 200
