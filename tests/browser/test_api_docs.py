"""The API reference page (/api/docs) in headless Chromium, with every other origin cut off."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.browser

Server = Any  # tests/browser/conftest.py
Console = Any


def offline(page: Any, base: str) -> list[str]:
    """Abort every request to another origin; return the list of those attempted."""
    elsewhere: list[str] = []

    def route(request_route: Any) -> None:
        url = request_route.request.url
        if url.startswith(base) or url.startswith(("data:", "blob:")):
            request_route.continue_()
        else:
            elsewhere.append(url)
            request_route.abort()

    page.route("**/*", route)
    return elsewhere


def test_the_reference_page_lists_the_operations_offline(
    page: Any, server: Server, console: Console
) -> None:
    elsewhere = offline(page, server.base)
    page.goto("/api/docs")
    listed = page.locator('.opblock-summary-path[data-path="/api/slides"]')
    listed.first.wait_for()
    assert listed.count() >= 1
    tile = '.opblock-summary-path[data-path="/dz/{slide_id}_files/{level}/{col}_{row}.{fmt}"]'
    assert page.locator(tile).count() >= 1
    assert elsewhere == []
    assert console.errors == []


def test_an_operation_shows_its_parameters_and_roles(
    page: Any, server: Server, console: Console
) -> None:
    offline(page, server.base)
    page.goto("/api/docs")
    summary = page.locator(
        ".opblock-get .opblock-summary-path", has_text="/api/slides/{slide_id}/thumbnail"
    )
    summary.first.click()
    page.locator(".parameters-container").first.wait_for()
    names = page.locator(".parameter__name").all_inner_texts()
    assert any(n.startswith("slide_id") for n in names), names
    assert any(n.startswith("max") for n in names), names
    roles = page.locator(".opblock-body", has_text="x-roles")
    assert roles.count() >= 1, "the policy's roles are shown with the operation"
    assert console.errors == []
