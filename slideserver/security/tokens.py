"""API tokens: created once and shown once, stored only as a SHA-256 hash, revocable.

A token is ``ss_`` followed by 32 random bytes in URL-safe base64. Its SHA-256 is the lookup key:
with 256 bits of entropy a plain hash is as strong as a slow one, and it lets every request be
checked by one indexed lookup. Verified tokens are cached for ``cache_ttl`` seconds, so a
revocation reaches every process within that time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from slideserver.security.principals import ROLES, Principal, parse_collections
from slideserver.security.schema import api_tokens

K = TypeVar("K")
V = TypeVar("V")

TOKEN_PREFIX = "ss_"
MAX_CACHE = 10_000
"""Cached lookups kept at most (unknown tokens included), so garbage tokens cannot fill memory."""


class TokenError(ValueError):
    """A token cannot be created or revoked as asked (bad role, duplicate name...)."""


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


class TokenStore:
    """API tokens in the catalog database."""

    def __init__(self, engine: Engine, writer: Engine, cache_ttl: float = 30.0) -> None:
        self.engine = engine
        self.writer = writer
        self.cache_ttl = cache_ttl
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._active: dict[int, tuple[float, bool]] = {}
        self._lock = threading.Lock()

    def create(self, name: str, role: str, collections: str = "") -> tuple[TokenInfo, str]:
        """Create a token; return its description and the token (shown only this once)."""
        name = name.strip()
        if not name or len(name) > 100 or not name.isprintable():
            raise TokenError("a token name is 1 to 100 printable characters")
        if role not in ROLES:
            raise TokenError(f"role must be one of {', '.join(ROLES)}")
        token = new_token()
        prefix = token[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + 8]
        cols = parse_collections(collections)
        now = datetime.now(UTC)
        try:
            with self.writer.begin() as conn:
                row_id = conn.execute(
                    insert(api_tokens).values(
                        name=name,
                        role=role,
                        prefix=prefix,
                        token_hash=hash_token(token),
                        collections=",".join(cols),
                        created_at=now,
                    )
                ).inserted_primary_key
        except IntegrityError as exc:
            raise TokenError(f"a token named {name!r} exists already") from exc
        assert row_id is not None
        return TokenInfo(int(row_id[0]), name, role, prefix, cols, now, None), token

    def list(self) -> list[TokenInfo]:
        """Return every token, revoked ones included, oldest first."""
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
                _utc(r.revoked_at) if r.revoked_at is not None else None,
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
        with self._lock:
            self._cache.clear()
            self._active.clear()
        return int(result.rowcount or 0)

    def cached(self, token: str) -> tuple[bool, Principal | None]:
        """Return ``(known, principal)`` from the cache without touching the database."""
        entry = self._cache.get(hash_token(token))
        if entry is None or entry[0] < time.monotonic():
            return False, None
        return True, entry[1]

    def authenticate(self, token: str) -> Principal | None:
        """Return the principal of a valid, unrevoked token, else ``None`` (may block: DB)."""
        digest = hash_token(token)
        known, principal = self.cached(token)
        if known:
            return principal
        principal = None
        if looks_like_token(token):
            with self.engine.connect() as conn:
                row = conn.execute(
                    select(api_tokens).where(api_tokens.c.token_hash == digest)
                ).first()
            if (
                row is not None
                and row.revoked_at is None
                and hmac.compare_digest(row.token_hash, digest)
            ):
                principal = Principal(
                    subject=f"token:{row.name}",
                    role=row.role,
                    token_name=row.name,
                    collections=parse_collections(row.collections or ""),
                    method="token",
                    token_id=row.id,
                )
        self._remember(self._cache, digest, principal)
        return principal

    def is_active(self, token_id: int) -> bool:
        """Tell whether the token with that row ID is still unrevoked (cached, may block)."""
        entry = self._active.get(token_id)
        if entry is not None and entry[0] >= time.monotonic():
            return entry[1]
        with self.engine.connect() as conn:
            row = conn.execute(
                select(api_tokens.c.revoked_at).where(api_tokens.c.id == token_id)
            ).first()
        active = row is not None and row.revoked_at is None
        self._remember(self._active, token_id, active)
        return active

    def _remember(self, cache: dict[K, tuple[float, V]], key: K, value: V) -> None:
        with self._lock:
            if len(cache) >= MAX_CACHE:
                cache.clear()
            cache[key] = (time.monotonic() + self.cache_ttl, value)
