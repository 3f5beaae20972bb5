"""Viewer sessions kept on the server, so that logging out ends them for good.

The signed cookie (:mod:`slideserver.security.session`) carries a random session ID; the
database keeps only its SHA-256 (``security_sessions``), with the session's expiry, its
revocation, and the API token it was opened with. Every cookie request checks that row joined
with the token's: logging out, revoking the token, or the token's expiry (a rotated secret's
overlap ending included) ends the session.

A check is cached in the process for ``check_ttl`` seconds (tile requests come by the hundred).
Logging out replaces this process's entry at once, so the old cookie is refused immediately by
the process that logged out, and within ``check_ttl`` seconds by every other process (workers,
machines). A cached "live" never outlives the session's or its token's expiry.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, bindparam, delete, insert, select, update

from slideserver.db.engine import single_statement_reads
from slideserver.errors import BackendUnavailable
from slideserver.security.principals import Principal
from slideserver.security.schema import api_tokens, sessions

MAX_CACHE = 10_000
"""Cached checks kept at most, so forged session IDs (signed, hence rare) cannot fill memory."""


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


def _epoch(value: datetime | None) -> float:
    """Return ``value`` as ``time.time()`` seconds (naive values are UTC); ``None``: never."""
    if value is None:
        return float("inf")
    return (value.replace(tzinfo=UTC) if value.tzinfo is None else value).timestamp()


_LIVE_QUERY = (
    select(
        sessions.c.expires_at,
        sessions.c.revoked_at,
        sessions.c.token_id,
        api_tokens.c.id.label("token_row"),
        api_tokens.c.expires_at.label("token_expires_at"),
        api_tokens.c.revoked_at.label("token_revoked_at"),
    )
    .select_from(sessions.outerjoin(api_tokens, api_tokens.c.id == sessions.c.token_id))
    .where(sessions.c.id_hash == bindparam("digest"))
)
"""A session's check, built once (its SQLAlchemy cache key memoized): run for every viewer
each ``session_check_ttl``."""


class SessionStore:
    """Open, check and revoke viewer sessions in the security tables."""

    def __init__(
        self, engine: Engine, writer: Engine, check_ttl: float = 2.0, outage_grace: float = 0.0
    ) -> None:
        self.engine = engine
        self.writer = writer
        self._check = single_statement_reads(engine)
        self.check_ttl = check_ttl
        self.outage_grace = outage_grace
        """Seconds a session checked live before the database became unreachable stays live
        while it is (see :meth:`is_live`)."""
        self._cache: dict[str, tuple[float, float]] = {}
        """Session ID hash -> (cache deadline, ``time.time()`` the session ends; 0: ended)."""
        self._lock = threading.Lock()

    def open(self, principal: Principal, max_age: int) -> str:
        """Record a new session of ``principal`` lasting ``max_age`` seconds; return its ID."""
        session_id = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        expires_at = now + timedelta(seconds=max_age)
        with self.writer.begin() as conn:
            # Ended sessions are never needed again: drop them while we are writing anyway.
            conn.execute(delete(sessions).where(sessions.c.expires_at < now))
            conn.execute(
                insert(sessions).values(
                    id_hash=_hash(session_id),
                    subject=principal.subject[:200],
                    token_id=principal.token_id,
                    created_at=now,
                    expires_at=expires_at,
                )
            )
        self._remember(_hash(session_id), expires_at.timestamp())
        return session_id

    def cached(self, session_id: str) -> bool | None:
        """Return whether the session is live from the cache, or ``None`` when not cached."""
        entry = self._cache.get(_hash(session_id))
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1] > time.time()

    def is_live(self, session_id: str) -> bool:
        """Tell whether the session is unrevoked, unexpired, and its token too (may block)."""
        live = self.cached(session_id)
        if live is not None:
            return live
        digest = _hash(session_id)
        try:
            with self._check.connect() as conn:
                row = conn.execute(_LIVE_QUERY, {"digest": digest}).first()
        except BackendUnavailable:
            if self._live_before_outage(digest):
                return True
            raise
        until = 0.0
        if row is not None and row.revoked_at is None:
            until = _epoch(row.expires_at)
            if row.token_id is not None:
                token_ok = row.token_row is not None and row.token_revoked_at is None
                until = min(until, _epoch(row.token_expires_at)) if token_ok else 0.0
        self._remember(digest, until)
        return until > time.time()

    def _live_before_outage(self, digest: str) -> bool:
        """Whether the session was checked live within ``outage_grace`` seconds.

        A pathologist's viewer keeps working through a database restart: nobody can revoke a
        session while the database is down either, so the last answer is still the truth.
        """
        entry = self._cache.get(digest)
        if entry is None or entry[1] <= time.time():
            return False
        checked = entry[0] - self.check_ttl
        return time.monotonic() - checked < self.outage_grace

    def revoke(self, session_id: str) -> bool:
        """End a session (logout); return whether it was live. Effective at once here."""
        digest = _hash(session_id)
        with self.writer.begin() as conn:
            result = conn.execute(
                update(sessions)
                .where(sessions.c.id_hash == digest)
                .where(sessions.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        self._remember(digest, 0.0)
        return bool(result.rowcount)

    def _remember(self, digest: str, until: float) -> None:
        with self._lock:
            if len(self._cache) >= MAX_CACHE:
                self._cache.clear()
            entry = self._cache.get(digest)
            if entry is not None and entry[1] == 0.0:
                # An ended session never comes back: a check that read the row just before a
                # logout committed must not overwrite the logout's entry.
                until = 0.0
            self._cache[digest] = (time.monotonic() + self.check_ttl, until)
