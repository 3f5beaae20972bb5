"""The Deep Zoom tile route without the framework: what a viewer asks for most, kept lean.

A viewer fetches tens of tiles a second per user, and most are answered from memory in
microseconds; Starlette's routing (a regular expression per route until one matches), request
and response objects and middleware layers then cost more than the answer itself. The lane
recognises tile URLs with one regular expression and calls, inline, the same step functions
the middleware stack and the routed endpoint call: :func:`begin_request`/:func:`end_request`,
:func:`has_nul_byte`, :func:`authenticate_scope`, :meth:`RouteAccess.admit` (policy and audit
count), :meth:`CorsPolicy.answer_headers` with :func:`send_with_headers` (the CORS headers),
:func:`send_image` and :func:`send_exception_answer`, so both paths answer alike
(``tests/test_api_tile_pipeline.py`` compares them). URLs it does not recognise, malformed
tile addresses included, go to the router, so their errors are the router's; so do ``OPTIONS``
preflights, which the CORS middleware answers.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from starlette.types import Receive, Scope, Send

from slideserver.api.auth import CREDENTIAL_HEADERS, RouteAccess, authenticate_scope
from slideserver.api.cors import CorsPolicy, send_with_headers
from slideserver.api.middleware import (
    REQUEST_ID,
    begin_request,
    end_request,
    has_nul_byte,
    send_exception_answer,
)
from slideserver.api.policy import rule_for
from slideserver.api.responses import IMMUTABLE, send_image
from slideserver.api.urls import DEEPZOOM_TILE
from slideserver.metrics import Metrics

if TYPE_CHECKING:
    from slideserver.security.authority import Security

TILE_PATH = re.compile(
    r"/dz/(?P<slide_id>[A-Za-z0-9-]{1,64})_files/"
    r"(?P<level>[0-9]{1,9})/(?P<col>[0-9]{1,9})_(?P<row>[0-9]{1,9})\.(?P<fmt>[A-Za-z]{3,4})"
)
"""The tile URLs the lane answers: a subset of what :data:`DEEPZOOM_TILE` matches."""


class _TileRoute:
    """Stands in for the matched route in the scope: logs and metrics name its template."""

    path = DEEPZOOM_TILE


TILE_ROUTE = _TileRoute()
_IF_NONE_MATCH = b"if-none-match"
_ORIGIN = b"origin"
_LANE_HEADERS = frozenset({REQUEST_ID, _IF_NONE_MATCH, _ORIGIN, *CREDENTIAL_HEADERS})


class TileLane:
    """Answers Deep Zoom tile URLs; :meth:`match` tells which requests are its own."""

    def __init__(self, security: Security, metrics: Metrics, cors: CorsPolicy) -> None:
        self.security = security
        self.metrics = metrics
        self.cors = cors
        self.access = RouteAccess(rule_for(DEEPZOOM_TILE), DEEPZOOM_TILE, security)

    @staticmethod
    def match(scope: Scope) -> bool:
        """Claim a tile request: put its path parameters and route in the scope."""
        if scope["type"] != "http" or not scope["path"].startswith("/dz/"):
            return False
        match = TILE_PATH.fullmatch(scope["path"])
        if match is None or scope["method"] not in ("GET", "HEAD") or has_nul_byte(scope):
            return False  # the router answers it (a NUL byte: the door's 400, as for every URL)
        scope["path_params"] = match.groupdict()
        scope["route"] = TILE_ROUTE
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        wanted: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:  # one pass for every header the lane reads
            if name in _LANE_HEADERS:
                wanted[name] = value
        cors_headers = self.cors.answer_headers(wanted.get(_ORIGIN))
        request_id = begin_request(scope, wanted.get(REQUEST_ID))
        id_header = (REQUEST_ID, request_id.encode())
        # The CORS headers go last, as the CORS middleware adds them outside everything else:
        # appended to an image's headers (which have no Vary to merge), or by wrapping ``send``
        # for the other answers.
        extra = (id_header, *cors_headers) if cors_headers else (id_header,)
        answer_send = send_with_headers(send, cors_headers) if cors_headers else send
        status = 500
        try:
            await authenticate_scope(self.security, scope, wanted.items())
            refusal = await self.access.admit(scope)
            if refusal is None:
                params = scope["path_params"]
                result = await scope["app"].state.slideserver.service.deepzoom_tile(
                    params["slide_id"],
                    int(params["level"]),
                    int(params["col"]),
                    int(params["row"]),
                    params["fmt"],
                )
                status = await send_image(
                    scope,
                    send,
                    self.metrics,
                    result,
                    IMMUTABLE,
                    wanted.get(_IF_NONE_MATCH, b""),
                    extra,
                )
            else:
                refusal.raw_headers.append(id_header)
                status = refusal.status_code
                await refusal(scope, receive, answer_send)
        except Exception as exc:
            status = await send_exception_answer(scope, receive, answer_send, exc, id_header)
        finally:
            end_request(self.metrics, scope, status)
