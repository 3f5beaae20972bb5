"""The server's ``{"error", "detail"}`` answers as exceptions, one class per kind of failure.

Every exception keeps the server's stable ``code``, its ``detail`` and the HTTP ``status``, so a
caller can branch on the class (``except NotFound``) or on the code (``exc.code ==
"slide_changed"``).
"""

from __future__ import annotations

from typing import Any


class SlideServerError(Exception):
    """An answer the server refused or failed, or a server that could not be reached."""

    def __init__(self, code: str, detail: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {detail}" + (f" (HTTP {status})" if status else ""))
        self.code = code
        self.detail = detail
        self.status = status


class BadRequest(SlideServerError):
    """400: the request is malformed (a IIIF size over the server's limits, a bad number)."""


class Unauthorized(SlideServerError):
    """401: no token, or a token the server does not accept (expired, revoked)."""


class Forbidden(SlideServerError):
    """403: the token's role may not use this route."""


class NotFound(SlideServerError):
    """404: no such slide (or not in the token's collections), level, tile or route."""


class SlideChanged(SlideServerError):
    """410: the slide's file was replaced; it is listed again under a new ID."""


class TooLarge(SlideServerError):
    """413: the request would read too many stored pixels; ask for a smaller region."""


class Unavailable(SlideServerError):
    """503 or 429 after every retry, or the server could not be reached at all."""


class ServerError(SlideServerError):
    """Any other 5xx answer."""


_BY_STATUS: dict[int, type[SlideServerError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    410: SlideChanged,
    413: TooLarge,
    429: Unavailable,
    503: Unavailable,
}


def error_for(status: int, body: Any) -> SlideServerError:
    """Return the exception for an error answer: its JSON body's code and detail when it has one."""
    code, detail = f"http_{status}", f"the server answered HTTP {status}"
    if isinstance(body, dict):
        code = str(body.get("error") or code)
        detail = str(body.get("detail") or detail)
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else SlideServerError
    return cls(code, detail, status)
