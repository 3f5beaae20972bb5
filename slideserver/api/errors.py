"""From exceptions to JSON error responses; a stack trace never reaches a client.

:data:`ERROR_STATUS` is the one place that gives our domain errors an HTTP status: every answer
to a :class:`~slideserver.errors.SlideServerError` (exception handlers, the tile lane) goes
through :func:`slideserver_error_response`, which looks it up.
"""

from __future__ import annotations

import logging
import traceback

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Scope

from slideserver.api.middleware import route_template
from slideserver.errors import (
    BackendUnavailable,
    BadRequest,
    Conflict,
    Forbidden,
    InsufficientStorage,
    InvalidRegion,
    NotFound,
    PreconditionFailed,
    PreconditionRequired,
    SlideChanged,
    SlideServerError,
    SlideStorageTimeout,
    SlideUnreadable,
    TooLarge,
    Unauthorized,
)
from slideserver.security.deidentify import error_detail
from slideserver.security.principals import STATE_KEY

log = logging.getLogger("slideserver.api")

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "too_many_requests",
    503: "unavailable",
}


ERROR_STATUS: dict[type[SlideServerError], int] = {
    BadRequest: 400,
    InvalidRegion: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    PreconditionFailed: 412,
    PreconditionRequired: 428,
    SlideChanged: 410,
    TooLarge: 413,
    SlideUnreadable: 422,
    BackendUnavailable: 503,
    SlideStorageTimeout: 504,
    InsufficientStorage: 507,
}
"""The HTTP status of each error class; subclasses inherit their nearest ancestor's."""
UNLISTED_ERROR_STATUS = 500
"""The status of an error no class in its MRO is listed for (the base SlideServerError)."""


def error_status(exc: BaseException) -> int:
    """Return the HTTP status for ``exc``: its nearest class in :data:`ERROR_STATUS`, else 500."""
    for cls in type(exc).__mro__:
        status = ERROR_STATUS.get(cls)
        if status is not None:
            return status
    return UNLISTED_ERROR_STATUS


def error_response(status: int, code: str, detail: str) -> JSONResponse:
    """Return the JSON error body every route uses."""
    headers = {"Cache-Control": "no-store"}
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def slideserver_error_response(scope: Scope, exc: SlideServerError) -> JSONResponse:
    """Return the JSON answer to one of our errors; server-side ones are logged (no PHI).

    The detail is de-identified for the caller (:func:`error_detail`): never a path, and for
    callers who may not see PHI no file name, accession or backend message.
    """
    status = error_status(exc)
    if status >= 500:
        log.warning(
            "%s %s answered %s (%s)",
            scope["method"],
            route_template(scope),
            status,
            exc.code,
        )
    principal = scope.get("state", {}).get(STATE_KEY)
    return error_response(status, exc.code, error_detail(exc.code, exc.detail, principal))


async def handle_slideserver_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SlideServerError)
    return slideserver_error_response(request.scope, exc)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = HTTP_CODES.get(exc.status_code, "error")
    detail = exc.detail if isinstance(exc.detail, str) else code
    if exc.status_code == 404:
        detail = "no route for this path"  # not echoed: a typed path can carry an accession
    response = error_response(exc.status_code, code, detail)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def unexpected_error_response(scope: Scope, exc: BaseException) -> JSONResponse:
    """Log a bug without PHI and return the generic 500 answer."""
    # Frames only: exception messages can carry values (SQL parameters, file names) that are PHI,
    # and paths can carry accession numbers, so the route template stands in for the path.
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error(
        "unexpected %s on %s %s\n%s",
        type(exc).__name__,
        scope["method"],
        route_template(scope),
        frames,
    )
    return error_response(500, "internal_error", "the server could not complete this request")


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    return unexpected_error_response(request.scope, exc)


EXCEPTION_HANDLERS = {
    SlideServerError: handle_slideserver_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
