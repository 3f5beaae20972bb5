"""The Deep Zoom tile route without the framework: what a viewer asks for most, kept lean.

A viewer fetches tens of tiles a second per user, and most are answered from memory in
microseconds; Starlette's routing (a regular expression per route until one matches), request
and response objects and middleware layers then cost more than the answer itself. The lane
recognises tile URLs with one regular expression and runs, in one function, the same steps the
routed endpoint goes through: request ID, authentication, the route's policy (with the audit's
tile summary), the service, HTTP caching, metrics and the access log. URLs it does not
recognise, malformed tile addresses included, go to the router, so their errors are the
router's.
"""

from __future__ import annotations

import contextlib
import re
import time
from typing import TYPE_CHECKING

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from slideserver.api.auth import RouteAccess, credential_headers
from slideserver.api.errors import slideserver_error_response, unexpected_error_response
from slideserver.api.middleware import end_request, set_request_id
from slideserver.api.policy import rule_for
from slideserver.api.responses import IMMUTABLE, send_image
from slideserver.errors import SlideServerError
from slideserver.metrics import Metrics
from slideserver.security.principals import ERROR_KEY, STATE_KEY

if TYPE_CHECKING:
    from slideserver.security.service import Security

TILE_TEMPLATE = "/dz/{slide_id}_files/{level}/{col}_{row}.{fmt}"
TILE_PATH = re.compile(
    r"/dz/(?P<slide_id>[A-Za-z0-9-]{1,64})_files/"
    r"(?P<level>[0-9]{1,9})/(?P<col>[0-9]{1,9})_(?P<row>[0-9]{1,9})\.(?P<fmt>[A-Za-z]{3,4})"
)
"""The tile URLs the lane answers: a subset of what the routed template matches."""


class _TileRoute:
    """Stands in for the matched route in the scope: logs and metrics name its template."""

    path = TILE_TEMPLATE


TILE_ROUTE = _TileRoute()
_LANE_HEADERS = frozenset({b"x-request-id", b"authorization", b"cookie", b"if-none-match"})


class TileLane:
    """Answers Deep Zoom tile URLs; :meth:`match` tells which requests are its own."""

    def __init__(self, security: Security, metrics: Metrics) -> None:
        self.security = security
        self.metrics = metrics
        self.access = RouteAccess(rule_for(TILE_TEMPLATE), TILE_TEMPLATE, security)

    @staticmethod
    def match(scope: Scope) -> bool:
        """Claim a tile request: put its path parameters and route in the scope."""
        if scope["type"] != "http" or not scope["path"].startswith("/dz/"):
            return False
        match = TILE_PATH.fullmatch(scope["path"])
        if match is None or scope["method"] not in ("GET", "HEAD"):
            return False
        query = scope.get("query_string", b"")
        if query and (b"%00" in query or b"\x00" in query):
            return False  # the router's door refuses it, as for every URL

        scope["path_params"] = match.groupdict()
        scope["route"] = TILE_ROUTE
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        wanted: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:  # one pass for every header the lane reads
            if name in _LANE_HEADERS:
                wanted[name] = value
        request_id = set_request_id(scope, wanted.get(b"x-request-id"))
        extra = ((b"x-request-id", request_id.encode()),)
        status = 500
        try:
            credentials = credential_headers(wanted.items())
            principal, failure = await self.security.authenticate(credentials)
            state = scope["state"]
            state[STATE_KEY] = principal
            state[ERROR_KEY] = failure
            response = await self.access.refusal(scope)
            if response is None:
                # Past the guard, every answer counts as a pixel read, as on routed image URLs.
                self.access.count_tile_read(scope)
                if_none_match = wanted.get(b"if-none-match", b"")
                status, response = await self._tile(scope, send, extra, if_none_match)
            if response is not None:
                response.headers["X-Request-ID"] = request_id
                status = response.status_code
                await response(scope, receive, send)
        except Exception as exc:
            response = unexpected_error_response(scope, exc)
            response.headers["X-Request-ID"] = request_id
            # The answer may have started before the fault: the server then drops the connection.
            with contextlib.suppress(RuntimeError):
                await response(scope, receive, send)
        finally:
            end_request(self.metrics, scope, status, start, request_id)

    async def _tile(
        self,
        scope: Scope,
        send: Send,
        extra: tuple[tuple[bytes, bytes], ...],
        if_none_match: bytes,
    ) -> tuple[int, Response | None]:
        """Send the tile; or return the error answer to send instead."""
        service = scope["app"].state.slideserver.service
        params = scope["path_params"]
        try:
            result = await service.deepzoom_tile(
                params["slide_id"],
                int(params["level"]),
                int(params["col"]),
                int(params["row"]),
                params["fmt"],
            )
        except SlideServerError as exc:
            response = slideserver_error_response(scope, exc)
            return response.status_code, response
        self.metrics.observe_tile(result.source)
        return await send_image(scope, send, result, IMMUTABLE, extra, if_none_match), None
