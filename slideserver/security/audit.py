"""The audit trail: who read or changed what, when, from where, and how it was answered.

Rows live in the catalog database (``security_audit_events``), append-only (database triggers
refuse UPDATE and DELETE). Requests are written one row each, synchronously, before the answer
leaves: when the row cannot be written the request fails closed (503). Tile, Deep Zoom and IIIF
reads would be thousands of rows per viewing; they are summarized in memory into one row per
principal, slide and window of ``tile_window`` seconds, with a count, and flushed when the
window closes, periodically, and at shutdown.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, MutableMapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, String, insert, select

from slideserver.errors import BackendUnavailable
from slideserver.security.principals import Principal
from slideserver.security.schema import audit_events

log = logging.getLogger("slideserver.security.audit")

MAX_PENDING_SUMMARIES = 100_000
"""Tile summaries kept in memory at most while the database is unreachable."""


class AuditUnavailable(BackendUnavailable):
    """The audit trail cannot be written, so the request is refused."""

    code = "audit_unavailable"


@dataclass(frozen=True)
class AuditEvent:
    """One audit row."""

    at: datetime
    kind: str
    """``request`` (one request), ``attempt`` (a write, recorded before it runs) or ``tiles``."""
    subject: str
    role: str
    action: str
    """``METHOD /route/template`` (no concrete IDs: those have their own columns)."""
    method: str
    token_name: str | None = None
    slide_id: str | None = None
    case_id: str | None = None
    """The case (accession) the request names, or the slide's case when it was read."""
    patient_id: str | None = None
    """The patient (MRN) the request names, or the slide's patient when it was read."""
    resource: str | None = None
    """What of the slide was read, when not the slide itself: ``associated/label``."""
    client: str | None = None
    status: int | None = None
    request_id: str | None = None
    count: int = 1
    last_at: datetime | None = None
    id: int | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the row as JSON-ready values."""
        data = asdict(self)
        for key in ("at", "last_at"):
            value = data[key]
            data[key] = _utc(value).isoformat() if isinstance(value, datetime) else None
        return data


_ROW_FIELDS = tuple(f.name for f in fields(AuditEvent) if f.name != "id")
"""The columns an audit row is written with (its id is the database's)."""


def _row_of(event: AuditEvent) -> dict[str, Any]:
    """The row to insert, text cleaned. Flat: ``dataclasses.asdict`` deep-copies every value,
    which cost more than the insert when tile summaries were flushed at the shift's peak."""
    row: dict[str, Any] = {}
    for name in _ROW_FIELDS:
        value = getattr(event, name)
        row[name] = _clean(name, value) if isinstance(value, str) else value
    return row


@dataclass(frozen=True)
class AuditQuery:
    """Filters of ``GET /api/audit`` and ``audit export``; empty fields do not filter."""

    subject: str = ""
    role: str = ""
    kind: str = ""
    action: str = ""
    slide_id: str = ""
    case_id: str = ""
    patient_id: str = ""
    resource: str = ""
    status: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_id: int | None = None
    after_id: int | None = None


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_LENGTHS: dict[str, int] = {
    column.name: int(column.type.length)
    for column in audit_events.columns
    if isinstance(column.type, String) and column.type.length
}
"""Column widths: PostgreSQL refuses longer values where SQLite would store them."""


def _clean(name: str, value: str) -> str:
    """Return ``value`` as the ``name`` column stores it: no NUL, clipped to the column width.

    Request values (path and query parameters, JWT subjects) reach these columns. PostgreSQL
    refuses text with NUL bytes and values longer than a ``VARCHAR(n)``; one such value would
    make a request's audit row unwritable (a spurious 503) or, in a batch of tile summaries,
    every later flush. Filters are cleaned the same way, so they still match what was stored.
    """
    value = value.replace("\x00", "\ufffd")
    limit = _LENGTHS.get(name)
    return value[:limit] if limit is not None else value


NOTED_SUBJECTS = "audit_subjects"
"""Where a route leaves the (case, patient) its request turned out to concern, in the ASGI
scope's state (an LIS order names them only in its body): the request's audit row takes them."""


def note_subjects(scope: MutableMapping[str, Any], case: str | None, patient: str | None) -> None:
    """Name the case and patient a request concerns for its audit row (see NOTED_SUBJECTS)."""
    scope.setdefault("state", {})[NOTED_SUBJECTS] = (case, patient)


SlideSubjects = tuple[str | None, str | None]
"""The case (accession) and patient (MRN) a slide is linked to, either unknown (``None``)."""
NO_SUBJECTS: SlideSubjects = (None, None)

_TileKey = tuple[str, str, str | None, str, str | None, str | None, int]
"""Subject, role, token name, slide, case, patient, window: one summary row each."""


class AuditStore:
    """Write and read the audit trail; summarize tile reads."""

    def __init__(self, engine: Engine, writer: Engine, tile_window: int = 300) -> None:
        self.engine = engine
        self.writer = writer
        self.tile_window = max(1, tile_window)
        self._tiles: dict[_TileKey, list[Any]] = {}
        self._lock = threading.Lock()

    # -- writing --

    def write(self, event: AuditEvent) -> None:
        """Append one row; raise :class:`AuditUnavailable` when it cannot be stored."""
        self.write_many([event])

    def write_many(self, events: list[AuditEvent]) -> None:
        """Append rows in one transaction; raise :class:`AuditUnavailable` on failure."""
        if not events:
            return
        rows = [_row_of(event) for event in events]
        try:
            with self.writer.begin() as conn:
                conn.execute(insert(audit_events), rows)
        except Exception as exc:
            log.error("audit trail not writable: %s", type(exc).__name__)
            raise AuditUnavailable("the audit trail cannot be written; try again later") from exc

    def tile_read(
        self,
        principal: Principal,
        slide_id: str,
        client: str | None,
        subjects: SlideSubjects = NO_SUBJECTS,
    ) -> None:
        """Count one tile (or Deep Zoom/IIIF/thumbnail) read of ``slide_id`` (no I/O).

        ``subjects``: the case and patient the slide is linked to now; a slide relinked within a
        window starts a new summary row. Called for every tile a viewer fetches, so it keeps
        POSIX seconds; datetimes are made when the summaries are written.
        """
        now = time.time()
        key = (
            principal.subject,
            principal.role,
            principal.token_name,
            slide_id,
            subjects[0],
            subjects[1],
            int(now) // self.tile_window,
        )
        with self._lock:
            entry = self._tiles.get(key)
            if entry is None:
                if len(self._tiles) >= MAX_PENDING_SUMMARIES:
                    log.error("audit tile summaries dropped: too many pending")
                    return
                self._tiles[key] = [1, now, now, client]
            else:
                entry[0] += 1
                entry[2] = now

    def flush_tiles(self, everything: bool = False) -> int:
        """Write the summaries of closed windows (all of them with ``everything``)."""
        current = int(datetime.now(UTC).timestamp()) // self.tile_window
        with self._lock:
            keys = [k for k in self._tiles if everything or k[-1] < current]
            taken = {k: self._tiles.pop(k) for k in keys}
        events = [
            AuditEvent(
                at=datetime.fromtimestamp(first, UTC),
                kind="tiles",
                subject=subject,
                role=role,
                token_name=token_name,
                action="GET tiles",
                method="GET",
                slide_id=slide_id,
                case_id=case_id,
                patient_id=patient_id,
                client=client,
                count=count,
                last_at=datetime.fromtimestamp(last, UTC),
            )
            for (subject, role, token_name, slide_id, case_id, patient_id, _), (
                count,
                first,
                last,
                client,
            ) in taken.items()
        ]
        try:
            self.write_many(events)
        except AuditUnavailable:
            with self._lock:  # keep them for the next flush
                for key, entry in taken.items():
                    self._tiles.setdefault(key, entry)
            return 0
        return len(events)

    # -- reading --

    def query(
        self, query: AuditQuery, limit: int = 100, newest_first: bool = True
    ) -> list[AuditEvent]:
        """Return rows matching ``query``."""
        c = audit_events.c
        stmt = select(audit_events)
        text_filters = {
            "subject": c.subject,
            "role": c.role,
            "kind": c.kind,
            "slide_id": c.slide_id,
            "case_id": c.case_id,
            "patient_id": c.patient_id,
            "resource": c.resource,
        }
        for name, column in text_filters.items():
            value = getattr(query, name)
            if value:
                stmt = stmt.where(column == _clean(name, value))
        if query.action:
            action = _clean("action", query.action)
            stmt = stmt.where(c.action.contains(action, autoescape=True))
        if query.status is not None:
            stmt = stmt.where(c.status == query.status)
        if query.since is not None:
            stmt = stmt.where(c.at >= _utc(query.since))
        if query.until is not None:
            stmt = stmt.where(c.at <= _utc(query.until))
        if query.before_id is not None:
            stmt = stmt.where(c.id < query.before_id)
        if query.after_id is not None:
            stmt = stmt.where(c.id > query.after_id)
        stmt = stmt.order_by(c.id.desc() if newest_first else c.id).limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        events = []
        for r in rows:
            data = dict(r._mapping)
            data["at"] = _utc(data["at"])
            if data["last_at"] is not None:
                data["last_at"] = _utc(data["last_at"])
            events.append(AuditEvent(**data))
        return events

    def export(self, query: AuditQuery, batch: int = 1000) -> Iterator[AuditEvent]:
        """Yield every matching row, oldest first, in batches."""
        after = query.after_id or 0
        while True:
            rows = self.query(replace(query, after_id=after), batch, newest_first=False)
            yield from rows
            if len(rows) < batch:
                return
            after = rows[-1].id or after
