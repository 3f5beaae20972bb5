"""The delivery outbox: one durable row per signed version and target, and the worker.

Rows are written in the transaction that signs or amends (:func:`queue`), so nothing signed is
ever left undelivered by a crash. The :class:`OutboxWorker` claims due rows with a lease (a
process that dies mid-send loses its lease, and the row is taken again when it expires), hands
each to its :class:`Target`, and records the outcome: ``delivered``, ``failing`` (with the
reason and the next attempt, backing off exponentially) or ``given_up`` after
``max_attempts``. Targets are idempotent (FHIR conditional writes, a stable HL7 message
control ID), so a delivery repeated after a lost answer or a lost lease duplicates nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import anyio
from anyio.to_thread import run_sync
from sqlalchemy import Connection, Engine, and_, func, insert, or_, select, update

from slideserver.catalog.cases import CaseView
from slideserver.db.engine import now
from slideserver.reports.model import Delivery, ReportVersion
from slideserver.reports.schema import report_outbox

log = logging.getLogger("slideserver.reports")

PENDING = "pending"
DELIVERED = "delivered"
FAILING = "failing"
GIVEN_UP = "given_up"
DUE = (PENDING, FAILING)
MAX_BACKOFF = 3600.0
MAX_DETAIL = 300


class DeliveryFailed(Exception):
    """A target could not deliver; ``detail`` says why (no PHI), ``permanent``: do not retry."""

    def __init__(self, detail: str, permanent: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail[:MAX_DETAIL]
        self.permanent = permanent


@dataclass(frozen=True)
class Outgoing:
    """What a target sends: the signed version, its PDF and the case it reports on."""

    version: ReportVersion
    pdf: bytes
    case: CaseView | None
    control_id: str
    """Stable across attempts (HL7 MSH-10), so the receiver can recognise a repeat."""


class Target(Protocol):
    """A system signed reports are delivered to."""

    name: str

    async def deliver(self, item: Outgoing) -> str:
        """Deliver ``item``; return a short note (resource ID, ACK); raise DeliveryFailed."""


@dataclass(frozen=True)
class Claim:
    """A due row this worker holds the lease of."""

    id: int
    report_id: str
    version: int
    target: str
    attempts: int


def queue(
    conn: Connection, report_id: str, version: int, targets: Sequence[str], at: datetime
) -> None:
    """Queue one delivery per target for a version (inside the signing transaction)."""
    for target in targets:
        conn.execute(
            insert(report_outbox).values(
                report_id=report_id,
                version=version,
                target=target,
                state=PENDING,
                attempts=0,
                next_at=at,
                detail="",
                created_at=at,
                updated_at=at,
            )
        )


def deliveries(conn: Connection, report_id: str, version: int) -> tuple[Delivery, ...]:
    """The delivery states of one version, by target."""
    rows = conn.execute(
        select(report_outbox)
        .where(report_outbox.c.report_id == report_id, report_outbox.c.version == version)
        .order_by(report_outbox.c.target)
    )
    return tuple(Delivery(r.target, r.state, r.detail, r.attempts) for r in rows)


def backoff(attempts: int, base: float) -> float:
    """Seconds before attempt ``attempts + 1``: ``base`` doubled per failure, at most 1 h."""
    return float(min(MAX_BACKOFF, base * 2 ** max(0, attempts - 1)))


class Outbox:
    """The outbox rows behind one engine: claim, settle, retry."""

    def __init__(self, engine: Engine, writer: Engine) -> None:
        self.engine = engine
        self.writer = writer

    def claim(self, owner: str, lease: float, limit: int = 10) -> list[Claim]:
        """Take the lease of up to ``limit`` due rows nobody holds (or whose lease expired)."""
        at = now()
        free = or_(report_outbox.c.lease_until.is_(None), report_outbox.c.lease_until < at)
        due = and_(report_outbox.c.state.in_(DUE), report_outbox.c.next_at <= at, free)
        with self.engine.connect() as conn:
            candidates = conn.execute(
                select(report_outbox).where(due).order_by(report_outbox.c.next_at).limit(limit)
            ).all()
        claimed = []
        for row in candidates:
            with self.writer.begin() as conn:
                taken = conn.execute(
                    update(report_outbox)
                    .where(report_outbox.c.id == row.id, due)
                    .values(lease_owner=owner, lease_until=at + timedelta(seconds=lease))
                ).rowcount
            if taken == 1:
                claimed.append(Claim(row.id, row.report_id, row.version, row.target, row.attempts))
        return claimed

    def settle(
        self,
        claim: Claim,
        owner: str,
        failure: DeliveryFailed | None,
        detail: str,
        retry_base: float,
        max_attempts: int,
    ) -> None:
        """Record the outcome of one attempt (only while this owner still holds the lease)."""
        at = now()
        attempts = claim.attempts + 1
        values: dict[str, object]
        if failure is None:
            values = {"state": DELIVERED, "detail": detail[:MAX_DETAIL]}
        elif failure.permanent or attempts >= max_attempts:
            values = {"state": GIVEN_UP, "detail": failure.detail}
        else:
            values = {
                "state": FAILING,
                "detail": failure.detail,
                "next_at": at + timedelta(seconds=backoff(attempts, retry_base)),
            }
        with self.writer.begin() as conn:
            conn.execute(
                update(report_outbox)
                .where(report_outbox.c.id == claim.id, report_outbox.c.lease_owner == owner)
                .values(
                    attempts=attempts,
                    lease_owner=None,
                    lease_until=None,
                    updated_at=at,
                    **values,
                )
            )

    def retry(self, report_id: str) -> int:
        """Make every failing or given-up delivery of a report due now; return how many."""
        at = now()
        with self.writer.begin() as conn:
            return int(
                conn.execute(
                    update(report_outbox)
                    .where(
                        report_outbox.c.report_id == report_id,
                        report_outbox.c.state.in_((FAILING, GIVEN_UP)),
                    )
                    .values(state=PENDING, attempts=0, next_at=at, updated_at=at)
                ).rowcount
            )

    def counts(self) -> dict[str, int]:
        """How many rows are in each state (one GROUP BY: ``/readyz`` asks on every probe)."""
        query = select(report_outbox.c.state, func.count()).group_by(report_outbox.c.state)
        with self.engine.connect() as conn:
            return {str(state): int(count) for state, count in conn.execute(query)}

    def check(self) -> str:
        """The ``/readyz`` check: ``ok``, ``retrying: N deliveries``, ``failing: N ... given up``.

        A given-up delivery is a signed report the EHR or LIS never received: an operator must
        see it (an admin retries it from the report), so it degrades readiness.
        """
        counts = self.counts()
        if given_up := counts.get(GIVEN_UP, 0):
            return f"failing: {_deliveries(given_up)} given up"
        if failing := counts.get(FAILING, 0):
            return f"retrying: {_deliveries(failing)}"
        return "ok"


def _deliveries(count: int) -> str:
    return f"{count} delivery" if count == 1 else f"{count} deliveries"


Load = Callable[[Claim], Outgoing]
"""Read what a claimed row delivers (the signed version, its PDF, the case): blocking."""


class OutboxWorker:
    """Deliver due rows to their targets until cancelled; woken early by :meth:`wake`."""

    def __init__(
        self,
        outbox: Outbox,
        targets: Sequence[Target],
        load: Load,
        *,
        retry_base: float = 5.0,
        max_attempts: int = 20,
        send_timeout: float = 30.0,
        poll: float = 1.0,
    ) -> None:
        self.outbox = outbox
        self.targets = {t.name: t for t in targets}
        self.load = load
        self.retry_base = retry_base
        self.max_attempts = max_attempts
        self.send_timeout = send_timeout
        self.lease = send_timeout * 2 + 5
        self.poll = poll
        self.owner = uuid.uuid4().hex
        self._wake = anyio.Event()

    def wake(self) -> None:
        """Look for due rows now (a version was just signed, or an admin asked for a retry)."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver forever (the app's lifespan runs this in its task group)."""
        while True:
            try:
                done = await self.run_once()
            except Exception as exc:  # the database is down: try again later
                log.warning("report outbox: %s", type(exc).__name__)
                done = 0
            if done == 0:
                with anyio.move_on_after(self.poll):
                    await self._wake.wait()
                self._wake = anyio.Event()

    async def run_once(self) -> int:
        """Claim due rows and attempt each once; return how many were attempted."""
        claims = await run_sync(self.outbox.claim, self.owner, self.lease)
        for claim in claims:
            await self._attempt(claim)
        return len(claims)

    async def _attempt(self, claim: Claim) -> None:
        failure: DeliveryFailed | None = None
        detail = ""
        target = self.targets.get(claim.target)
        try:
            if target is None:
                raise DeliveryFailed(f"target {claim.target} is not configured")
            item = await run_sync(self.load, claim)
            with anyio.fail_after(self.send_timeout):
                detail = await target.deliver(item)
        except DeliveryFailed as exc:
            failure = exc
        except TimeoutError:
            failure = DeliveryFailed(f"no answer within {self.send_timeout:g} s")
        except Exception as exc:
            failure = DeliveryFailed(f"{type(exc).__name__}")
        if failure is not None:
            log.warning(
                "report delivery %s v%d to %s failed: %s",
                claim.report_id,
                claim.version,
                claim.target,
                failure.detail,
            )
        await run_sync(
            self.outbox.settle,
            claim,
            self.owner,
            failure,
            detail,
            self.retry_base,
            self.max_attempts,
        )


__all__ = [
    "DELIVERED",
    "FAILING",
    "GIVEN_UP",
    "PENDING",
    "Claim",
    "DeliveryFailed",
    "Outbox",
    "OutboxWorker",
    "Outgoing",
    "Target",
    "backoff",
    "deliveries",
    "queue",
]
