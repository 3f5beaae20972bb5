"""Apply one HL7 v2 message to the LinkStore and answer it with its ACK; never raises."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from slideserver.catalog.cases import PENDING, WITHDRAWN, ApplyResult, LinkStore
from slideserver.lis.hl7v2.ack import ACCEPT, ERROR, REJECT, Header, build_ack
from slideserver.lis.hl7v2.parse import (
    Hl7Error,
    Hl7Message,
    PatientMerge,
    parse_message,
    read_header,
)
from slideserver.lis.policy import AccessionPolicy

log = logging.getLogger("slideserver.lis.hl7v2")


@dataclass(frozen=True)
class Hl7Reply:
    """How a message was answered."""

    code: str
    """``AA``, ``AE`` or ``AR``."""
    ack: str
    """The ACK message, segments separated by carriage returns."""
    detail: str
    """The reason (AE/AR) or a short summary (AA); no PHI."""
    internal: bool = False
    """The store failed: the sender may retry later (HTTP 503, not 422)."""
    result: ApplyResult | None = None
    """What the (last) order of the message changed."""


def handle_message(raw: str, store: LinkStore, policy: AccessionPolicy | None = None) -> Hl7Reply:
    """Parse, apply and acknowledge one message; store it raw with its answer. Never raises.

    ``policy`` says which order number is the accession (see :mod:`slideserver.lis.policy`).
    """
    header: Header | None = None
    result: ApplyResult | None = None
    internal = False
    error_code: int | None = None
    location = ""
    try:
        header = read_header(raw)
        message = parse_message(raw, policy)
        header = message.header
        try:
            detail, result = _apply(message, store)
        except Exception as exc:  # the store's own errors: retryable, never shown in detail
            log.warning("HL7 %s not applied: %s", header.message_type, type(exc).__name__)
            internal = True
            raise Hl7Error(ERROR, "the message could not be stored; retry later") from None
        code = ACCEPT
    except Hl7Error as exc:
        code, detail, error_code, location = exc.ack_code, exc.reason, exc.code, exc.location
    except Exception as exc:  # garbage that broke the parser in an unforeseen way
        code, detail, error_code = REJECT, f"unreadable message ({type(exc).__name__})", 102
    ack = build_ack(header, code, detail, error_code=error_code, location=location)
    log.info(
        "HL7 %s answered %s%s",
        header.message_type[:20] if header else "(no MSH)",
        code,
        f" ({error_code})" if error_code else "",
    )
    try:
        store.record_message("hl7v2", raw, code, detail)
    except Exception as exc:
        log.warning("HL7 message not recorded: %s", type(exc).__name__)
    return Hl7Reply(code, ack, detail, internal, result)


def _apply(message: Hl7Message, store: LinkStore) -> tuple[str, ApplyResult | None]:
    """Hand the message to the store; return a short summary without PHI."""
    content = message.content
    if isinstance(content, tuple):
        results = [store.apply_order(order) for order in content]
        if len(results) == 1:
            return summarize(results[0]), results[0]
        words = [f"order {n}: {summarize(r)}" for n, r in enumerate(results, start=1)]
        return "; ".join(words), results[-1]
    if isinstance(content, PatientMerge):
        if store.merge_patients(content.surviving, content.merged_identifier):
            return "patients merged", None
        return "merged patient not known; nothing to move", None
    if store.update_patient(content):
        return "patient updated", None
    return "patient not known; nothing to update", None


def summarize(result: ApplyResult) -> str:
    """Say what an order changed, without PHI."""
    if not result.found:
        return f"order not known; nothing {result.status}"
    if result.status in WITHDRAWN and result.changed:
        return f"case {result.status}; slides stay linked"
    if not result.changed:
        return "no change (already applied)"
    if result.status == PENDING:
        words = ["order pending its accession number"]
    else:
        words = ["case created" if result.created else "case updated"]
    if result.linked_slides:
        words.append(f"{len(result.linked_slides)} slide(s) linked")
    if result.conflicts:
        words.append(f"{len(result.conflicts)} conflict(s) flagged for review")
    return "; ".join(words)


__all__ = ["Hl7Reply", "handle_message", "summarize"]
