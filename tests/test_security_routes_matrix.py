"""Every route the app serves x every caller: the right refusals, no 5xx, no PHI to researchers,
and an audit row for every PHI answer (issue #11's probe, replayed on each run).

The routes come from the app itself (:func:`tests.security_probe.endpoints`): a route added later
is probed without editing this file, once its path parameters have value generators.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from slideserver.api.policy import POLICY
from tests.security_probe import (
    BODIES,
    CALLERS,
    COOKIE,
    PARAM_VALUES,
    REFUSED,
    SUBJECTS,
    Endpoint,
    ProbeContext,
    assert_safe,
    endpoints,
    open_probe,
    route_templates,
)

ENDPOINTS = endpoints()
_request_ids = itertools.count()


@pytest.fixture(scope="module")
def probe(samples_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProbeContext]:
    yield from open_probe(samples_root, tmp_path_factory.mktemp("routes-matrix"))


def test_every_route_parameter_has_a_value_generator() -> None:
    missing = {(e.template, p) for e in ENDPOINTS for p in e.params if p not in PARAM_VALUES}
    assert not missing, f"add generators to tests/security_probe.py PARAM_VALUES: {missing}"


def test_the_probe_covers_every_route_and_every_policy_row() -> None:
    assert set(route_templates()) == set(POLICY)


def _expected(endpoint: Endpoint, caller: str) -> tuple[set[int] | None, str | None]:
    """The statuses (``None``: any below 500) and error code a caller must get."""
    rule = endpoint.rule
    if rule.public:
        return None, None
    if caller in REFUSED:
        return {401}, "unauthorized"
    role = SUBJECTS[caller].role
    if role not in rule.roles_for(endpoint.method):
        return {403}, "forbidden"
    if caller == COOKIE and endpoint.writes:
        return {403}, "csrf_check_failed"
    return None, None


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_caller_against_route(probe: ProbeContext, endpoint: Endpoint, caller: str) -> None:
    body, media_type = BODIES.get((endpoint.method, endpoint.template), (None, ""))
    request_id = f"matrix-{next(_request_ids)}"
    headers = {"X-Request-ID": request_id}
    if media_type:
        headers["Content-Type"] = media_type
    url = probe.url(endpoint)
    response = probe.request(caller, endpoint.method, url, content=body, headers=headers)
    where = (caller, endpoint.method, url, response.status_code, response.text[:300])

    assert response.status_code < 500, where
    statuses, code = _expected(endpoint, caller)
    if statuses is None:
        assert response.status_code not in (401, 403) or endpoint.rule.public, where
    else:
        assert response.status_code in statuses, where
        if endpoint.method != "HEAD":
            assert response.json()["error"] == code, where
    assert_safe(probe, endpoint, caller, response, request_id)
