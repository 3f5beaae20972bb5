"""Cross-origin access to the image APIs: what a viewer on another origin may do, and what not.

A viewer served from another origin (Mirador, Slim, a lab's own page) fetches info.json, IIIF
images, ``.dzi`` and Deep Zoom tiles with a bearer token: its browser first sends a preflight
(``OPTIONS``, no credentials), then the GET with ``Authorization``. Only the origins configured
(``cors_origins``) are answered, never with credentials, and a session cookie never
authenticates a request from another origin.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from slideserver.api.app import create_app
from slideserver.api.cors import (
    ALLOW_HEADERS,
    CorsConfigError,
    cors_templates,
    normalize_origin,
    parse_origins,
)
from slideserver.api.policy import POLICY
from slideserver.cli import main
from slideserver.settings import Settings
from tests.conftest import _security_settings, make_tokens
from tests.helpers import SVS, assert_error, slide_id
from tests.live_server import live_server
from tests.realworld import copy_slides

VIEWER = "https://viewer.example.org"
"""The origin configured as allowed."""
OTHER = "https://evil.example.net"
"""An origin nobody configured."""
SMALL = "small.svs"
SAME = "http://testserver"
"""The test client's own origin (its Host header is ``testserver``)."""

IMAGE_URLS = {
    "/iiif/3/{slide_id}": "/iiif/3/{sid}",
    "/iiif/3/{slide_id}/info.json": "/iiif/3/{sid}/info.json",
    "/iiif/3/{slide_id}/{region}/{size}/{rotation}/{quality}.{fmt}": (
        "/iiif/3/{sid}/0,0,512,512/256,/0/default.jpg"
    ),
    "/dz/{slide_id}.dzi": "/dz/{sid}.dzi",
    "/dz/{slide_id}_files/{level}/{col}_{row}.{fmt}": "/dz/{sid}_files/8/0_0.jpeg",
}
"""A concrete URL per route open to other origins (the policy rows marked ``cors``)."""


@dataclass
class Env:
    client: TestClient
    tokens: dict[str, str]
    sid: str

    def url(self, template: str) -> str:
        return IMAGE_URLS[template].format(sid=self.sid)

    def bearer(self, role: str = "pathologist", **headers: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}", **headers}


@contextlib.contextmanager
def token_app(
    samples_root: Path, db: Path, **settings: Any
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    config: Any = _security_settings(samples_root, db, **settings)
    tokens = make_tokens(config, {"pathologist": ("pathologist", ""), "lis": ("lis", "")})
    with TestClient(create_app(config), raise_server_exceptions=False) as client:
        yield client, tokens


@pytest.fixture(scope="module")
def env(samples_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """An ``auth=tokens`` app that lets :data:`VIEWER` use the image APIs."""
    db = tmp_path_factory.mktemp("cors") / "db.sqlite"
    with token_app(samples_root, db, cors_origins=f"{VIEWER}/") as (client, tokens):
        sid = slide_id(_Authorized(client, tokens["pathologist"]), SVS)
        yield Env(client, tokens, sid)


@pytest.fixture(scope="module")
def default_env(samples_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """An ``auth=tokens`` app with the default CORS setting."""
    db = tmp_path_factory.mktemp("cors-default") / "db.sqlite"
    with token_app(samples_root, db) as (client, tokens):
        sid = slide_id(_Authorized(client, tokens["pathologist"]), SVS)
        yield Env(client, tokens, sid)


class _Authorized:
    """A client sending a bearer token with every GET (for :func:`slide_id`)."""

    def __init__(self, client: TestClient, token: str) -> None:
        self.client = client
        self.token = token

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        response: httpx.Response = self.client.get(url, headers=headers, **kwargs)
        return response


def preflight(client: TestClient, url: str, origin: str, **headers: str) -> httpx.Response:
    sent = {
        "Origin": origin,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
        **headers,
    }
    response: httpx.Response = client.options(url, headers=sent)
    return response


def assert_no_credentials(response: httpx.Response) -> None:
    assert "access-control-allow-credentials" not in response.headers


# --- the policy table -----------------------------------------------------------------------


def test_the_routes_open_to_other_origins_are_the_image_apis() -> None:
    assert set(cors_templates()) == set(IMAGE_URLS)


def test_routes_open_to_other_origins_still_need_an_image_role() -> None:
    for template in cors_templates():
        rule = POLICY[template]
        assert not rule.public and not rule.phi
        assert "pathologist" in rule.roles_for("GET") and "lis" not in rule.roles_for("GET")


# --- preflight ------------------------------------------------------------------------------


@pytest.mark.parametrize("template", list(IMAGE_URLS))
def test_preflight_from_an_allowed_origin_is_answered_without_credentials(
    env: Env, template: str
) -> None:
    response = preflight(env.client, env.url(template), VIEWER)
    assert response.status_code == 204, response.text
    assert response.headers["access-control-allow-origin"] == VIEWER
    assert response.headers["access-control-allow-methods"] == "GET, HEAD, OPTIONS"
    allowed = {
        h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
    }
    assert {"authorization", "accept", "x-request-id"} <= allowed
    assert int(response.headers["access-control-max-age"]) > 0
    assert "Origin" in response.headers["vary"]
    assert_no_credentials(response)


@pytest.mark.parametrize("template", list(IMAGE_URLS))
def test_preflight_opens_nothing_get_without_a_token_is_still_401(env: Env, template: str) -> None:
    response = env.client.get(env.url(template), headers={"Origin": VIEWER})
    assert_error(response, 401, "unauthorized")
    assert response.headers["access-control-allow-origin"] == VIEWER  # the viewer reads the 401


@pytest.mark.parametrize("template", list(IMAGE_URLS))
def test_preflight_from_an_origin_not_configured_is_refused(env: Env, template: str) -> None:
    response = preflight(env.client, env.url(template), OTHER)
    assert_error(response, 403, "cors_refused")
    assert "access-control-allow-origin" not in response.headers


def test_preflight_for_the_csrf_header_is_refused(env: Env) -> None:
    """``X-Requested-With`` proves a cookie request same-origin: no other origin may send it."""
    url = env.url("/iiif/3/{slide_id}/info.json")
    response = preflight(
        env.client,
        url,
        VIEWER,
        **{"Access-Control-Request-Headers": "authorization,x-requested-with"},
    )
    assert_error(response, 403, "cors_refused")
    assert "x-requested-with" in response.json()["detail"]
    assert "x-requested-with" not in {h.lower() for h in ALLOW_HEADERS}


def test_preflight_for_a_write_is_refused(env: Env) -> None:
    url = env.url("/iiif/3/{slide_id}/info.json")
    response = preflight(env.client, url, VIEWER, **{"Access-Control-Request-Method": "DELETE"})
    assert_error(response, 403, "cors_refused")


def test_preflight_on_other_routes_is_not_answered(env: Env) -> None:
    for url in ("/api/slides", f"/api/slides/{env.sid}", "/api/session"):
        response = preflight(env.client, url, VIEWER)
        assert response.status_code == 405, url
        assert "access-control-allow-origin" not in response.headers


# --- answers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("template", list(IMAGE_URLS))
def test_an_allowed_origin_reads_the_image_apis_with_a_bearer_token(
    env: Env, template: str
) -> None:
    response = env.client.get(
        env.url(template), headers=env.bearer(Origin=VIEWER), follow_redirects=False
    )
    assert response.status_code in (200, 303), response.text
    assert response.headers["access-control-allow-origin"] == VIEWER
    assert "Origin" in response.headers["vary"]
    assert "ETag" in response.headers.get("access-control-expose-headers", "")
    assert_no_credentials(response)


@pytest.mark.parametrize("template", list(IMAGE_URLS))
def test_another_origin_gets_the_answer_without_cors_headers(env: Env, template: str) -> None:
    response = env.client.get(
        env.url(template), headers=env.bearer(Origin=OTHER), follow_redirects=False
    )
    assert "access-control-allow-origin" not in response.headers
    assert "Origin" in response.headers["vary"]  # caches must not mix the two answers


def test_errors_on_the_image_apis_carry_the_cors_headers(env: Env) -> None:
    response = env.client.get(
        "/iiif/3/aaaaaaaaaaaaaaaa/info.json", headers=env.bearer(Origin=VIEWER)
    )
    assert_error(response, 404)
    assert response.headers["access-control-allow-origin"] == VIEWER


def test_other_routes_are_not_readable_from_other_origins(env: Env) -> None:
    for url in ("/api/slides", f"/api/slides/{env.sid}", f"/api/slides/{env.sid}/thumbnail"):
        response = env.client.get(url, headers=env.bearer(Origin=VIEWER))
        assert response.status_code == 200, url
        assert "access-control-allow-origin" not in response.headers, url


def test_with_tokens_no_origin_is_allowed_by_default(default_env: Env) -> None:
    url = default_env.url("/iiif/3/{slide_id}/info.json")
    assert_error(preflight(default_env.client, url, VIEWER), 403, "cors_refused")
    response = default_env.client.get(url, headers=default_env.bearer(Origin=VIEWER))
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    assert "cors" not in response.json()["extraFeatures"]


def test_open_mode_allows_any_origin_by_default(client: Any) -> None:
    sid = slide_id(client, SVS)
    for url in (f"/iiif/3/{sid}/info.json", f"/dz/{sid}_files/8/0_0.jpeg"):
        answer = client.get(url, headers={"Origin": OTHER})
        assert answer.headers["access-control-allow-origin"] == "*"
        assert "Origin" not in answer.headers.get("vary", "")  # the same for every origin
        assert_no_credentials(answer)
        response = preflight(client, url, OTHER)
        assert response.status_code == 204
        assert response.headers["access-control-allow-origin"] == "*"
    assert "cors" in client.get(f"/iiif/3/{sid}/info.json").json()["extraFeatures"]


# --- session cookies ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cookie(env: Env) -> str:
    """A session cookie opened with the pathologist's token."""
    login = env.client.post("/api/session", headers=env.bearer())
    assert login.status_code == 200, login.text
    value = login.cookies["slideserver_session"]
    env.client.cookies.clear()  # each test sends it explicitly
    return str(value)


def _with_cookie(env: Env, cookie: str, url: str, **headers: str) -> httpx.Response:
    response: httpx.Response = env.client.get(
        url, headers={"Cookie": f"slideserver_session={cookie}", **headers}
    )
    return response


@pytest.mark.parametrize(
    "template", ["/iiif/3/{slide_id}/info.json", "/dz/{slide_id}_files/{level}/{col}_{row}.{fmt}"]
)
def test_a_session_cookie_authenticates_same_origin_requests(
    env: Env, cookie: str, template: str
) -> None:
    assert _with_cookie(env, cookie, env.url(template)).status_code == 200
    assert _with_cookie(env, cookie, env.url(template), Origin=SAME).status_code == 200


@pytest.mark.parametrize(
    "template", ["/iiif/3/{slide_id}/info.json", "/dz/{slide_id}_files/{level}/{col}_{row}.{fmt}"]
)
@pytest.mark.parametrize(
    "headers",
    [{"Origin": VIEWER}, {"Origin": OTHER}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}],
    ids=["allowed origin", "other origin", "opaque origin", "sec-fetch-site"],
)
def test_a_session_cookie_never_authenticates_a_request_from_another_origin(
    env: Env, cookie: str, template: str, headers: dict[str, str]
) -> None:
    response = _with_cookie(env, cookie, env.url(template), **headers)
    assert_error(response, 401, "unauthorized")
    assert "other origins" in response.json()["detail"]
    assert_no_credentials(response)


def test_a_bearer_token_from_another_origin_is_unaffected_by_a_cookie(
    env: Env, cookie: str
) -> None:
    url = env.url("/iiif/3/{slide_id}/info.json")
    headers = env.bearer(Origin=VIEWER, Cookie=f"slideserver_session={cookie}")
    assert env.client.get(url, headers=headers).status_code == 200


# --- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "auth", "expected"),
    [
        ("", "open", None),
        ("", "tokens", frozenset()),
        ("", "oidc", frozenset()),
        ("*", "tokens", None),
        ("none", "open", frozenset()),
        (
            "https://A.example.org/, http://b.example.org:8080,https://c.example.org:443",
            "tokens",
            frozenset(
                {"https://a.example.org", "http://b.example.org:8080", "https://c.example.org"}
            ),
        ),
    ],
)
def test_cors_origins_setting(value: str, auth: str, expected: frozenset[str] | None) -> None:
    assert parse_origins(value, auth) == expected


@pytest.mark.parametrize(
    "value",
    [
        "viewer.example.org",
        "ftp://viewer.example.org",
        "https://viewer.example.org/path",
        "https://",
    ],
)
def test_cors_origins_must_be_origins(value: str) -> None:
    with pytest.raises(CorsConfigError):
        normalize_origin(value)


def test_star_cannot_hide_in_a_list() -> None:
    with pytest.raises(CorsConfigError):
        parse_origins(f"{VIEWER},*", "tokens")


def test_cors_origins_from_the_environment() -> None:
    settings = Settings.from_env({"SLIDESERVER_CORS_ORIGINS": VIEWER})
    assert settings.cors_origins == VIEWER


def test_serve_refuses_a_cors_origin_that_is_not_one(
    samples_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["serve", str(samples_root), "--cors-origins", "https://viewer.example.org/x"])
    assert code == 2
    assert "--cors-origins" in capsys.readouterr().err


def test_serve_passes_cors_origins_to_the_server(samples_root: Path, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    flags = ("--database-url", db, "--cors-origins", VIEWER)
    with live_server([samples_root], *flags, scrub_env=True) as base:
        sid = slide_id(httpx.Client(base_url=base), SVS)
        response = preflight_live(f"{base}/iiif/3/{sid}/info.json", VIEWER)
        assert response.headers["access-control-allow-origin"] == VIEWER
        refused = preflight_live(f"{base}/iiif/3/{sid}/info.json", OTHER)
        assert refused.status_code == 403


def preflight_live(url: str, origin: str) -> httpx.Response:
    headers = {"Origin": origin, "Access-Control-Request-Method": "GET"}
    return httpx.options(url, headers=headers, timeout=30)


# --- the IIIF validator ------------------------------------------------------------------------

VALIDATOR_TESTS = ("cors", "jsonld", "info_json", "baseurl_redirect", "linkheader_canonical")
"""The IIIF validator's HTTP-feature tests (the others check pixels of its own test image)."""


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A live ``auth=open`` server (the validator sends no credentials) over openslide-python's
    16 x 16 ``small.svs``, so whole-image requests are quick."""
    root = copy_slides({"openslide-python/small.svs": SMALL}, tmp_path_factory.mktemp("small"))
    db = f"sqlite:///{root / 'db.sqlite'}"
    with live_server([root], "--database-url", db, scrub_env=True) as base:
        yield base


@pytest.mark.parametrize("name", VALIDATOR_TESTS)
def test_iiif_validator_http_features(open_server: str, name: str) -> None:
    from iiif_validator.validator import ImageAPI, TestSuite, ValidationInfo

    sid = slide_id(httpx.Client(base_url=open_server), SMALL)
    info = ValidationInfo()
    server = open_server.removeprefix("http://")
    result = ImageAPI(sid, server, "iiif/3", "http", "", "3.0", debug=False)
    TestSuite(info).run_test(name, result)
    failure = result.exception
    assert failure is None, (failure.type, failure.got, failure.expected, failure.message)
    assert result.tests  # it checked something
