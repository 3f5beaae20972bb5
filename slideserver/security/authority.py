"""The security authority of one app: who is asking (API tokens, OIDC, sessions), what they may
see (collections), and what is recorded (the audit store), over the settings it was built with.

Built by ``create_app`` (no I/O), opened in the lifespan (database, migrations), closed at
shutdown (pending tile summaries flushed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import anyio
from anyio.to_thread import run_sync
from sqlalchemy import Engine

from slideserver.security.audit import NO_SUBJECTS, AuditStore, SlideSubjects
from slideserver.security.oidc import InvalidToken, KeysUnavailable, OidcVerifier
from slideserver.security.principals import ANONYMOUS, Principal, in_collections
from slideserver.security.session import SessionSigner, cookie_value
from slideserver.security.session_store import SessionStore
from slideserver.security.tokens import TokenStore, looks_like_token
from slideserver.settings import Settings

log = logging.getLogger("slideserver.security")

AUTH_MODES = ("open", "tokens", "oidc")
LOCATION_CACHE = 10_000
LOCATION_TTL = 60.0
SUBJECTS_TTL = 10.0
"""Seconds a slide's case and patient are trusted for audit rows: a slide relinked to another
case is recorded under the new one at most this long after (one catalog query per slide and
this time, not one per tile)."""


T = TypeVar("T")


class Coalesce(Protocol):
    """Runs ``compute`` once for the concurrent callers of one ``key`` (a single flight)."""

    async def __call__(self, key: str, compute: Callable[[], Awaitable[T]]) -> T: ...


async def _alone(key: str, compute: Callable[[], Awaitable[T]]) -> T:
    """No coalescing: every caller computes (until the app hands its single flight)."""
    return await compute()


@dataclass(frozen=True)
class AuthFailure:
    """Why credentials were refused: 401 (bad credentials) or 503 (identity provider down)."""

    status: int
    detail: str


class Security:
    """Authentication, sessions and audit for one app."""

    def __init__(self, settings: Settings) -> None:
        if settings.auth not in AUTH_MODES:
            raise ValueError(f"auth must be one of {', '.join(AUTH_MODES)}, not {settings.auth!r}")
        self.settings = settings
        self.mode = settings.auth
        self.verifier = OidcVerifier(settings) if self.mode == "oidc" else None
        if self.mode != "open" and not settings.session_secret:
            log.warning(
                "no session_secret: viewer sessions end at restart and do not cross workers"
            )
        self.signer = SessionSigner(settings.session_secret, settings.session_max_age)
        self.engine: Engine | None = None
        self.tokens: TokenStore | None = None
        self.sessions: SessionStore | None = None
        self.audit: AuditStore | None = None
        self.locate: Callable[[str], tuple[str, str] | None] = _nowhere
        """Where a slide lies (root folder name, relative path), for collection rules: set by
        whoever opens the catalog (the app's lifespan). Blocking; called in a worker thread."""
        self._locations: dict[str, tuple[float, tuple[str, str] | None]] = {}
        self.subjects_of: Callable[[str], SlideSubjects | None] = _unlinked
        """The case (accession) and patient (MRN) a slide is linked to, for audit rows: set by
        whoever opens the catalog (the app's lifespan). Blocking; called in a worker thread."""
        self._subjects: dict[str, tuple[float, SlideSubjects]] = {}
        self.coalesce: Coalesce = _alone
        """Shares one database check among concurrent requests needing the same one (a viewer
        asks for six tiles at once; each would check its expired session): the app's single
        flight, set by its lifespan."""

    # -- lifecycle --

    def open(self, database_url: str = "") -> None:
        """Open the database, migrate the security tables, and create the stores (blocking)."""
        from slideserver.db.engine import default_database_url, make_engine, writer
        from slideserver.security.migrations import upgrade

        self.engine = make_engine(database_url or default_database_url(self.settings))
        write_engine = writer(self.engine)
        upgrade(write_engine)
        grace = self.settings.catalog_outage_grace  # credentials ride out an outage like tiles
        self.tokens = TokenStore(self.engine, write_engine, self.settings.token_cache_ttl, grace)
        self.sessions = SessionStore(
            self.engine, write_engine, self.settings.session_check_ttl, grace
        )
        self.audit = AuditStore(self.engine, write_engine, self.settings.audit_tile_window)

    def close(self) -> None:
        """Flush pending tile summaries and release the database (blocking)."""
        if self.audit is not None:
            self.audit.flush_tiles(everything=True)
        if self.engine is not None:
            self.engine.dispose()

    async def run_flusher(self) -> None:
        """Write closed tile-summary windows periodically (a lifespan background task)."""
        interval = min(60.0, float(self.settings.audit_tile_window))
        while True:
            await anyio.sleep(interval)
            if self.audit is not None:
                await run_sync(self.audit.flush_tiles)

    # -- authentication --

    async def authenticate(
        self, headers: Mapping[str, str]
    ) -> tuple[Principal | None, AuthFailure | None]:
        """Return the principal of a request's credentials, or why they are refused."""
        authorization = headers.get("authorization", "")
        if self.mode == "open" and not authorization:
            # The demo user; a request that presents a token is still checked and gets its
            # own role, so the LIS can push orders to a demo server with an ``lis`` token.
            return ANONYMOUS, None
        if authorization:
            scheme, _, credential = authorization.partition(" ")
            credential = credential.strip()
            if scheme.lower() != "bearer" or not credential:
                return None, AuthFailure(401, "use Authorization: Bearer TOKEN")
            return await self.authenticate_bearer(credential)
        cookie = cookie_value(headers.get("cookie", ""))
        if cookie:
            principal = self.signer.verify(cookie)
            if principal is not None and not await self.session_live(principal):
                principal = None
            if principal is None:
                return None, AuthFailure(401, "the session has expired or is invalid; log in again")
            return principal, None
        return None, None

    async def session_live(self, principal: Principal) -> bool:
        """Tell whether a cookie's server-side session is still open (logout, token
        revocation and expiry end it); cached per process, see ``session_check_ttl``."""
        sessions = self.sessions
        if sessions is None or principal.session_id is None:
            return False
        session_id = principal.session_id
        live = sessions.cached(session_id)
        if live is None:
            live = await self.coalesce(
                "session:" + session_id, lambda: run_sync(sessions.is_live, session_id)
            )
        return live

    async def authenticate_bearer(
        self, credential: str
    ) -> tuple[Principal | None, AuthFailure | None]:
        """Verify an API token or (with ``auth=oidc``) a JWT."""
        invalid = AuthFailure(401, "invalid or expired bearer token")
        if looks_like_token(credential) or self.verifier is None:
            tokens = self.tokens
            if tokens is None:
                return None, AuthFailure(503, "the token store is not open")
            check = tokens.cached_check(credential)
            if check is None:
                check = await run_sync(tokens.check, credential)
            if check.expired_at is not None:
                when = f"{check.expired_at:%Y-%m-%d %H:%M} UTC"
                detail = f"this API token expired on {when}; ask an administrator for a new one"
                return None, AuthFailure(401, detail)
            principal = check.principal
            return (principal, None) if principal is not None else (None, invalid)
        try:
            return await run_sync(self.verifier.verify, credential), None
        except InvalidToken as exc:
            return None, AuthFailure(401, f"invalid bearer token: {exc}")
        except KeysUnavailable as exc:
            log.warning("OIDC keys unavailable: %s", exc)
            return None, AuthFailure(503, "the identity provider's keys cannot be fetched")

    # -- collections --

    async def slide_visible(self, principal: Principal, slide_id: str) -> bool:
        """Tell whether a collection-limited principal may see ``slide_id``."""
        entry = self._locations.get(slide_id)
        if entry is None or entry[0] < time.monotonic():
            location = await self.coalesce(
                "location:" + slide_id, lambda: run_sync(self.locate, slide_id)
            )
            if len(self._locations) >= LOCATION_CACHE:
                self._locations.clear()
            self._locations[slide_id] = (time.monotonic() + LOCATION_TTL, location)
        else:
            location = entry[1]
        return location is not None and in_collections(principal.collections, *location)

    # -- audit subjects --

    def known_subjects(self, slide_id: str) -> SlideSubjects | None:
        """The slide's case and patient while :data:`SUBJECTS_TTL` trusts them (no I/O)."""
        entry = self._subjects.get(slide_id)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def forget_subjects(self) -> None:
        """Look every slide's case and patient up again at its next read (after relinking)."""
        self._subjects.clear()

    async def slide_subjects(self, slide_id: str) -> SlideSubjects:
        """Return the case (accession) and patient (MRN) ``slide_id`` is linked to now."""
        known = self.known_subjects(slide_id)
        if known is not None:
            return known
        found = await self.coalesce(
            "subjects:" + slide_id, lambda: run_sync(self.subjects_of, slide_id)
        )
        subjects = found or NO_SUBJECTS
        if len(self._subjects) >= LOCATION_CACHE:
            self._subjects.clear()
        self._subjects[slide_id] = (time.monotonic() + SUBJECTS_TTL, subjects)
        return subjects


def _unlinked(slide_id: str) -> SlideSubjects | None:
    """No catalog yet: no slide is known to belong to a case."""
    return None


def _nowhere(slide_id: str) -> tuple[str, str] | None:
    """No catalog yet: no slide is located, so collection-limited principals see none."""
    return None


def principal_of(request: Any) -> Principal:
    """Return the principal the authentication middleware attached to ``request``."""
    from slideserver.errors import Unauthorized
    from slideserver.security.principals import STATE_KEY

    principal = request.scope.get("state", {}).get(STATE_KEY)
    if not isinstance(principal, Principal):
        raise Unauthorized("authentication required")
    return principal
