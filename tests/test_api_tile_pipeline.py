"""The tile lane and the routed tile endpoint answer every case alike: status, headers, body.

Tile URLs normally take the lane (:mod:`slideserver.api.tile_lane`); ``create_app(...,
tile_lane=False)`` sends them through the middleware stack and the router instead. Two apps
over the same files, one per path, get the same requests (the same ``X-Request-ID`` too, so
every header is compared exactly) and must give the same answers, and count the same reads in
the audit trail. Both let :data:`VIEWER` read tiles cross-origin (CORS), so every case checks
the CORS headers too.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from slideserver.api.app import create_app
from slideserver.api.frames_lane import FramesLane
from slideserver.api.tile_lane import TileLane
from slideserver.readers.registry import ReaderRegistry, default_registry
from slideserver.readers.tiff.reader import TiffReader
from tests.conftest import _security_settings, make_tokens
from tests.helpers import GENERIC_TIFF, SVS

PATHS = ("lane", "routed")
VIEWER = "https://viewer.example.org"
OTHER = "https://evil.example.net"
UNKNOWN = "aaaaaaaaaaaaaaaa"
BUGGY = "buggy.tif"
TRUNCATED = "truncated.tif"


class BuggyReader(TiffReader):
    """A reader with a bug, claiming only ``buggy.tif``: once armed, its tiles end in an
    exception (it reads well while indexing, whose pixel check would list it unreadable)."""

    priority = 0
    armed = False

    @classmethod
    def detect(cls, source: Any) -> str | None:
        return super().detect(source) if source.path.name == BUGGY else None

    def read_encoded_tile(self, *args: Any, **kwargs: Any) -> Any:
        if BuggyReader.armed:
            raise ValueError("a reader bug")
        return super().read_encoded_tile(*args, **kwargs)

    def read_region(self, *args: Any, **kwargs: Any) -> Any:
        if BuggyReader.armed:
            raise ValueError("a reader bug")
        return super().read_region(*args, **kwargs)


@dataclass
class Env:
    """One app, its client and tokens, and the IDs it gave the slides."""

    client: TestClient
    app: Any
    tokens: dict[str, str]
    ids: dict[str, str]

    def get(self, url: str, token: str | None = "pathologist", **headers: str) -> Any:
        sent = {"X-Request-ID": "pipeline-test", **headers}
        if token:
            sent["Authorization"] = f"Bearer {self.tokens[token]}"
        return self.client.get(url, headers=sent)

    def tile(self, name: str, address: str) -> str:
        return f"/dz/{self.ids.get(name, name)}_files/{address}"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, samples_dir: dict[str, Path]) -> Path:
    """Slides both apps serve: two good ones, a truncated one and one read by a buggy reader."""
    folder = tmp_path_factory.mktemp("pipeline") / "slides"
    folder.mkdir()
    shutil.copy(samples_dir[SVS], folder / SVS)
    shutil.copy(samples_dir[GENERIC_TIFF], folder / GENERIC_TIFF)
    shutil.copy(samples_dir[GENERIC_TIFF], folder / BUGGY)
    data = (samples_dir[GENERIC_TIFF]).read_bytes()
    (folder / TRUNCATED).write_bytes(data[: len(data) // 3])
    return folder


@pytest.fixture(scope="module")
def envs(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Env]]:
    """An ``auth=tokens`` app per path (lane, routed) over the same files."""
    registry = ReaderRegistry([BuggyReader, *default_registry().readers])
    with contextlib.ExitStack() as stack:
        envs: dict[str, Env] = {}
        for path in PATHS:
            db = tmp_path_factory.mktemp(path) / "db.sqlite"
            settings: Any = _security_settings(root, db, cors_origins=VIEWER)
            roles = ("pathologist", "lis", "admin")
            tokens = make_tokens(settings, {role: (role, "") for role in roles})
            app = create_app(settings, registry=registry, tile_lane=path == "lane")
            client = stack.enter_context(TestClient(app, raise_server_exceptions=False))
            listed = client.get(
                "/api/slides",
                params={"limit": 100},
                headers={"Authorization": f"Bearer {tokens['pathologist']}"},
            ).json()["items"]
            ids = {item["name"]: item["id"] for item in listed}
            envs[path] = Env(client, app, tokens, ids)
        BuggyReader.armed = True
        try:
            yield envs
        finally:
            BuggyReader.armed = False


# Each case sends its requests to one app and returns the answer to compare, with the status
# it must have. Each uses its own tile address, so the apps' caches start alike for it.
Case = Callable[[Env], Any]


def _miss(env: Env) -> Any:
    response = env.get(env.tile(GENERIC_TIFF, "10/0_0.jpeg"))
    assert response.headers["x-tile-source"] in ("render", "passthrough")
    return response


def _hit(env: Env) -> Any:
    url = env.tile(GENERIC_TIFF, "9/0_0.jpeg")
    env.get(url)
    response = env.get(url)
    assert response.headers["x-tile-source"] == "cache"
    return response


def _not_modified(env: Env) -> Any:
    url = env.tile(SVS, "8/0_0.jpeg")
    etag = env.get(url).headers["etag"]
    return env.get(url, **{"If-None-Match": etag})


def _other_etag(env: Env) -> Any:
    return env.get(env.tile(SVS, "7/0_0.jpeg"), **{"If-None-Match": '"not-this-one"'})


def _png(env: Env) -> Any:
    return env.get(env.tile(GENERIC_TIFF, "8/0_0.png"))


def _cors(env: Env) -> Any:
    response = env.get(env.tile(GENERIC_TIFF, "11/0_0.jpeg"), Origin=VIEWER)
    assert response.headers["access-control-allow-origin"] == VIEWER
    return response


def _cors_not_modified(env: Env) -> Any:
    url = env.tile(SVS, "6/0_0.jpeg")
    etag = env.get(url).headers["etag"]
    response = env.get(url, Origin=VIEWER, **{"If-None-Match": etag})
    assert response.headers["access-control-allow-origin"] == VIEWER
    return response


def _cors_other_origin(env: Env) -> Any:
    response = env.get(env.tile(GENERIC_TIFF, "12/0_0.jpeg"), Origin=OTHER)
    assert "access-control-allow-origin" not in response.headers
    return response


def _cookie_from_another_origin(env: Env) -> Any:
    login = env.client.post(
        "/api/session", headers={"Authorization": f"Bearer {env.tokens['pathologist']}"}
    )
    cookie = f"slideserver_session={login.cookies['slideserver_session']}"
    env.client.cookies.clear()
    response = env.get(env.tile(SVS, "0/0_0.jpeg"), None, Cookie=cookie, Origin=VIEWER)
    assert env.get(env.tile(SVS, "0/0_0.jpeg"), None, Cookie=cookie).status_code == 200
    return response


CASES: dict[str, tuple[int, Case]] = {
    "cache miss": (200, _miss),
    "cache hit": (200, _hit),
    "304 on a matching If-None-Match": (304, _not_modified),
    "200 on another If-None-Match": (200, _other_etag),
    "200 in another format": (200, _png),
    "401 without credentials": (401, lambda env: env.get(env.tile(SVS, "0/0_0.jpeg"), None)),
    "401 with a bad token": (
        401,
        lambda env: env.client.get(
            env.tile(SVS, "0/0_0.jpeg"),
            headers={"Authorization": "Bearer garbage", "X-Request-ID": "pipeline-test"},
        ),
    ),
    "403 for a role without image access": (
        403,
        lambda env: env.get(env.tile(SVS, "0/0_0.jpeg"), "lis"),
    ),
    "404 for an unknown slide": (404, lambda env: env.get(env.tile(UNKNOWN, "0/0_0.jpeg"))),
    "404 for a tile outside the pyramid": (404, lambda env: env.get(env.tile(SVS, "99/0_0.jpeg"))),
    "400 for an unknown format": (400, lambda env: env.get(env.tile(SVS, "8/0_0.gif"))),
    "422 for a truncated file": (422, lambda env: env.get(env.tile(TRUNCATED, "0/0_0.jpeg"))),
    "500 for a reader bug": (500, lambda env: env.get(env.tile(BUGGY, "0/0_0.jpeg"))),
    "200 with CORS headers for an allowed origin": (200, _cors),
    "304 with CORS headers for an allowed origin": (304, _cors_not_modified),
    "200 without CORS headers for another origin": (200, _cors_other_origin),
    "401 with CORS headers for an allowed origin": (
        401,
        lambda env: env.get(env.tile(SVS, "0/0_0.jpeg"), None, Origin=VIEWER),
    ),
    "404 with CORS headers for an allowed origin": (
        404,
        lambda env: env.get(env.tile(UNKNOWN, "0/0_0.jpeg"), Origin=VIEWER),
    ),
    "422 with CORS headers for an allowed origin": (
        422,
        lambda env: env.get(env.tile(TRUNCATED, "0/0_0.jpeg"), Origin=VIEWER),
    ),
    "401 for a session cookie from another origin": (401, _cookie_from_another_origin),
}


def test_the_two_paths_are_two_apps(envs: dict[str, Env]) -> None:
    assert isinstance(envs["lane"].app.tile_lane, TileLane)
    assert envs["routed"].app.tile_lane is None
    assert envs["lane"].ids == envs["routed"].ids  # same files, same IDs: same URLs


class CountingLane:
    """The lane, counting the requests it answers (so a case cannot slip past it)."""

    def __init__(self, lane: TileLane | FramesLane) -> None:
        self.lane = lane
        self.answered = 0

    def match(self, scope: Any) -> bool:
        return self.lane.match(scope)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.answered += 1
        await self.lane(scope, receive, send)


@pytest.mark.parametrize("case", list(CASES))
def test_lane_and_router_answer_alike(
    envs: dict[str, Env], case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    status, send = CASES[case]
    counting = CountingLane(envs["lane"].app.tile_lane)
    monkeypatch.setattr(envs["lane"].app, "tile_lane", counting)
    lane = send(envs["lane"])
    assert counting.answered > 0  # the lane answered, not the router
    routed = send(envs["routed"])
    assert lane.status_code == status, lane.text[:300]
    assert routed.status_code == status, routed.text[:300]
    assert lane.headers.multi_items() == routed.headers.multi_items()
    assert lane.content == routed.content
    assert lane.headers["x-request-id"] == "pipeline-test"


@pytest.mark.parametrize("origin", [VIEWER, OTHER])
def test_a_tile_preflight_is_answered_alike_and_not_by_the_lane(
    envs: dict[str, Env], origin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lane leaves ``OPTIONS`` to the CORS middleware: no authentication, no audit."""
    counting = CountingLane(envs["lane"].app.tile_lane)
    monkeypatch.setattr(envs["lane"].app, "tile_lane", counting)
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    answers = [
        envs[path].client.options(envs[path].tile(SVS, "0/0_0.jpeg"), headers=headers)
        for path in PATHS
    ]
    assert counting.answered == 0
    lane, routed = answers
    assert lane.status_code == routed.status_code == (204 if origin == VIEWER else 403)
    assert lane.headers.multi_items() == routed.headers.multi_items()
    assert lane.content == routed.content


def _tile_reads(env: Env) -> int:
    """Return how many tile reads the audit summary holds for the pathologist token."""
    rows = env.get("/api/audit?kind=tiles&limit=1000", "admin").json()["items"]
    return sum(row["count"] for row in rows if row["subject"] == "token:pathologist")


# (the answer's status, the request) for the audit: cache state does not matter here.
AUDIT_CASES: dict[str, tuple[int, Case]] = {
    "a tile": (200, lambda env: env.get(env.tile(SVS, "9/1_0.jpeg"))),
    "401": (401, lambda env: env.get(env.tile(SVS, "9/1_0.jpeg"), None)),
    "403": (403, lambda env: env.get(env.tile(SVS, "9/1_0.jpeg"), "lis")),
    "404 unknown slide": (404, lambda env: env.get(env.tile(UNKNOWN, "0/0_0.jpeg"))),
    "404 outside the pyramid": (404, lambda env: env.get(env.tile(SVS, "99/0_0.jpeg"))),
    "422": (422, lambda env: env.get(env.tile(TRUNCATED, "0/0_0.jpeg"))),
    "500": (500, lambda env: env.get(env.tile(BUGGY, "0/0_0.jpeg"))),
}


@pytest.mark.parametrize("case", list(AUDIT_CASES))
def test_lane_and_router_count_the_same_tile_reads(envs: dict[str, Env], case: str) -> None:
    """Past the policy, every answer counts as a read, on both paths (refusals do not)."""
    status, send = AUDIT_CASES[case]
    counted = {}
    for path in PATHS:
        before = _tile_reads(envs[path])
        assert send(envs[path]).status_code == status
        counted[path] = _tile_reads(envs[path]) - before
    assert counted["lane"] == counted["routed"]
    assert counted["lane"] == (0 if status in (401, 403) else 1)
