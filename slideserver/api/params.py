"""Parse path and query parameters into typed values with clear 400 errors."""

from __future__ import annotations

from slideserver.errors import BadRequest

MAX_DIGITS = 9


def parse_index(name: str, raw: str) -> int:
    """Parse a non-negative integer index (level, column, row)."""
    if not raw.isascii() or not raw.isdigit():
        raise BadRequest(f"{name} must be a non-negative integer, not {raw[:24]!r}")
    if len(raw) > MAX_DIGITS:
        raise BadRequest(f"{name} {raw[:24]!r} is too large")
    return int(raw)


def parse_int(name: str, raw: str | None, default: int, low: int, high: int) -> int:
    """Parse an optional integer query parameter within ``low..high``."""
    if raw is None or raw == "":
        return default
    value = parse_index(name, raw.strip())
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value
