"""WADO-RS rendered: a ``viewport`` that names a width without a height (or the reverse) is a
malformed request, answered 400 like any other, not a server error (found while describing the
route for the OpenAPI document)."""

from __future__ import annotations

from typing import Any

import pytest

from slideserver.dicom import uids
from tests.helpers import SVS, assert_error, slide_id


def rendered_url(client: Any) -> str:
    """The rendered URL of the SVS sample's level 0, in the clinical view."""
    sid = slide_id(client, SVS)
    accession = client.get(f"/api/slides/{sid}").json()["case"]["accession"]
    study, series = uids.study_uid(sid, accession), uids.series_uid(sid)
    instance = uids.instance_uid(sid, "level-0")
    return f"/dicomweb/studies/{study}/series/{series}/instances/{instance}/rendered"


@pytest.mark.parametrize("viewport", ["200,", ",150", "200"])
def test_a_viewport_missing_a_side_is_400(client: Any, viewport: str) -> None:
    response = client.get(rendered_url(client), params={"viewport": viewport})
    assert_error(response, 400, "bad_request")
