"""API tokens: created once and shown once, stored only as a SHA-256 hash, expiring, revocable.

A token is ``ss_`` followed by 32 random bytes in URL-safe base64. Its SHA-256 is the lookup key:
with 256 bits of entropy a plain hash is as strong as a slow one, and it lets every request be
checked by one indexed lookup. Verified tokens are cached for ``cache_ttl`` seconds (never past
their expiry), so a revocation reaches every process within that time.

Tokens expire (:data:`DEFAULT_LIFETIME` unless asked otherwise; never only when asked).
:meth:`TokenStore.rotate` gives a name a new secret and keeps the old one valid for an overlap,
so the clients using it can be switched over without downtime.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from slideserver.errors import BackendUnavailable
from slideserver.security.principals import ROLES, Principal, parse_collections
from slideserver.security.schema import api_tokens

K = TypeVar("K")
V = TypeVar("V")

TOKEN_PREFIX = "ss_"
MAX_CACHE = 10_000
"""Cached lookups kept at most (unknown tokens included), so garbage tokens cannot fill memory."""
DEFAULT_LIFETIME = timedelta(days=90)
"""How long a new token is valid unless told otherwise."""
DEFAULT_OVERLAP = timedelta(days=1)
"""How long a rotated token's old secret keeps working unless told otherwise."""
NEVER = "never"
_DURATION = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION = timedelta(days=100 * 365)


class TokenError(ValueError):
    """A token cannot be created, rotated or revoked as asked (bad role, duplicate name...)."""


@dataclass(frozen=True)
class TokenInfo:
    """What ``token list`` shows: never the token itself."""

    id: int
    name: str
    role: str
    prefix: str
    collections: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None
    expires_at: datetime | None = None
    """``None``: never expires."""
    rotated_at: datetime | None = None
    """When ``token rotate`` replaced this secret (it stays valid until ``expires_at``)."""

    def state(self, now: datetime | None = None) -> str:
        """Return ``revoked``, ``expired``, ``rotated`` (old secret, still valid) or ``active``."""
        now = now or datetime.now(UTC)
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "rotated" if self.rotated_at is not None else "active"


@dataclass(frozen=True)
class TokenCheck:
    """The outcome of checking a presented token: its principal, or why it is refused."""

    principal: Principal | None
    expired_at: datetime | None = None
    """Set when the token is known and unrevoked but expired (so the 401 can say so)."""
    valid_until: float = float("inf")
    """``time.time()`` at which a valid token expires (a cached answer must not outlive it)."""


UNKNOWN = TokenCheck(None)


def parse_duration(text: str, *, allow_never: bool = False) -> timedelta | None:
    """Parse ``90d``, ``12h``, ``30m``, ``45s`` (or ``never`` when allowed, giving ``None``)."""
    raw = text.strip().lower()
    if allow_never and raw == NEVER:
        return None
    match = _DURATION.fullmatch(raw)
    if match is None:
        hint = ", or never" if allow_never else ""
        raise TokenError(f"a duration is a whole number with a unit s, m, h or d (90d){hint}")
    duration = timedelta(seconds=int(match[1]) * _UNITS[match[2]])
    if duration > MAX_DURATION:
        raise TokenError("a duration is at most 100 years")
    return duration


def new_token() -> str:
    """Return a fresh random token."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """Return the stored form of ``token``."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def looks_like_token(credential: str) -> bool:
    """Tell API tokens from JWTs (which never start with ``ss_``)."""
    return credential.startswith(TOKEN_PREFIX)


def _utc(value: datetime) -> datetime:
    """Return ``value`` in UTC (SQLite hands stored times back naive, PostgreSQL aware)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _maybe_utc(value: datetime | None) -> datetime | None:
    return _utc(value) if value is not None else None


class TokenStore:
    """API tokens in the catalog database."""

    def __init__(
        self, engine: Engine, writer: Engine, cache_ttl: float = 30.0, outage_grace: float = 0.0
    ) -> None:
        self.outage_grace = outage_grace
        """Seconds a token checked valid before the database became unreachable stays valid
        while it is (nobody can revoke it meanwhile: revoking writes to the same database)."""
        self.engine = engine
        self.writer = writer
        self.cache_ttl = cache_ttl
        self._cache: dict[str, tuple[float, TokenCheck]] = {}
        self._active: dict[int, tuple[float, float]] = {}
        """Token row ID -> (cache deadline, ``time.time()`` it stops being valid; 0: revoked)."""
        self._lock = threading.Lock()

    def create(
        self,
        name: str,
        role: str,
        collections: str = "",
        lifetime: timedelta | None = DEFAULT_LIFETIME,
    ) -> tuple[TokenInfo, str]:
        """Create a token valid for ``lifetime`` (``None``: forever); return its description
        and the token (shown only this once)."""
        name = name.strip()
        if not name or len(name) > 100 or not name.isprintable():
            raise TokenError("a token name is 1 to 100 printable characters")
        if role not in ROLES:
            raise TokenError(f"role must be one of {', '.join(ROLES)}")
        try:
            with self.writer.begin() as conn:
                return self._insert(conn, name, role, parse_collections(collections), lifetime, 0)
        except IntegrityError as exc:
            raise TokenError(f"a token named {name!r} exists already") from exc

    def rotate(
        self,
        name: str,
        overlap: timedelta = DEFAULT_OVERLAP,
        lifetime: timedelta | None = DEFAULT_LIFETIME,
    ) -> tuple[TokenInfo, str, datetime | None]:
        """Give token ``name`` a new secret (same role and collections, valid for ``lifetime``).

        The old secret stays valid for ``overlap`` more (never past its own expiry). Return the
        new token's description, the new token (shown only this once), and when the old secret
        stops working (``None``: it already had).
        """
        now = datetime.now(UTC)
        try:
            with self.writer.begin() as conn:
                current = conn.execute(
                    select(api_tokens)
                    .where(api_tokens.c.name == name.strip())
                    .order_by(api_tokens.c.generation.desc())
                    .limit(1)
                ).first()
                if current is None:
                    raise TokenError(f"no token named {name.strip()!r}")
                if current.revoked_at is not None:
                    raise TokenError(f"token {current.name!r} is revoked; create a new one")
                old_until = now + overlap
                if current.expires_at is not None:
                    old_until = min(_utc(current.expires_at), now + overlap)
                conn.execute(
                    update(api_tokens)
                    .where(api_tokens.c.id == current.id)
                    .values(rotated_at=now, expires_at=old_until)
                )
                info, token = self._insert(
                    conn,
                    current.name,
                    current.role,
                    parse_collections(current.collections or ""),
                    lifetime,
                    current.generation + 1,
                )
        except IntegrityError as exc:
            raise TokenError(f"token {name.strip()!r} is being rotated already") from exc
        self._forget()
        return info, token, old_until if old_until > now else None

    @staticmethod
    def _insert(
        conn: Connection,
        name: str,
        role: str,
        collections: tuple[str, ...],
        lifetime: timedelta | None,
        generation: int,
    ) -> tuple[TokenInfo, str]:
        token = new_token()
        prefix = token[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + 8]
        now = datetime.now(UTC)
        expires_at = now + lifetime if lifetime is not None else None
        row_id = conn.execute(
            insert(api_tokens).values(
                name=name,
                role=role,
                prefix=prefix,
                token_hash=hash_token(token),
                collections=",".join(collections),
                created_at=now,
                expires_at=expires_at,
                generation=generation,
            )
        ).inserted_primary_key
        assert row_id is not None
        info = TokenInfo(int(row_id[0]), name, role, prefix, collections, now, None, expires_at)
        return info, token

    def list(self) -> list[TokenInfo]:
        """Return every token, revoked, expired and rotated ones included, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(api_tokens).order_by(api_tokens.c.id)).all()
        return [
            TokenInfo(
                r.id,
                r.name,
                r.role,
                r.prefix,
                parse_collections(r.collections or ""),
                _utc(r.created_at),
                _maybe_utc(r.revoked_at),
                _maybe_utc(r.expires_at),
                _maybe_utc(r.rotated_at),
            )
            for r in rows
        ]

    def revoke(self, name_or_prefix: str) -> int:
        """Revoke the tokens with that name or prefix; return how many were revoked."""
        key = name_or_prefix.strip()
        if not key:
            return 0
        with self.writer.begin() as conn:
            result = conn.execute(
                update(api_tokens)
                .where((api_tokens.c.name == key) | (api_tokens.c.prefix == key))
                .where(api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        self._forget()
        return int(result.rowcount or 0)

    def cached_check(self, token: str) -> TokenCheck | None:
        """Return the cached outcome of checking ``token``, without touching the database."""
        entry = self._cache.get(hash_token(token))
        if entry is None or entry[0] < time.monotonic() or entry[1].valid_until <= time.time():
            return None
        return entry[1]

    def cached(self, token: str) -> tuple[bool, Principal | None]:
        """Return ``(known, principal)`` from the cache without touching the database."""
        check = self.cached_check(token)
        return (False, None) if check is None else (True, check.principal)

    def check(self, token: str) -> TokenCheck:
        """Check a presented token: its principal when valid, unrevoked and unexpired, else
        why not (may block: DB)."""
        check = self.cached_check(token)
        if check is not None:
            return check
        digest = hash_token(token)
        check = UNKNOWN
        if looks_like_token(token):
            try:
                with self.engine.connect() as conn:
                    row = conn.execute(
                        select(api_tokens).where(api_tokens.c.token_hash == digest)
                    ).first()
            except BackendUnavailable:
                stale = self._before_outage(self._cache, digest)
                if stale is not None and stale.principal and stale.valid_until > time.time():
                    return stale
                raise
            if (
                row is not None
                and row.revoked_at is None
                and hmac.compare_digest(row.token_hash, digest)
            ):
                expires_at = _maybe_utc(row.expires_at)
                if expires_at is not None and expires_at <= datetime.now(UTC):
                    check = TokenCheck(None, expired_at=expires_at)
                else:
                    principal = Principal(
                        subject=f"token:{row.name}",
                        role=row.role,
                        token_name=row.name,
                        collections=parse_collections(row.collections or ""),
                        method="token",
                        token_id=row.id,
                    )
                    until = expires_at.timestamp() if expires_at is not None else float("inf")
                    check = TokenCheck(principal, valid_until=until)
        self._remember(self._cache, digest, check)
        return check

    def authenticate(self, token: str) -> Principal | None:
        """Return the principal of a valid, unrevoked, unexpired token, else ``None``."""
        return self.check(token).principal

    def is_active(self, token_id: int) -> bool:
        """Tell whether the token with that row ID is unrevoked and unexpired (cached, may
        block)."""
        entry = self._active.get(token_id)
        if entry is not None and entry[0] >= time.monotonic():
            return entry[1] > time.time()
        try:
            with self.engine.connect() as conn:
                row = conn.execute(
                    select(api_tokens.c.revoked_at, api_tokens.c.expires_at).where(
                        api_tokens.c.id == token_id
                    )
                ).first()
        except BackendUnavailable:
            stale_until = self._before_outage(self._active, token_id)
            if stale_until is not None and stale_until > time.time():
                return True
            raise
        until = 0.0
        if row is not None and row.revoked_at is None:
            expires_at = _maybe_utc(row.expires_at)
            until = expires_at.timestamp() if expires_at is not None else float("inf")
        self._remember(self._active, token_id, until)
        return until > time.time()

    def _before_outage(self, cache: dict[K, tuple[float, V]], key: K) -> V | None:
        """The last answer for ``key`` if it was checked within ``outage_grace`` seconds."""
        entry = cache.get(key)
        if entry is None or time.monotonic() - (entry[0] - self.cache_ttl) >= self.outage_grace:
            return None
        return entry[1]

    def _forget(self) -> None:
        with self._lock:
            self._cache.clear()
            self._active.clear()

    def _remember(self, cache: dict[K, tuple[float, V]], key: K, value: V) -> None:
        with self._lock:
            if len(cache) >= MAX_CACHE:
                cache.clear()
            cache[key] = (time.monotonic() + self.cache_ttl, value)
