"""Who is asking: the principal every request carries once authenticated, and the roles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ADMIN = "admin"
PATHOLOGIST = "pathologist"
RESEARCHER = "researcher"
LIS = "lis"
ROLES = (ADMIN, PATHOLOGIST, RESEARCHER, LIS)
"""Every role, most privileged first (a JWT listing several roles gets the first it lists here)."""

PHI_ROLES = frozenset({ADMIN, PATHOLOGIST, LIS})
"""Roles that see patient and case fields; everyone else gets de-identified views."""

STATE_KEY = "principal"
"""Where the authentication middleware leaves the principal in the ASGI scope's state."""
ERROR_KEY = "auth_error"
"""Where it leaves why the credentials were refused (no principal then)."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a token, an OIDC subject, a session, or the open-mode demo."""

    subject: str
    """Stable ID for the audit trail: ``token:NAME``, the JWT ``sub``, or ``anonymous``."""
    role: str
    token_name: str | None = None
    """The API token's name, when a token (or a session opened with one) authenticated."""
    collections: tuple[str, ...] = ()
    """Collections this caller is limited to (researchers); empty means every slide."""
    method: str = "token"
    """``token``, ``oidc``, ``session`` or ``open``."""
    token_id: int | None = None
    """Row ID of the API token, so sessions opened with a revoked token die with it."""
    session_id: str | None = None
    """The server-side session a session cookie names (logout revokes it)."""

    @property
    def sees_phi(self) -> bool:
        """Tell whether patient and case fields may be shown to this caller."""
        return self.role in PHI_ROLES

    @property
    def demo(self) -> bool:
        """Tell whether this is the anonymous principal of ``auth=open``."""
        return self.method == "open"

    def to_claims(self) -> dict[str, Any]:
        """Return the fields a session cookie carries."""
        return {
            "sub": self.subject,
            "role": self.role,
            "name": self.token_name,
            "col": list(self.collections),
            "via": self.method,
            "tid": self.token_id,
            "sid": self.session_id,
        }

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> Principal:
        """Rebuild a principal from a verified session cookie."""
        role = str(claims["role"])
        if role not in ROLES:
            raise ValueError("unknown role")
        tid = claims.get("tid")
        sid = claims.get("sid")
        return cls(
            subject=str(claims["sub"]),
            role=role,
            token_name=claims.get("name"),
            collections=tuple(str(c) for c in claims.get("col") or ()),
            method="session",
            token_id=int(tid) if tid is not None else None,
            session_id=str(sid) if sid else None,
        )


ANONYMOUS = Principal(subject="anonymous", role=PATHOLOGIST, method="open")
"""The principal of every request in ``auth=open`` (the local demo)."""


def parse_collections(text: str) -> tuple[str, ...]:
    """Split a comma-separated collection list, trimming slashes and blanks."""
    return tuple(c.strip().strip("/") for c in text.split(",") if c.strip().strip("/"))


def in_collections(collections: tuple[str, ...], root_name: str, relpath: str) -> bool:
    """Tell whether a slide (root folder name, relative path) is in any of ``collections``.

    A collection names a root folder (its last path component) or a path prefix inside a root:
    ``study-a`` grants ``study-a/**`` of every root and every slide of a root named ``study-a``.
    """
    if not collections:
        return True
    for collection in collections:
        if collection == root_name or relpath == collection:
            return True
        if relpath.startswith(collection + "/"):
            return True
    return False
