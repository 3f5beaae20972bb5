"""Request bodies: read with a size cap, JSON decoded only when not nested too deeply.

Python's ``json`` module recurses once per nesting level: a body of 100,000 ``[`` (100 kB, well
under any size cap) raises ``RecursionError`` deep inside it. :func:`check_json_depth` counts
the nesting of ``[`` and ``{`` outside strings before anything is decoded, with C-speed byte
and array operations only (no Python loop per byte); every JSON body the server reads goes
through :func:`parse_json`.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
from starlette.requests import Request

from slideserver.errors import BadRequest

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects accepted in a JSON body (FHIR Bundles need ~10)."""

_STRINGS = re.compile(rb'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
"""A JSON string, or an unterminated one up to the end; possessive, so matching is linear."""
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
"""Opening brackets to 1, closing ones to -1 (as int8)."""


class BodyTooLarge(Exception):
    """The request body is over the limit it was read with."""


class JsonTooDeep(BadRequest):
    """A JSON body nests arrays and objects deeper than :data:`MAX_JSON_DEPTH`."""

    def __init__(self, limit: int = MAX_JSON_DEPTH) -> None:
        super().__init__(f"JSON nested deeper than {limit} levels")


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing more than ``limit`` bytes without reading them all."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def check_json_depth(body: bytes, limit: int = MAX_JSON_DEPTH) -> None:
    """Raise :class:`JsonTooDeep` when ``body`` nests ``[``/``{`` deeper than ``limit``.

    Strings are removed, then everything but brackets; each opening bracket is a step up and
    each closing one a step down, and the deepest point of their running sum (numpy, one pass) is
    the nesting depth. Mismatched or unbalanced brackets are the decoder's to refuse; they never
    make it recurse deeper than this count.
    """
    brackets = _STRINGS.sub(b"", body).translate(None, _NOT_BRACKETS)
    if len(brackets) <= limit:
        return
    steps = np.frombuffer(brackets.translate(_STEPS), dtype=np.int8)
    if int(np.cumsum(steps, dtype=np.int32).max()) > limit:
        raise JsonTooDeep(limit)


def parse_json(body: bytes) -> Any:
    """Decode a JSON body after :func:`check_json_depth`; ``ValueError`` when it is not JSON."""
    check_json_depth(body)
    return json.loads(body)


__all__ = [
    "MAX_JSON_DEPTH",
    "BodyTooLarge",
    "JsonTooDeep",
    "check_json_depth",
    "parse_json",
    "read_body",
]
