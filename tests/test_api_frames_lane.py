"""The frames lane and the routed frames endpoint answer every case alike: status, headers, body.

DICOMweb frame URLs normally take the lane (:mod:`slideserver.api.frames_lane`);
``create_app(..., tile_lane=False)`` sends them through the middleware stack and the router
instead. Two apps over the same files, one per path, get the same requests (the same
``X-Request-ID`` too, so every header is compared exactly) and must give the same answers, and
count the same pixel reads in the audit trail. Multipart boundaries differ from answer to answer
by design; they are compared once replaced by a placeholder.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from slideserver.api.app import create_app
from slideserver.api.frames_lane import FramesLane
from slideserver.dicom import uids
from tests.conftest import _security_settings, make_tokens
from tests.helpers import SVS
from tests.test_api_tile_pipeline import CountingLane

PATHS = ("lane", "routed")
SLIM = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
RAW = 'multipart/related; type="application/octet-stream"'
UNKNOWN_UID = "1.2.3.4.5"
BOUNDARY = re.compile(rb"boundary=([0-9a-f]+)")


@dataclass
class Env:
    """One app, its client and tokens, and the address of the SVS's level-0 instance."""

    client: TestClient
    app: Any
    tokens: dict[str, str]
    instance: str

    def get(self, url: str, token: str | None = "pathologist", **headers: str) -> Any:
        sent = {"X-Request-ID": "frames-lane-test", **headers}
        if token:
            sent["Authorization"] = f"Bearer {self.tokens[token]}"
        return self.client.get(url, headers=sent)

    def frames(self, numbers: str, token: str | None = "pathologist", **headers: str) -> Any:
        return self.get(f"{self.instance}/frames/{numbers}", token, **headers)


def _level0(client: TestClient, token: str) -> str:
    """The URL of the SVS's level-0 instance (QIDO-RS), by the series UID of its slide."""
    auth = {"Authorization": f"Bearer {token}"}
    listed = client.get("/api/slides", params={"limit": 100}, headers=auth).json()["items"]
    (slide,) = [item["id"] for item in listed if item["name"] == SVS]
    series = str(uids.series_uid(slide))
    found = client.get("/dicomweb/series", params={"SeriesInstanceUID": series}, headers=auth)
    study = found.json()[0]["0020000D"]["Value"][0]
    base = f"/dicomweb/studies/{study}/series/{series}"
    instances = client.get(f"{base}/instances", headers=auth).json()
    volumes = [i for i in instances if i["00080008"]["Value"][2] == "VOLUME"]
    level0 = max(volumes, key=lambda i: int(i["00480006"]["Value"][0]))
    return f"{base}/instances/{level0['00080018']['Value'][0]}"


@pytest.fixture(scope="module")
def envs(
    tmp_path_factory: pytest.TempPathFactory, samples_dir: dict[str, Path]
) -> Iterator[dict[str, Env]]:
    """An ``auth=tokens`` app per path (lane, routed) over the same SVS."""
    root = tmp_path_factory.mktemp("frames-lane") / "slides"
    root.mkdir()
    shutil.copy(samples_dir[SVS], root / SVS)
    with contextlib.ExitStack() as stack:
        envs: dict[str, Env] = {}
        for path in PATHS:
            db = tmp_path_factory.mktemp(path) / "db.sqlite"
            settings: Any = _security_settings(root, db)
            roles = ("pathologist", "lis", "admin")
            tokens = make_tokens(settings, {role: (role, "") for role in roles})
            app = create_app(settings, tile_lane=path == "lane")
            client = stack.enter_context(TestClient(app, raise_server_exceptions=False))
            envs[path] = Env(client, app, tokens, _level0(client, tokens["pathologist"]))
        yield envs


Case = Callable[[Env], Any]

CASES: dict[str, tuple[int, Case]] = {
    "200 as stored": (200, lambda env: env.frames("1,2")),
    "200 in any syntax (Slim)": (200, lambda env: env.frames("3", Accept=SLIM)),
    "200 uncompressed": (200, lambda env: env.frames("4", Accept=RAW)),
    "406 for a syntax we cannot send": (
        406,
        lambda env: env.frames("1", Accept='multipart/related; type="image/jp2"'),
    ),
    "400 for a frame outside the instance": (400, lambda env: env.frames("99999999")),
    "404 for an unknown instance": (
        404,
        lambda env: env.get(env.instance.rsplit("/", 1)[0] + f"/{UNKNOWN_UID}/frames/1"),
    ),
    "401 without credentials": (401, lambda env: env.frames("1", None)),
    "403 for a role without image access": (403, lambda env: env.frames("1", "lis")),
}


def _comparable(response: Any) -> tuple[list[tuple[str, str]], bytes]:
    """Headers and body with the answer's multipart boundary replaced by a placeholder."""
    found = BOUNDARY.search(response.headers.get("content-type", "").encode())
    body = response.content
    headers = response.headers.multi_items()
    if found:
        boundary = found.group(1)
        body = body.replace(boundary, b"BOUNDARY")
        headers = [(k, v.replace(boundary.decode(), "BOUNDARY")) for k, v in headers]
    return headers, body


def test_the_two_paths_are_two_apps(envs: dict[str, Env]) -> None:
    assert isinstance(envs["lane"].app.frames_lane, FramesLane)
    assert envs["routed"].app.frames_lane is None
    assert envs["lane"].instance == envs["routed"].instance  # same file, same UIDs


@pytest.mark.parametrize("case", list(CASES))
def test_lane_and_router_answer_alike(
    envs: dict[str, Env], case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    status, send = CASES[case]
    counting = CountingLane(envs["lane"].app.frames_lane)
    monkeypatch.setattr(envs["lane"].app, "frames_lane", counting)
    lane = send(envs["lane"])
    assert counting.answered == 1  # the lane answered, not the router
    routed = send(envs["routed"])
    assert lane.status_code == status, lane.text[:300]
    assert routed.status_code == status, routed.text[:300]
    assert _comparable(lane) == _comparable(routed)
    assert lane.headers["x-request-id"] == "frames-lane-test"


def test_a_malformed_frames_url_is_left_to_the_router(
    envs: dict[str, Env], monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = CountingLane(envs["lane"].app.frames_lane)
    monkeypatch.setattr(envs["lane"].app, "frames_lane", counting)
    answers = [envs[path].frames("1,x") for path in PATHS]
    assert counting.answered == 0
    assert answers[0].status_code == answers[1].status_code == 400
    assert _comparable(answers[0]) == _comparable(answers[1])


def _pixel_reads(env: Env) -> int:
    """Return how many pixel reads the audit summary holds for the pathologist token."""
    rows = env.get("/api/audit?kind=tiles&limit=1000", "admin").json()["items"]
    return sum(row["count"] for row in rows if row["subject"] == "token:pathologist")


@pytest.mark.parametrize(("status", "token"), [(200, "pathologist"), (403, "lis")])
def test_lane_and_router_count_the_same_pixel_reads(
    envs: dict[str, Env], status: int, token: str
) -> None:
    counted = {}
    for path in PATHS:
        before = _pixel_reads(envs[path])
        assert envs[path].frames("5", token).status_code == status
        counted[path] = _pixel_reads(envs[path]) - before
    assert counted["lane"] == counted["routed"] == (1 if status == 200 else 0)
