"""When to try a request again and how long to wait: 503 and 429 answers, and lost connections.

The server answers 503 while a backend is down or it is draining, and a proxy in front of it
may answer 429; both may say when to come back (``Retry-After``, seconds or an HTTP date).
Every request the client makes is a GET, so repeating one is always safe.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to retry and how long to wait between attempts."""

    retries: int = 5
    """Attempts after the first; 0 turns retrying off."""
    backoff: float = 0.5
    """Seconds before the first retry when the server does not say; doubled each time."""
    max_wait: float = 30.0
    """No wait is longer than this, whatever ``Retry-After`` says."""

    def wait(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
        told = parse_retry_after(retry_after)
        if told is None:
            base = self.backoff * (2**attempt)
            told = base / 2 + random.uniform(0, base / 2)  # jitter: clients do not retry in step
        return max(0.0, min(told, self.max_wait))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for, or ``None`` when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
