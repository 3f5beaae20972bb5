"""``slideserver serve`` speaks HTTP/1.1 through the coalescing protocol: one write per answer,
and still every byte in order, on kept-alive and pipelined connections, for HEAD, 304 and
``Expect: 100-continue``. Real server process, raw sockets."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import SVS
from tests.live_server import live_server


@pytest.fixture(scope="module")
def server(
    samples_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """A live server on the samples, with an ``lis`` token (open mode honours presented tokens)."""
    db = f"sqlite:///{tmp_path_factory.mktemp('protocol') / 'catalog.db'}"
    made = subprocess.run(
        [sys.executable, "-m", "slideserver", "token", "create", "--role", "lis", "--name",
         "lis", "--database-url", db],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    token = made.stdout.strip().splitlines()[-1]
    with live_server([samples_root], "--database-url", db) as base:
        items = httpx.get(f"{base}/api/slides", timeout=10).json()["items"]
        sid = next(i["id"] for i in items if i["name"] == SVS)
        host, port = base.removeprefix("http://").split(":")
        yield {"base": base, "host": host, "port": port, "sid": sid, "token": token}


def _connect(server: dict[str, str]) -> socket.socket:
    sock = socket.create_connection((server["host"], int(server["port"])), timeout=10)
    sock.settimeout(10)
    return sock


class _Reader:
    """Reads HTTP/1.1 responses off a raw socket, exactly by Content-Length."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        raw, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def body(self, length: int) -> bytes:
        while len(self.buffer) < length:
            self._fill()
        data, self.buffer = self.buffer[:length], self.buffer[length:]
        return data

    def response(self, *, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        status, headers = self.head()
        if head_only or status in (204, 304) or 100 <= status < 200:
            return status, headers, b""
        return status, headers, self.body(int(headers["content-length"]))


def _get(path: str, *extra: str, method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *extra, "", ""]
    return "\r\n".join(lines).encode()


def _tile(server: dict[str, str], col: int, row: int) -> str:
    return f"/dz/{server['sid']}_files/12/{col}_{row}.jpeg"


def test_many_tiles_on_one_kept_alive_connection_arrive_whole_and_in_order(
    server: dict[str, str],
) -> None:
    expected = {
        (c, r): httpx.get(server["base"] + _tile(server, c, r), timeout=10).content
        for c in range(3)
        for r in range(3)
    }
    with _connect(server) as sock:
        reader = _Reader(sock)
        for _ in range(3):
            for (c, r), data in expected.items():
                sock.sendall(_get(_tile(server, c, r)))
                status, headers, body = reader.response()
                assert status == 200
                assert headers["content-type"] == "image/jpeg"
                assert body == data
        assert reader.buffer == b""


def test_pipelined_requests_are_answered_in_order(server: dict[str, str]) -> None:
    paths = [_tile(server, c, 0) for c in range(3)] + ["/healthz", _tile(server, 0, 1)]
    expected = [httpx.get(server["base"] + p, timeout=10).content for p in paths]
    with _connect(server) as sock:
        sock.sendall(b"".join(_get(p) for p in paths))
        reader = _Reader(sock)
        assert [reader.response()[2] for _ in paths] == expected


def test_head_sends_headers_only_and_the_connection_stays_usable(server: dict[str, str]) -> None:
    with _connect(server) as sock:
        reader = _Reader(sock)
        sock.sendall(_get(_tile(server, 1, 1), method="HEAD"))
        status, headers, _ = reader.response(head_only=True)
        assert status == 200 and int(headers["content-length"]) > 0
        sock.sendall(_get("/healthz"))
        status, _, body = reader.response()
        assert status == 200 and body


def test_not_modified_has_no_body_and_the_connection_stays_usable(server: dict[str, str]) -> None:
    etag = httpx.get(server["base"] + _tile(server, 2, 2), timeout=10).headers["etag"]
    with _connect(server) as sock:
        reader = _Reader(sock)
        sock.sendall(_get(_tile(server, 2, 2), f"If-None-Match: {etag}"))
        status, headers, _ = reader.response()
        assert status == 304 and headers["etag"] == etag
        sock.sendall(_get(_tile(server, 2, 2)))
        status, _, body = reader.response()
        assert status == 200 and body[:2] == b"\xff\xd8"
        assert reader.buffer == b""


def test_expect_100_continue_is_answered_before_the_body_is_sent(server: dict[str, str]) -> None:
    body = b'{"accession": 12}'  # read, then refused: the interim answer is what is tested
    request = _get(
        "/api/lis/cases",
        f"Authorization: Bearer {server['token']}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Expect: 100-continue",
        method="POST",
    )
    with _connect(server) as sock:
        reader = _Reader(sock)
        sock.sendall(request)
        status, _, _ = reader.response()  # would time out if the interim answer were held back
        assert status == 100
        sock.sendall(body)
        status, headers, answer = reader.response()
        assert 400 <= status < 500
        assert headers["content-type"] == "application/json"
        assert b'"error"' in answer


def test_a_large_answer_arrives_whole(server: dict[str, str]) -> None:
    with _connect(server) as sock:
        reader = _Reader(sock)
        sock.sendall(_get(f"/api/slides/{server['sid']}/thumbnail?max=2048"))
        status, headers, body = reader.response()
        assert status == 200 and len(body) == int(headers["content-length"]) > 65536
