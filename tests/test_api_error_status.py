"""ERROR_STATUS: the one table from domain errors to HTTP statuses, resolved by class ancestry."""

from __future__ import annotations

import inspect
import json
import logging
from operator import attrgetter

import pytest

from slideserver import errors
from slideserver.api.errors import error_status, slideserver_error_response
from slideserver.security.principals import PATHOLOGIST, STATE_KEY, Principal

EXPECTED: dict[type[errors.SlideServerError], int] = {
    errors.SlideServerError: 500,
    errors.BadRequest: 400,
    errors.InvalidIIIFParameter: 400,
    errors.UnsupportedTileFormat: 400,
    errors.InvalidRegion: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.SlideNotFound: 404,
    errors.TileNotFound: 404,
    errors.AssociatedImageNotFound: 404,
    errors.SlideGone: 404,
    errors.SlideChanged: 410,
    errors.TooLarge: 413,
    errors.SlideUnreadable: 422,
    errors.SlideTruncated: 422,
    errors.TileUnreadable: 422,
    errors.BackendUnavailable: 503,
    errors.SlideStorageTimeout: 504,
    errors.InsufficientStorage: 507,
    errors.Conflict: 409,
    errors.PreconditionFailed: 412,
    errors.PreconditionRequired: 428,
}
"""Every error class of slideserver.errors and the status the API answers it with."""

SCOPE = {
    "type": "http",
    "method": "GET",
    "path": "/dz/x.dzi",
    "route": None,
    "state": {STATE_KEY: Principal("token:p", PATHOLOGIST)},
}
"""A request of a pathologist, who may read error details as they are (they hold no path)."""


def domain_errors() -> list[type[errors.SlideServerError]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.SlideServerError) and cls.__module__ == errors.__name__
    ]


def test_every_domain_error_has_its_status_in_the_table() -> None:
    assert set(domain_errors()) == set(EXPECTED)


@pytest.mark.parametrize(
    ("cls", "status"), EXPECTED.items(), ids=lambda v: getattr(v, "__name__", v)
)
def test_each_error_answers_its_status(cls: type[errors.SlideServerError], status: int) -> None:
    assert error_status(cls("why")) == status


@pytest.mark.parametrize(
    "cls", sorted(EXPECTED, key=attrgetter("__name__")), ids=lambda c: getattr(c, "__name__", "?")
)
def test_domain_errors_know_nothing_of_http(cls: type[errors.SlideServerError]) -> None:
    assert not hasattr(cls("why"), "status")


def test_a_subclass_takes_its_nearest_listed_ancestors_status() -> None:
    class LabelWithheld(errors.Forbidden):
        code = "label_withheld"

    assert error_status(LabelWithheld("by policy")) == 403


def test_an_exception_of_another_tree_is_500() -> None:
    assert error_status(ValueError("bug")) == 500


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (errors.TileNotFound("tile (9, 9) outside the 2x2 tile grid"), 404),
        (errors.SlideTruncated("'a.tif' is truncated"), 422),
        (errors.BackendUnavailable("the catalog database is down"), 503),
    ],
)
def test_the_response_has_the_tables_status_and_the_errors_code(
    exc: errors.SlideServerError, status: int
) -> None:
    response = slideserver_error_response(SCOPE, exc)
    assert response.status_code == status
    assert json.loads(bytes(response.body)) == {"error": exc.code, "detail": exc.detail}
    assert response.headers["cache-control"] == "no-store"


def test_server_side_errors_are_logged_with_their_status(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="slideserver.api"):
        slideserver_error_response(SCOPE, errors.BackendUnavailable("down"))
        slideserver_error_response(SCOPE, errors.SlideNotFound("no slide"))
    assert [r.getMessage() for r in caplog.records] == [
        "GET unmatched answered 503 (backend_unavailable)"
    ]
