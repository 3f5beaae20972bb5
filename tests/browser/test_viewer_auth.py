"""The viewer with authentication on (``--auth tokens``), in headless Chromium.

A second real server runs with its own database and a pathologist and a researcher token made
with ``slideserver token create`` (tests/browser/conftest.py ``auth_server``). The page signs in
by trading the token for the HttpOnly session cookie; the token must never appear in a URL or in
the page's storage, tiles must load on the cookie, and a researcher must see no patient data.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from slideserver.samples import SAMPLE_MRN, SAMPLE_PATIENT_DISPLAY

pytestmark = pytest.mark.browser

AuthServer = Any  # tests/browser/conftest.py
Console = Any

TILE = re.compile(r"/dz/(?P<id>[^/?]+)_files/(?P<level>\d+)/(?P<col>\d+)_(?P<row>\d+)\.\w+$")
PHI = ("DOE", "JANE", SAMPLE_PATIENT_DISPLAY, SAMPLE_MRN)
HTTP_401 = "Failed to load resource: the server responded with a status of 401 (Unauthorized)"


def expected_401(server: AuthServer, path: str) -> str:
    """The console error Chromium logs for a 401 answer to ``path`` (the only ones allowed)."""
    return f"{HTTP_401} ({server.base}{path})"


def assert_console_clean(console: Console, allowed: set[str]) -> None:
    unexpected = [e for e in console.errors if e not in allowed]
    assert not unexpected, unexpected


def assert_console_clean_but_session_check(console: Console, server: AuthServer) -> None:
    """No console error but the 401 of the first ``/api/session`` check (not signed in yet)."""
    assert_console_clean(console, {expected_401(server, "/api/session")})


def session_cookies(page: Any) -> list[Any]:
    """The page's ``slideserver_session`` cookies (at most one)."""
    return [c for c in page.context.cookies() if c["name"] == "slideserver_session"]


class Traffic:
    """Every request the page makes, and every response."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.requests: list[Any] = []
        self.responses: list[Any] = []
        self.pending = 0
        page.on("request", self._started)
        page.on("response", lambda r: self.responses.append(r))
        page.on("requestfinished", self._ended)
        page.on("requestfailed", self._ended)

    def _started(self, request: Any) -> None:
        self.requests.append(request)
        self.pending += 1

    def _ended(self, request: Any) -> None:
        self.pending -= 1

    def settle(self, quiet_ms: int = 400, timeout_ms: int = 8000) -> None:
        """Wait until no request has been in flight for ``quiet_ms`` (labels, thumbnails...)."""
        quiet = waited = 0
        while quiet < quiet_ms:
            assert waited < timeout_ms, f"{self.pending} requests still in flight"
            self.page.wait_for_timeout(50)
            waited += 50
            quiet = quiet + 50 if self.pending <= 0 else 0

    def urls(self) -> list[str]:
        return [r.url for r in self.requests]

    def tiles(self, status: int = 200) -> list[str]:
        return [
            r.url for r in self.responses if r.status == status and TILE.search(r.url.split("?")[0])
        ]


def sign_in(page: Any, token: str) -> None:
    page.wait_for_selector("form.signin")
    page.fill("#signin-token", token)
    page.click("form.signin button[type=submit]")
    page.wait_for_selector("#session-badge")


def wait_for_first_tile(page: Any) -> None:
    page.wait_for_function(
        "() => window.slideviewer && window.slideviewer.perf.some(r => r.kind === 'open')"
    )


def assert_token_kept_out(page: Any, traffic: Traffic, token: str, base: str) -> None:
    """The token is in no URL, no storage, no readable cookie; only POST /api/session sent it."""
    assert all(token not in url for url in traffic.urls())
    assert token not in page.url
    stored = page.evaluate(
        "() => JSON.stringify([document.cookie, Object.entries(localStorage),"
        " Object.entries(sessionStorage)])"
    )
    assert token not in stored
    assert "slideserver_session" not in stored  # HttpOnly: not visible to scripts
    sent = [(r.method, r.url) for r in traffic.requests if "authorization" in r.headers]
    assert sent == [("POST", base + "/api/session")], sent
    cookie = next(iter(session_cookies(page)))
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert token not in cookie["value"]


def test_unauthenticated_visit_shows_the_sign_in_panel(
    auth_page: Any, auth_server: AuthServer, console: Console
) -> None:
    page = auth_page
    traffic = Traffic(page)
    slide = auth_server.slides[0]
    page.goto("/view/" + slide["id"])
    page.wait_for_selector("form.signin #signin-token")
    page.wait_for_timeout(300)
    text = page.inner_text("body")
    assert "Sign in" in text
    assert page.locator("a.card, .pane, #session-badge").count() == 0
    for s in auth_server.slides:
        assert s["name"] not in text
    # no slide data was even asked for: only the page, its assets and the session check
    api = [u for u in traffic.urls() if "/api/" in u or "/dz/" in u or "/iiif/" in u]
    assert api == [auth_server.base + "/api/session"], api

    # a wrong token is refused in the panel, which stays
    page.fill("#signin-token", "ss_not-a-real-token")
    page.click("form.signin button[type=submit]")
    page.wait_for_selector(".signin-error:not([hidden])")
    assert "not accepted" in page.inner_text(".signin-error")
    assert page.locator("a.card, .pane").count() == 0
    assert not session_cookies(page)
    assert_console_clean_but_session_check(console, auth_server)


def test_pathologist_signs_in_lists_the_samples_and_loads_tiles(
    auth_page: Any, auth_server: AuthServer, console: Console
) -> None:
    page = auth_page
    traffic = Traffic(page)
    token = auth_server.tokens["pathologist"]
    page.goto("/")
    sign_in(page, token)
    page.wait_for_selector("a.card")
    badge = page.inner_text("#session-badge")
    assert "pathologist" in badge.lower() and "browser-pathologist" in badge
    assert page.locator("#session-badge button", has_text="Sign out").count() == 1
    names = page.locator("a.card .name").all_inner_texts()
    assert sorted(names) == sorted(s["name"] for s in auth_server.slides)

    page.locator("a.card").first.click()
    wait_for_first_tile(page)
    page.wait_for_function("() => document.getElementById('app').dataset.ready === 'true'")
    assert traffic.tiles(200), "no Deep Zoom tile answered 200"
    assert not traffic.tiles(401) and not traffic.tiles(403)
    # every API and tile request carried the CSRF header (tiles through OpenSeadragon's XHR)
    for req in traffic.requests:
        path = req.url.removeprefix(auth_server.base)
        if path.startswith(("/api/", "/dz/")):
            assert req.headers.get("x-requested-with") == "slideserver", req.url
    assert_token_kept_out(page, traffic, token, auth_server.base)
    assert_console_clean_but_session_check(console, auth_server)


def test_sign_in_continues_to_the_slide_and_sign_out_returns_to_the_panel(
    auth_page: Any, auth_server: AuthServer, console: Console
) -> None:
    page = auth_page
    traffic = Traffic(page)
    slide = auth_server.slides[-1]
    path = "/view/" + slide["id"]
    page.goto(path)
    sign_in(page, auth_server.tokens["pathologist"])
    wait_for_first_tile(page)
    assert page.url.split("?")[0] == auth_server.base + path
    assert any(f"/dz/{slide['id']}_files/" in u for u in traffic.tiles(200))
    tile = traffic.tiles(200)[0]
    traffic.settle()

    page.click("#session-badge button")
    page.wait_for_selector("form.signin")
    assert "signed out" in page.inner_text("form.signin").lower()
    assert page.locator(".pane, a.card, #session-badge").count() == 0
    assert not session_cookies(page)
    # with this browser's cookies (none now), the API and the tiles answer 401
    for url in ("/api/session", "/api/slides", f"/api/slides/{slide['id']}", tile):
        resp = page.request.get(url)
        assert resp.status == 401, (url, resp.status)
    # the next sign-in starts clean: the panel asks again
    page.reload()
    page.wait_for_selector("form.signin #signin-token")
    assert "signed out" not in page.inner_text("form.signin").lower()
    assert_console_clean_but_session_check(console, auth_server)


def test_researcher_sees_slides_but_no_patient_data(
    auth_page: Any, auth_server: AuthServer, console: Console
) -> None:
    page = auth_page
    traffic = Traffic(page)
    page.goto("/")
    sign_in(page, auth_server.tokens["researcher"])
    page.wait_for_selector("a.card")
    assert "researcher" in page.inner_text("#session-badge").lower()
    assert page.locator("a.card").count() == len(auth_server.slides)
    page.wait_for_timeout(500)  # thumbnails
    visible = [page.inner_text("body")]
    html = [page.content()]
    # the case view is not for researchers: a clear message, nothing broken
    page.goto("/case/S24-05678")
    page.locator(".status", has_text="not available to the researcher role").wait_for()
    visible.append(page.inner_text("body"))
    html.append(page.content())
    # every slide opens, with its metadata panel, and still no patient data
    for slide in auth_server.slides:
        page.goto("/view/" + slide["id"])
        wait_for_first_tile(page)
        page.wait_for_selector("aside.panel dl.meta")
        visible += [page.inner_text("body"), page.title()]
        html.append(page.content())
    for text in visible + html:
        for phi in PHI:
            assert phi not in text
    for text in visible:  # no placeholder leaked from a missing field
        assert not re.search(r"\b(undefined|null|NaN)\b", text), text
    assert traffic.tiles(200)
    # no label or macro was asked for (the API lists none), and nothing answered 404
    assert not [u for u in traffic.urls() if "/associated/" in u]
    assert not [u for u in traffic.urls() if "/api/cases/" in u]
    bad = [(r.url, r.status) for r in traffic.responses if r.status >= 400]
    assert bad == [(auth_server.base + "/api/session", 401)], bad
    assert_console_clean_but_session_check(console, auth_server)


def test_open_mode_shows_the_demo_badge_and_no_sign_in(
    page: Any, server: Any, console: Console
) -> None:
    who = server.get_json("/api/session")
    assert who["via"] == "open"
    page.goto("/")
    page.wait_for_selector("a.card")
    assert page.inner_text("#session-badge").strip() == "open demo mode"
    assert page.locator("form.signin").count() == 0
    assert page.locator("#session-badge button").count() == 0
    assert not console.errors, console.errors


def test_a_later_401_returns_to_the_sign_in_panel(
    auth_page: Any, auth_server: AuthServer, console: Console
) -> None:
    page = auth_page
    traffic = Traffic(page)
    slide = auth_server.slides[0]
    page.goto("/view/" + slide["id"])
    sign_in(page, auth_server.tokens["pathologist"])
    wait_for_first_tile(page)
    page.wait_for_function("() => document.getElementById('app').dataset.ready === 'true'")
    traffic.settle()  # label, macro, strip thumbnails: all in
    # the session ends behind the page's back (expired, revoked): the next tiles answer 401
    page.context.clear_cookies()
    page.keyboard.press("5")  # 20x: tiles of deeper levels
    page.wait_for_selector("form.signin #signin-token")
    assert "session has ended" in page.inner_text("form.signin")
    assert page.locator(".pane").count() == 0
    tile_401 = re.compile(
        re.escape(HTTP_401)
        + r" \("
        + re.escape(f"{auth_server.base}/dz/{slide['id']}_files/")
        + r"\d+/\d+_\d+\.\w+\)$"
    )
    # OpenSeadragon reports each tile it could not load ("Tile %s failed to load: ...")
    tile_failed = "Tile %s failed to load: %s - error: %s "
    expected = {expected_401(auth_server, "/api/session")}
    expected |= {e for e in console.errors if tile_401.match(e)}
    expected |= {
        e
        for e in console.errors
        if e.startswith(tile_failed) and f" /dz/{slide['id']}_files/" in e and "XHR error" in e
    }
    assert_console_clean(console, expected)
    # signing in again reloads the same address, with the new cookie
    sign_in(page, auth_server.tokens["pathologist"])
    wait_for_first_tile(page)
    assert page.url.split("?")[0] == f"{auth_server.base}/view/{slide['id']}"
