"""Hostile inputs on every route, from every caller: malformed IDs, query strings, headers and
bodies, unlisted methods, and raw malformed HTTP on a live server (issue #11's probe).

Whatever the input, the server answers below 500, gives refused callers nothing from a protected
route, shows no PHI to researchers, and audits every PHI answer (:func:`assert_safe`); where the
right answer is known (413 over the size cap, 400 for NUL bytes or JSON nested too deep, 405 for
an unlisted method) it is asserted exactly.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from slideserver.api.routes.lis import MAX_BODY
from tests.live_server import live_server
from tests.security_probe import (
    BODIES,
    COOKIE,
    ROLES,
    Endpoint,
    ProbeContext,
    assert_safe,
    endpoints,
    open_probe,
)

ENDPOINTS = endpoints()
PROBED = [e for e in ENDPOINTS if e.method != "HEAD"]
"""HEAD runs the GET handler (the route matrix sends it to every route); skipped here for time."""
WITH_PARAMS = [e for e in PROBED if e.params or e.mount]
WRITES = [e for e in PROBED if e.writes]
BODY_WRITES = [e for e in WRITES if (e.method, e.template) in BODIES]
_request_ids = itertools.count()

pytestmark = pytest.mark.slow

HOSTILE_CALLERS = (*ROLES, COOKIE, "forged-jwt")
"""Who sends the hostile inputs: every role, the cookie session, and one refused caller (all
refused callers stop at the same door; the route matrix sends each of them everywhere)."""

HOSTILE_IDS: dict[str, str] = {
    "very-long": "A" * 5000,
    "dot-dot-slash-escaped": "..%2F..%2F..%2Fetc%2Fpasswd",
    "dot-dot-slash-double-escaped": "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "double-encoded": "%252e%252e%252f",
    "unicode": "évil☃漢字\u202e",
    "nul": "%00",
    "nul-inside": "S24%0001234",
    "invalid-utf8": "%ff%fe",
    "lone-percent": "%zz%",
    "windows-path": "..\\..\\windows\\win.ini",
    "markup": "<script>alert(1)</script>",
    "sql": "' OR '1'='1",
}
"""Malformed path parameter values, sent raw (percent escapes stay as written)."""

HOSTILE_QUERIES: dict[str, str] = {
    "nul": "q=%00&accession=%00",
    "invalid-utf8": "q=%ff%fe&accession=%c3%28&patient=%80",
    "oversize": "q=" + "x" * 60_000,
    "many-params": "&".join(f"p{i}=v" for i in range(2000)),
    "huge-numbers": "limit=99999999999999999999999&max=-1&offset=-5&cursor=%%%",
    "repeated": "limit=1&limit=2&limit=abc&accession=a&accession=b",
    "unicode": "q=%E2%80%AE%F0%9F%92%A9&identifier=%E6%BC%A2",
}
"""Query strings appended to every route's own query."""

HOSTILE_HEADERS: dict[str, dict[str, str | bytes]] = {
    "bearer-invalid-utf8": {"Authorization": b"Bearer \xff\xfe\xfd"},
    "bearer-nul": {"Authorization": b"Bearer ss_\x00abc"},
    "bearer-huge": {"Authorization": "Bearer ss_" + "A" * 20_000},
    "cookie-garbage": {"Cookie": "slideserver_session=garbage.garbage.garbage"},
    "cookie-invalid-utf8": {"Cookie": b"slideserver_session=\xff\xfe; other=\x00"},
    "request-id-hostile": {"X-Request-ID": b"../../\xff\x00<script>"},
    "accept-garbage": {"Accept": "image/*;q=zz, */*;;;", "Accept-Encoding": b"\xff"},
    "content-type-garbage": {"Content-Type": b"application/json; charset=\xff\x00"},
    "origin-null": {"Origin": "null", "X-Requested-With": "XMLHttpRequest"},
    "range-garbage": {"Range": "bytes=-99999999999999999999-", "If-None-Match": b'"\x00"'},
}
"""Header sets added to each caller's credentials (replacing them when they name the same
header)."""

NESTING = 100_000
DEEP_JSON = b"[" * NESTING + b"]" * NESTING
DEEP_OBJECT = b'{"a":' * NESTING + b"1" + b"}" * NESTING

HOSTILE_BODIES: dict[str, tuple[bytes, str]] = {
    "deep-array": (DEEP_JSON, "application/json"),
    "deep-object": (DEEP_OBJECT, "application/fhir+json"),
    "text-plain": (b'{"accession": "X"}', "text/plain"),
    "wrong-media-json-as-form": (b"a=b&c=d", "application/x-www-form-urlencoded"),
    "nul-bytes": (b'{"accession": "S24\x00-1", "patient\x00": 1}', "application/json"),
    "invalid-utf8": (b'{"accession": "\xff\xfe\xc3\x28"}', "application/json"),
    "utf16": ('{"accession": "X"}'.encode("utf-16"), "application/json"),
    "empty": (b"", "application/json"),
    "json-scalar": (b"null", "application/json"),
    "json-array": (b"[1, 2, 3]", "application/fhir+json"),
    "huge-number": (b'{"accession": 1' + b"0" * 10_000 + b"}", "application/json"),
    "hl7-garbage": (b"MSH|\xff\x00|\r" * 1000, "application/hl7-v2"),
}
"""Bodies sent to every write route (each route refuses what it cannot parse)."""

DEPTH_LIMIT_CASES = ("deep-array", "deep-object")
"""Cases that need the JSON depth limit of branch security-b (400 instead of a 500)."""

ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "TRACE", "PROPFIND", "FOO")


@pytest.fixture(scope="module")
def probe(samples_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProbeContext]:
    yield from open_probe(samples_root, tmp_path_factory.mktemp("hostile"))


def _send(
    probe: ProbeContext,
    endpoint: Endpoint,
    caller: str,
    url: str,
    *,
    method: str | None = None,
    content: bytes | None = None,
    headers: Mapping[str, str | bytes] | None = None,
) -> httpx.Response:
    """Send one request as ``caller`` and check :func:`assert_safe`; return the answer."""
    request_id = f"hostile-{next(_request_ids)}"
    all_headers: dict[str, str | bytes] = {"X-Request-ID": request_id, **(headers or {})}
    response: httpx.Response = probe.request(
        caller,
        method or endpoint.method,
        url,
        content=content,
        headers=all_headers,
    )
    assert_safe(probe, endpoint, caller, response, request_id)
    return response


def _with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


@pytest.mark.parametrize("value", HOSTILE_IDS.values(), ids=HOSTILE_IDS.keys())
@pytest.mark.parametrize("endpoint", WITH_PARAMS, ids=str)
def test_malformed_path_parameters(probe: ProbeContext, endpoint: Endpoint, value: str) -> None:
    for caller in HOSTILE_CALLERS:
        body, media_type = BODIES.get((endpoint.method, endpoint.template), (None, ""))
        headers = {"Content-Type": media_type} if media_type else {}
        for param in endpoint.params or ("",):
            if endpoint.mount:
                url = f"{endpoint.template}/{value}"
            else:
                url = probe.url(endpoint, **{param: value})
            response = _send(probe, endpoint, caller, url, content=body, headers=headers)
            if "%00" in value:
                assert response.status_code == 400, (caller, url, response.status_code)


@pytest.mark.parametrize("query", HOSTILE_QUERIES.values(), ids=HOSTILE_QUERIES.keys())
@pytest.mark.parametrize("endpoint", PROBED, ids=str)
def test_hostile_query_strings(probe: ProbeContext, endpoint: Endpoint, query: str) -> None:
    body, media_type = BODIES.get((endpoint.method, endpoint.template), (None, ""))
    headers = {"Content-Type": media_type} if media_type else {}
    url = _with_query(probe.url(endpoint), query)
    for caller in HOSTILE_CALLERS:
        response = _send(probe, endpoint, caller, url, content=body, headers=headers)
        if "%00" in query:
            assert response.status_code == 400, (caller, url, response.status_code)


@pytest.mark.parametrize("extra", HOSTILE_HEADERS.values(), ids=HOSTILE_HEADERS.keys())
@pytest.mark.parametrize("endpoint", PROBED, ids=str)
def test_hostile_headers(
    probe: ProbeContext, endpoint: Endpoint, extra: dict[str, str | bytes]
) -> None:
    body, media_type = BODIES.get((endpoint.method, endpoint.template), (None, ""))
    for caller in HOSTILE_CALLERS:
        headers: dict[str, str | bytes] = {"Content-Type": media_type} if media_type else {}
        headers.update(extra)
        response = _send(
            probe, endpoint, caller, probe.url(endpoint), content=body, headers=headers
        )
        if "Authorization" in extra and not endpoint.rule.public:
            assert response.status_code == 401, (caller, str(endpoint), response.status_code)


@pytest.mark.parametrize(
    ("body", "media_type"), HOSTILE_BODIES.values(), ids=list(HOSTILE_BODIES.keys())
)
@pytest.mark.parametrize("endpoint", WRITES, ids=str)
def test_hostile_bodies(
    probe: ProbeContext, endpoint: Endpoint, body: bytes, media_type: str
) -> None:
    for caller in HOSTILE_CALLERS:
        response = _send(
            probe,
            endpoint,
            caller,
            probe.url(endpoint),
            content=body,
            headers={"Content-Type": media_type},
        )
        admitted = caller in ("admin", "lis")
        if admitted and endpoint in BODY_WRITES and body in (DEEP_JSON, DEEP_OBJECT):
            assert response.status_code == 400, (caller, str(endpoint), response.text[:300])
        if admitted and endpoint in BODY_WRITES:
            assert not 200 <= response.status_code < 300 or media_type.startswith("text/"), (
                caller,
                str(endpoint),
                response.text[:300],
            )


def _chunks(size: int) -> Iterator[bytes]:
    block = b"x" * 65536
    while size > 0:
        yield block[:size]
        size -= len(block)


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "streamed"])
@pytest.mark.parametrize("endpoint", BODY_WRITES, ids=str)
def test_bodies_over_the_cap_get_413(
    probe: ProbeContext, endpoint: Endpoint, declared: bool
) -> None:
    for caller in ("admin", "lis"):
        content = b"x" * (MAX_BODY + 1)
        request_id = f"hostile-{next(_request_ids)}"
        headers = {"X-Request-ID": request_id, **probe.headers(caller)}
        media_type = BODIES.get((endpoint.method, endpoint.template), (None, ""))[1]
        if media_type:  # a route that checks the media type first answers 415 otherwise
            headers["Content-Type"] = media_type
        if declared:
            response = probe.client.post(probe.url(endpoint), content=content, headers=headers)
        else:
            response = probe.client.post(
                probe.url(endpoint), content=_chunks(MAX_BODY + 1), headers=headers
            )
        probe.client.cookies.clear()
        assert response.status_code == 413, (caller, str(endpoint), response.text[:200])


@pytest.mark.parametrize("endpoint", sorted({e.template for e in ENDPOINTS}))
def test_unlisted_methods_get_405_for_everyone(probe: ProbeContext, endpoint: str) -> None:
    allowed = {e.method for e in ENDPOINTS if e.template == endpoint}
    listed = next(e for e in ENDPOINTS if e.template == endpoint)
    for method in ALL_METHODS:
        if method in allowed:
            continue
        for caller in HOSTILE_CALLERS:
            response = _send(probe, listed, caller, probe.url(listed), method=method)
            assert response.status_code == 405, (caller, method, endpoint, response.status_code)


@pytest.mark.parametrize("endpoint", sorted({e.template for e in ENDPOINTS}))
def test_options_on_every_route_never_fails(probe: ProbeContext, endpoint: str) -> None:
    listed = next(e for e in ENDPOINTS if e.template == endpoint)
    preflight = {
        "Origin": "https://evil.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, x-requested-with",
    }
    for caller in HOSTILE_CALLERS:
        for headers in ({}, preflight):
            response = _send(
                probe,
                listed,
                caller,
                probe.url(listed),
                method="OPTIONS",
                headers=dict(headers),
            )
            assert 200 <= response.status_code < 500, (caller, endpoint, response.status_code)
            origin = response.headers.get("access-control-allow-origin")
            assert origin not in ("*", "https://evil.example") or not response.headers.get(
                "access-control-allow-credentials"
            ), (caller, endpoint, dict(response.headers))


# --- raw malformed HTTP on a live server ---

RAW_REQUESTS: dict[str, bytes] = {
    "garbage-line": b"GARBAGE\r\n\r\n",
    "binary-line": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    "bad-version": b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
    "no-version": b"GET /api/audit\r\n\r\n",
    "space-in-target": b"GET /api/slides /x HTTP/1.1\r\nHost: x\r\n\r\n",
    "nul-in-target": b"GET /api/slides/\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    "invalid-utf8-target": b"GET /api/slides/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    "absolute-form": b"GET http://evil.example/api/audit HTTP/1.1\r\nHost: x\r\n\r\n",
    "nul-in-header-name": b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad\x00Name: v\r\n\r\n",
    "nul-in-header-value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "invalid-header-bytes": (
        b"GET /api/slides HTTP/1.1\r\nHost: x\r\nAuthorization: \xff\xfe\r\n\r\n"
    ),
    "space-before-colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A : v\r\n\r\n",
    "obs-fold": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: v\r\n  folded\r\n\r\n",
    "bare-lf": b"GET /healthz HTTP/1.1\nHost: x\n\n",
    "huge-header": b"GET /api/audit HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 200_000 + b"\r\n\r\n",
    "cl-and-te": (
        b"POST /api/lis/cases HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/audit HTTP/1.1\r\nHost: x\r\n\r\n"
    ),
    "te-and-cl": (
        b"POST /api/lis/cases HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 40\r\n\r\n0\r\n\r\nGET /api/audit HTTP/1.1\r\nHost: x\r\n\r\n"
    ),
    "two-content-lengths": (
        b"POST /api/lis/cases HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        b"Content-Length: 30\r\n\r\n{}"
    ),
    "te-obfuscated": (
        b"POST /api/lis/cases HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"
    ),
    "bad-chunk-size": (
        b"POST /api/lis/cases HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nabc\r\n0\r\n\r\n"
    ),
    "negative-content-length": (
        b"POST /api/lis/cases HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"
    ),
    "huge-content-length": (
        b"POST /api/lis/cases HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n"
    ),
}
"""Malformed HTTP/1.1, each sent on its own connection."""


def _exchange(host: str, port: int, payload: bytes) -> bytes:
    """Send ``payload``, half-close, and return everything answered until the server closes."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.settimeout(10)
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return b""
        answer = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                return answer
            if not chunk:
                return answer
            answer += chunk


def _statuses(answer: bytes) -> list[int]:
    """The status codes of every answer on a connection, in order."""
    return [
        int(line.split(b" ")[1])
        for line in answer.split(b"\r\n")
        if line.startswith(b"HTTP/1.") and len(line.split(b" ")) > 1
    ]


def test_malformed_http_gets_4xx_or_a_closed_connection(samples_root: Path, tmp_path: Path) -> None:
    """One live server, every malformed request on its own connection; it keeps serving."""
    db = f"sqlite:///{tmp_path / 'catalog.db'}"
    failures: dict[str, list[int]] = {}
    with live_server([samples_root], "--auth", "tokens", "--database-url", db) as base:
        host, port = base.removeprefix("http://").split(":")
        for name, payload in RAW_REQUESTS.items():
            statuses = _statuses(_exchange(host, int(port), payload))
            # A smuggled second request must not be answered: the first must end the exchange.
            if statuses and (len(statuses) > 1 or not 400 <= statuses[0] < 500):
                failures[name] = statuses
            assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200, name
        assert httpx.get(f"{base}/api/slides", timeout=10).status_code == 401
    assert not failures, failures


def test_the_roles_of_the_probe_are_the_policy_roles() -> None:
    from slideserver.security.principals import ROLES as POLICY_ROLES

    assert set(ROLES) == set(POLICY_ROLES)
