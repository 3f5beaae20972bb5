"""HL7 v2 over MLLP, applied through the :class:`LinkService` and audited like HTTP LIS writes.

The listener (:mod:`slideserver.lis.mllp`) decides who may connect; this is its handler. As for a
``POST /api/lis/hl7v2``, an ``attempt`` row is written before the message is applied and a
``request`` row with the outcome after, under the peer's name (``mllp:ADDRESS`` or
``mllp:cn=NAME``), role ``lis``, with the accession and patient the message concerns. When a row
cannot be written the message is answered ``AE`` (retry later), failing closed as HTTP does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from anyio.to_thread import run_sync

from slideserver.catalog.cases import CaseOrder, PatientIn
from slideserver.lis.hl7v2.ack import ACCEPT, ERROR, REJECT, build_ack
from slideserver.lis.hl7v2.apply import Hl7Reply
from slideserver.lis.hl7v2.parse import PatientMerge, parse_message, read_header
from slideserver.lis.mllp import Peer
from slideserver.lis.parse_threads import run_parse
from slideserver.lis.policy import AccessionPolicy
from slideserver.security.audit import AuditEvent, AuditStore, AuditUnavailable
from slideserver.services.links import LinkService, LinksUnavailable

log = logging.getLogger("slideserver.lis.mllp")

ACTION = "MLLP hl7v2"
METHOD = "MLLP"
ROLE = "lis"
AUDIT_UNAVAILABLE = "the audit trail cannot be written; retry later"


@dataclass(frozen=True)
class MessageSubjects:
    """What a message concerns, for its audit rows (empty when it does not parse)."""

    control_id: str | None = None
    accession: str | None = None
    patient: str | None = None


def subjects_of(raw: str, policy: AccessionPolicy | None = None) -> MessageSubjects:
    """Read the control ID, accession and patient MRN of a message; never raises."""
    header = read_header(raw)
    control_id = (header.control_id or None) if header is not None else None
    try:
        content = parse_message(raw, policy).content
    except Exception:  # refused messages are audited without subjects
        return MessageSubjects(control_id)
    if isinstance(content, tuple):  # the orders of an OML/ORM: audited under the first
        order = next((o for o in content if isinstance(o, CaseOrder)), None)
        if order is None:
            return MessageSubjects(control_id)
        patient = order.patient.identifier if order.patient is not None else None
        return MessageSubjects(control_id, order.accession or None, patient)
    if isinstance(content, PatientMerge):
        return MessageSubjects(control_id, None, content.surviving.identifier)
    if isinstance(content, PatientIn):
        return MessageSubjects(control_id, None, content.identifier)
    return MessageSubjects(control_id)


def status_of(reply: Hl7Reply) -> int:
    """The HTTP status ``POST /api/lis/hl7v2`` would answer, recorded as the row's outcome."""
    if reply.code == ACCEPT:
        return 200
    if reply.internal:
        return 503
    return 400 if reply.code == REJECT else 422


class MllpIntake:
    """The MLLP listener's handler: audit, apply, audit, acknowledge."""

    def __init__(self, links: LinkService, audit: AuditStore) -> None:
        self.links = links
        self.audit = audit

    async def __call__(self, raw: str, peer: Peer) -> str:
        subjects = await run_parse(subjects_of, raw, self.links.policy)
        if not await self._write(self._event(peer, subjects, "attempt", None)):
            return await self._refuse(raw, AUDIT_UNAVAILABLE)
        try:
            reply = await self.links.handle_hl7v2(raw)
        except LinksUnavailable as exc:
            await self._write(self._event(peer, subjects, "request", 503))
            return await self._refuse(raw, exc.detail)
        if not await self._write(self._event(peer, subjects, "request", status_of(reply))):
            return await self._refuse(raw, AUDIT_UNAVAILABLE)
        return reply.ack

    async def _refuse(self, raw: str, detail: str) -> str:
        header = await run_parse(read_header, raw)
        return build_ack(header, ERROR, detail, error_code=207)

    def _event(
        self, peer: Peer, subjects: MessageSubjects, kind: str, status: int | None
    ) -> AuditEvent:
        return AuditEvent(
            at=datetime.now(UTC),
            kind=kind,
            subject=peer.subject,
            role=ROLE,
            action=ACTION,
            method=METHOD,
            case_id=subjects.accession,
            patient_id=subjects.patient,
            client=peer.address,
            status=status,
            request_id=subjects.control_id,
        )

    async def _write(self, event: AuditEvent) -> bool:
        try:
            await run_sync(self.audit.write, event)
        except AuditUnavailable:
            log.warning("MLLP message from %s refused: audit trail not writable", event.client)
            return False
        return True


__all__ = ["ACTION", "MessageSubjects", "MllpIntake", "status_of", "subjects_of"]
