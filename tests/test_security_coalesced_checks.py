"""At the shift change the database is asked once per check, not once per concurrent request.

A viewer asks for six tiles at once. When its session's cached check has expired, or a slide is
read for the first time, each of the six would query the database for the same answer; the app
hands the security authority its single flight, so they share one query. Measured on the
PostgreSQL cluster of ``make loadtest``, these duplicate queries were a third of the worker
threads' time (README, "Peak load").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import Engine, event

from tests.helpers import SVS

CONCURRENT = 6
"""Requests a browser sends at once to one host."""


@pytest.fixture
def statements() -> Iterator[list[str]]:
    """Every SQL statement any engine runs while the test does."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(str(args[2]))

    event.listen(Engine, "before_cursor_execute", record)
    yield seen
    event.remove(Engine, "before_cursor_execute", record)


def _app(samples_root: Path, tmp_path: Path) -> tuple[Any, str]:
    """An ``auth=tokens`` app whose session checks are never cached (each request checks)."""
    from slideserver.api.app import create_app
    from tests.conftest import _security_settings, make_tokens

    settings = _security_settings(samples_root, tmp_path / "db.sqlite", session_check_ttl=0.0)
    token = make_tokens(settings, {"viewer": ("pathologist", "")})["viewer"]
    return create_app(settings), token  # type: ignore[arg-type]


async def _with_app(app: Any, token: str, body: Any) -> Any:
    """Run the app's lifespan, sign in, and call ``body(client, security, cookie)``."""
    from slideserver.security.session import COOKIE_NAME

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://local") as client:
            answer = await client.post("/api/session", headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 200, answer.text
            cookie = f"{COOKIE_NAME}={answer.cookies[COOKIE_NAME]}"
            return await body(client, app.state.security, cookie)


async def _all_at_once(calls: list[Any]) -> list[Any]:
    results: list[Any] = [None] * len(calls)

    async def one(index: int) -> None:
        results[index] = await calls[index]()

    async with anyio.create_task_group() as group:
        for index in range(len(calls)):
            group.start_soon(one, index)
    return results


def test_concurrent_requests_of_one_session_check_it_once(
    samples_root: Path, tmp_path: Path, statements: list[str]
) -> None:
    app, token = _app(samples_root, tmp_path)

    async def body(client: Any, security: Any, cookie: str) -> list[Any]:
        statements.clear()
        calls = [lambda: security.authenticate({"cookie": cookie})] * CONCURRENT
        return await _all_at_once(calls)

    results = anyio.run(_with_app, app, token, body)
    assert [principal.subject for principal, _ in results] == ["token:viewer"] * CONCURRENT
    checks = [s for s in statements if "FROM security_sessions" in s]
    assert len(checks) == 1


def test_a_slide_read_by_concurrent_requests_is_looked_up_once_for_the_audit(
    samples_root: Path, tmp_path: Path, statements: list[str]
) -> None:
    app, token = _app(samples_root, tmp_path)

    async def body(client: Any, security: Any, cookie: str) -> list[Any]:
        listed = await client.get("/api/slides", headers={"Cookie": cookie})
        sid = next(i["id"] for i in listed.json()["items"] if i["name"] == SVS)
        security.forget_subjects()
        statements.clear()
        return await _all_at_once([lambda: security.slide_subjects(sid)] * CONCURRENT)

    results = anyio.run(_with_app, app, token, body)
    assert len(set(results)) == 1
    lookups = [s for s in statements if "FROM scans" in s]
    assert len(lookups) == 1


def test_each_session_is_still_checked_on_its_own(
    samples_root: Path, tmp_path: Path, statements: list[str]
) -> None:
    """Coalescing is per session: a logged-out session is refused while another is live."""
    app, token = _app(samples_root, tmp_path)

    async def body(client: Any, security: Any, cookie: str) -> list[Any]:
        from slideserver.security.session import COOKIE_NAME

        again = await client.post("/api/session", headers={"Authorization": f"Bearer {token}"})
        other = f"{COOKIE_NAME}={again.cookies[COOKIE_NAME]}"
        ended = await client.delete(
            "/api/session", headers={"Cookie": other, "X-Requested-With": "test"}
        )
        assert ended.status_code == 204
        statements.clear()
        calls = [lambda: security.authenticate({"cookie": cookie})] * 3
        calls += [lambda: security.authenticate({"cookie": other})] * 3
        return await _all_at_once(calls)

    results = anyio.run(_with_app, app, token, body)
    assert [principal is not None for principal, _ in results] == [True] * 3 + [False] * 3
    assert len([s for s in statements if "FROM security_sessions" in s]) == 2
