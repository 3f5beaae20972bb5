"""The DICOMweb frames route without the framework: what a DICOMweb viewer asks for most.

Slim and other DICOMweb viewers fetch a slide frame by frame, as Deep Zoom viewers fetch tiles,
and a stored frame is answered from memory in microseconds. Routed, a frame request first
walked Starlette's route list (a regular expression per route, the DICOMweb routes near its
end) and every middleware layer, which profiling showed cost several times the answer. Like
the tile lane (:mod:`slideserver.api.tile_lane`), this lane recognises the frames URL with one
regular expression and calls, inline, the steps the middleware stack and the route guard call
(:func:`begin_request`/:func:`end_request`, :func:`authenticate_scope`,
:meth:`RouteAccess.admit`, :func:`send_exception_answer`; frames are same-origin, so no CORS
step), then the routed endpoint itself
(:func:`slideserver.api.routes.dicomweb.frames`), so both paths answer alike
(``tests/test_api_frames_lane.py`` compares them). URLs it does not recognise go to the router,
so their errors are the router's. The Deep Zoom tile lane is asked first: tiles pay nothing
for this one.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from slideserver.api.auth import CREDENTIAL_HEADERS, RouteAccess, authenticate_scope
from slideserver.api.middleware import (
    REQUEST_ID,
    begin_request,
    end_request,
    has_nul_byte,
    send_exception_answer,
)
from slideserver.api.policy import rule_for
from slideserver.api.routes.dicomweb import FRAMES, frames
from slideserver.metrics import Metrics

if TYPE_CHECKING:
    from slideserver.security.authority import Security

FRAMES_PATH = re.compile(
    r"/dicomweb/studies/(?P<study>[0-9.]{1,64})/series/(?P<series>[0-9.]{1,64})"
    r"/instances/(?P<instance>[0-9.]{1,64})/frames/(?P<frames>[0-9,]{1,16384})"
)
"""The frames URLs the lane answers: a subset of what :data:`FRAMES` matches."""


class _FramesRoute:
    """Stands in for the matched route in the scope: logs and metrics name its template."""

    path = FRAMES


FRAMES_ROUTE = _FramesRoute()
_LANE_HEADERS = frozenset({REQUEST_ID, *CREDENTIAL_HEADERS})


class FramesLane:
    """Answers DICOMweb frames URLs; :meth:`match` tells which requests are its own."""

    def __init__(self, security: Security, metrics: Metrics) -> None:
        self.security = security
        self.metrics = metrics
        rule = rule_for(FRAMES)
        if rule.cors:  # the lane adds no CORS headers: the tile lane shows how, if ever needed
            raise ValueError("the frames lane answers same-origin routes only")
        self.access = RouteAccess(rule, FRAMES, security)

    @staticmethod
    def match(scope: Scope) -> bool:
        """Claim a frames request: put its path parameters and route in the scope."""
        if scope["type"] != "http" or not scope["path"].startswith("/dicomweb/studies/"):
            return False
        match = FRAMES_PATH.fullmatch(scope["path"])
        if match is None or scope["method"] not in ("GET", "HEAD") or has_nul_byte(scope):
            return False  # the router answers it, as for every other URL
        scope["path_params"] = match.groupdict()
        scope["route"] = FRAMES_ROUTE
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        wanted: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:  # one pass for every header the lane reads
            if name in _LANE_HEADERS:
                wanted[name] = value
        request_id = begin_request(scope, wanted.get(REQUEST_ID))
        id_header = (REQUEST_ID, request_id.encode())
        status = 500
        try:
            await authenticate_scope(self.security, scope, wanted.items())
            response = await self.access.admit(scope)
            if response is None:
                response = await frames(Request(scope, receive))
            response.raw_headers.append(id_header)
            status = response.status_code
            await response(scope, receive, send)
        except Exception as exc:
            status = await send_exception_answer(scope, receive, send, exc, id_header)
        finally:
            end_request(self.metrics, scope, status)
