"""Reports and their versions in the catalog database: create, edit drafts, sign, amend.

Every method is one transaction. Signing and amending write the signed version and its outbox
rows (:mod:`slideserver.reports.outbox`) together, so a version is never signed without its
deliveries queued, nor queued without being signed. Signed rows are immutable in the database
itself (triggers of the first migration).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from slideserver.db.engine import now, writer
from slideserver.errors import Conflict, NotFound, PreconditionFailed
from slideserver.reports import outbox
from slideserver.reports.migrations import upgrade
from slideserver.reports.model import (
    AMENDMENTS,
    DRAFT,
    FINAL,
    SIGNED,
    Delivery,
    ReportBody,
    ReportVersion,
    body_from_json,
)
from slideserver.reports.schema import report_versions, reports

MAX_IDENTIFIER = 100


class ReportNotFound(NotFound):
    """No report (or no version of it) with that ID."""

    code = "report_not_found"


class ReportSigned(Conflict):
    """The report's current version is signed: it cannot be edited or signed again."""

    code = "report_signed"


class ReportNotSigned(Conflict):
    """Only a signed report can be amended."""

    code = "report_not_signed"


class ReportChanged(PreconditionFailed):
    """The draft changed since the caller read it (``If-Match`` names an older revision)."""

    code = "report_changed"


def new_report_id() -> str:
    """A public, opaque report ID (also a valid FHIR ID)."""
    return uuid.uuid4().hex


def _body_text(body: ReportBody) -> str:
    return json.dumps(body.to_json(), ensure_ascii=False, sort_keys=False)


class ReportStore:
    """The report tables behind one engine (the catalog database)."""

    def __init__(self, engine: Engine, migrate: bool = True) -> None:
        self.engine = engine
        self.writer = writer(engine)
        if migrate:
            upgrade(self.writer)

    # -- reading --

    def get(self, report_id: str, version: int | None = None) -> ReportVersion:
        """Return a version of a report (the newest by default); raise when there is none."""
        with self.engine.connect() as conn:
            return self._get(conn, report_id, version)

    def list_case(self, accession: str) -> list[ReportVersion]:
        """Return the newest version of every report of a case, oldest report first."""
        with self.engine.connect() as conn:
            ids = conn.execute(
                select(reports.c.id)
                .where(reports.c.accession == accession)
                .order_by(reports.c.created_at, reports.c.id)
            ).scalars()
            return [self._get(conn, report_id, None) for report_id in list(ids)]

    def pdf(self, report_id: str, version: int) -> bytes | None:
        """Return the signed PDF of a version (``None`` for a draft)."""
        with self.engine.connect() as conn:
            data = conn.execute(
                select(report_versions.c.pdf).where(
                    report_versions.c.report_id == report_id,
                    report_versions.c.version == version,
                )
            ).scalar()
        return bytes(data) if data is not None else None

    # -- writing --

    def create(
        self, accession: str, body: ReportBody, author: str, identifier: str | None = None
    ) -> tuple[ReportVersion, bool]:
        """Create a report with a draft first version; return it and whether it is new.

        A creation repeated with the same ``identifier`` (a client's retry) returns the report
        the first one made, whatever its state now.
        """
        if identifier is not None:
            identifier = identifier[:MAX_IDENTIFIER]
            found = self._by_identifier(accession, identifier)
            if found is not None:
                return found, False
        report_id = new_report_id()
        at = now()
        try:
            with self.writer.begin() as conn:
                conn.execute(
                    insert(reports).values(
                        id=report_id,
                        accession=accession,
                        identifier=identifier,
                        created_by=author,
                        created_at=at,
                    )
                )
                conn.execute(
                    insert(report_versions).values(
                        report_id=report_id,
                        version=1,
                        status=DRAFT,
                        body=_body_text(body),
                        revision=1,
                        author=author,
                        created_at=at,
                        reason="",
                    )
                )
                return self._get(conn, report_id, None), True
        except IntegrityError:
            # Two retries at once: the other one created it.
            found = self._by_identifier(accession, identifier) if identifier else None
            if found is None:
                raise
            return found, False

    def update_draft(self, report_id: str, body: ReportBody, etag: str) -> ReportVersion:
        """Replace the draft's body; ``etag`` must be the draft's current ETag."""
        with self.writer.begin() as conn:
            current = self._get(conn, report_id, None)
            self.check_draft(current, etag)
            conn.execute(
                update(report_versions)
                .where(
                    report_versions.c.report_id == report_id,
                    report_versions.c.version == current.version,
                )
                .values(body=_body_text(body), revision=current.revision + 1)
            )
            return self._get(conn, report_id, None)

    def sign(
        self,
        report_id: str,
        revision: int,
        signer: str,
        signed_at: datetime,
        pdf: bytes,
        targets: Sequence[str],
    ) -> ReportVersion:
        """Make the draft (at ``revision``, as the PDF shows it) final and queue its deliveries."""
        with self.writer.begin() as conn:
            current = self._get(conn, report_id, None)
            if current.status != DRAFT:
                raise ReportSigned(f"report {report_id} version {current.version} is signed")
            if current.revision != revision:
                raise ReportChanged("the draft changed while it was being signed; sign again")
            conn.execute(
                update(report_versions)
                .where(
                    report_versions.c.report_id == report_id,
                    report_versions.c.version == current.version,
                )
                .values(
                    status=FINAL,
                    signer=signer,
                    signed_at=signed_at,
                    pdf=pdf,
                    pdf_sha1=hashlib.sha1(pdf).hexdigest(),
                )
            )
            outbox.queue(conn, report_id, current.version, targets, signed_at)
            return self._get(conn, report_id, None)

    def amend(
        self,
        report_id: str,
        after_version: int,
        status: str,
        body: ReportBody,
        reason: str,
        signer: str,
        signed_at: datetime,
        pdf: bytes,
        targets: Sequence[str],
    ) -> ReportVersion:
        """Add a signed version (``amended`` or ``corrected``) after ``after_version``."""
        if status not in AMENDMENTS:
            raise ValueError(status)
        with self.writer.begin() as conn:
            current = self._get(conn, report_id, None)
            if current.status not in SIGNED:
                raise ReportNotSigned("only a signed report can be amended; edit the draft")
            if current.version != after_version:
                raise ReportChanged("the report was amended meanwhile; read it and amend again")
            version = current.version + 1
            conn.execute(
                insert(report_versions).values(
                    report_id=report_id,
                    version=version,
                    status=status,
                    body=_body_text(body),
                    revision=1,
                    author=signer,
                    created_at=signed_at,
                    signer=signer,
                    signed_at=signed_at,
                    reason=reason,
                    pdf=pdf,
                    pdf_sha1=hashlib.sha1(pdf).hexdigest(),
                )
            )
            outbox.queue(conn, report_id, version, targets, signed_at)
            return self._get(conn, report_id, None)

    # -- helpers --

    def _by_identifier(self, accession: str, identifier: str) -> ReportVersion | None:
        with self.engine.connect() as conn:
            report_id = conn.execute(
                select(reports.c.id).where(
                    reports.c.accession == accession, reports.c.identifier == identifier
                )
            ).scalar()
            return self._get(conn, report_id, None) if report_id else None

    @staticmethod
    def check_draft(current: ReportVersion, etag: str) -> None:
        """Raise unless ``current`` is a draft whose ETag is ``etag`` (weak or strong)."""
        if current.status != DRAFT:
            raise ReportSigned(
                f"report {current.report_id} is {current.status}: amend it instead of editing"
            )
        if etag.removeprefix("W/") != current.etag:
            raise ReportChanged("the draft changed since it was read; read it again")

    def _get(self, conn: Connection, report_id: str, version: int | None) -> ReportVersion:
        head = conn.execute(select(reports).where(reports.c.id == report_id)).first()
        if head is None:
            raise ReportNotFound(f"no report with id {report_id[:64]!r}")
        listed = [
            (int(r.version), str(r.status))
            for r in conn.execute(
                select(report_versions.c.version, report_versions.c.status)
                .where(report_versions.c.report_id == report_id)
                .order_by(report_versions.c.version)
            )
        ]
        wanted = version if version is not None else listed[-1][0]
        row = conn.execute(
            select(report_versions).where(
                report_versions.c.report_id == report_id, report_versions.c.version == wanted
            )
        ).first()
        if row is None:
            raise ReportNotFound(f"report {report_id} has no version {wanted}")
        return _version(head, row, tuple(listed), outbox.deliveries(conn, report_id, wanted))

    def count(self) -> int:
        """How many reports there are (tests, metrics)."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(reports)).scalar() or 0)


def _utc(value: datetime | None) -> datetime | None:
    """SQLite gives back naive datetimes: they were written in UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _version(
    head: Row[Any],
    row: Row[Any],
    listed: tuple[tuple[int, str], ...],
    deliveries: tuple[Delivery, ...],
) -> ReportVersion:
    return ReportVersion(
        report_id=str(head.id),
        accession=str(head.accession),
        version=int(row.version),
        status=str(row.status),
        body=body_from_json(json.loads(row.body)),
        revision=int(row.revision),
        author=str(row.author),
        created_at=_utc(row.created_at) or row.created_at,
        signer=row.signer,
        signed_at=_utc(row.signed_at),
        reason=str(row.reason or ""),
        deliveries=deliveries,
        versions=listed,
    )


__all__ = [
    "ReportChanged",
    "ReportNotFound",
    "ReportNotSigned",
    "ReportSigned",
    "ReportStore",
    "new_report_id",
]
