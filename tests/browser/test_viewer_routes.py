"""The routes serving the viewer's pages and assets (no browser needed)."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.testclient import TestClient

from slideserver.api.routes.viewer import viewer_routes


def client_for(static_dir: Path) -> TestClient:
    return TestClient(Starlette(routes=viewer_routes(static_dir)))


def test_pages_answer_503_json_until_the_viewer_is_built(tmp_path: Path) -> None:
    client = client_for(tmp_path / "missing")
    for path in ("/", "/view/abc", "/case/S24-1", "/static/viewer/assets/app.js"):
        resp = client.get(path)
        assert resp.status_code == 503, path
        assert resp.json() == {"error": "viewer_not_built", "detail": "run make viewer"}


def test_every_page_path_serves_index_html(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html><title>viewer</title>")
    client = client_for(tmp_path)
    for path in ("/", "/view/abc", "/view/a,b,c?x=1&y=2&mag=20", "/case/S24-01234"):
        resp = client.get(path)
        assert resp.status_code == 200, path
        assert resp.headers["content-type"].startswith("text/html")
        assert "<title>viewer</title>" in resp.text
        assert resp.headers["cache-control"] == "no-cache"
        assert "script-src 'self'" in resp.headers["content-security-policy"]


def test_hashed_assets_are_cached_for_good(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html>")
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "index-abc123.js").write_text("console.log(1)")
    client = client_for(tmp_path)
    resp = client.get("/static/viewer/assets/index-abc123.js")
    assert resp.status_code == 200
    assert "immutable" in resp.headers["cache-control"]
    assert client.get("/static/viewer/assets/nope.js").status_code == 404
