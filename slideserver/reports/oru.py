"""Signed reports to the LIS as HL7 v2.5.1 ORU^R01 over MLLP, waiting for the ACK.

The message is built and checked with python-hl7: PID (the patient), OBR (the accession as the
filler order number, result status ``F`` final or ``C`` corrected/amended), an OBX ``TX`` per
line of the diagnosis, and an OBX ``ED`` with the PDF in Base64. MSH-10 is stable for a version
(``report id.version``), so a repeat after a lost ACK can be recognised by the LIS. An ``AE`` or
``AR`` ACK, a refused connection or no ACK in time is a failed attempt (retried by the outbox).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from urllib.parse import urlsplit

import hl7
from hl7.mllp import open_hl7_connection

from slideserver.reports.model import FINAL
from slideserver.reports.outbox import DeliveryFailed, Outgoing

SENDING_APPLICATION = "SLIDESERVER"
ACCEPTED = frozenset({"AA", "CA"})
DIAGNOSIS_CODE = "22637-3^Pathology report final diagnosis^LN"
_ESCAPER = hl7.parse("MSH|^~\\&|X")


def _e(text: str) -> str:
    """Escape ``text`` for an ER7 field (python-hl7's escaping, standard encoding characters)."""
    return str(_ESCAPER.escape(text.replace("\r\n", "\n").replace("\r", "\n")))


def _ts(at: datetime | None) -> str:
    return (at or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


def build_oru(item: Outgoing, control_id: str | None = None) -> hl7.Message:
    """Return the ORU^R01 of a signed version as a python-hl7 message."""
    version = item.version
    case = item.case
    patient = case.patient if case is not None else None
    status = "F" if version.status == FINAL else "C"
    signed = _ts(version.signed_at)
    pid = "PID|1||"
    if patient is not None:
        kind = _e(patient.identifier_type or "MR")
        pid += f"{_e(patient.identifier)}^^^{_e(patient.issuer)}^{kind}"
        pid += f"||{_e(patient.name or '')}||{_e((patient.birth_date or '').replace('-', ''))}"
        pid += f"|{_e(patient.sex or '')}"
    accession = _e(version.accession)
    signer = _e(version.signer or "")
    segments = [
        f"MSH|^~\\&|{SENDING_APPLICATION}||LIS||{signed}||ORU^R01^ORU_R01|"
        f"{_e(control_id or item.control_id)}|P|2.5.1",
        pid,
        f"ORC|RE||{accession}||CM",
        f"OBR|1||{accession}|11526-1^Pathology study^LN|||{signed}|||||||||||||||{signed}||SP|"
        f"{status}||||||{signer}",
    ]
    lines = (version.body.diagnosis or "").splitlines() or [""]
    for number, line in enumerate(lines, start=1):
        segments.append(f"OBX|{number}|TX|{DIAGNOSIS_CODE}|1|{_e(line)}||||||{status}")
    pdf = base64.b64encode(item.pdf).decode()
    segments.append(
        f"OBX|{len(lines) + 1}|ED|11526-1^Pathology study^LN|2|"
        f"{SENDING_APPLICATION}^AP^PDF^Base64^{pdf}||||||{status}"
    )
    return hl7.parse("\r".join(segments))


def parse_mllp_url(url: str) -> tuple[str, int]:
    """``mllp://HOST:PORT`` to (host, port); ValueError when it is not one."""
    parts = urlsplit(url)
    if parts.scheme != "mllp" or not parts.hostname or not parts.port:
        raise ValueError("the LIS MLLP URL must look like mllp://HOST:PORT")
    return parts.hostname, parts.port


class OruTarget:
    """Delivers signed versions to one LIS over MLLP."""

    name = "hl7v2"

    def __init__(self, url: str) -> None:
        self.host, self.port = parse_mllp_url(url)

    async def deliver(self, item: Outgoing) -> str:
        """Send the ORU and wait for its ACK (the outbox bounds the wait)."""
        message = build_oru(item)
        try:
            reader, writer = await open_hl7_connection(self.host, self.port, encoding="utf-8")
        except OSError as exc:
            raise DeliveryFailed(f"cannot connect to the LIS: {type(exc).__name__}") from exc
        try:
            writer.writemessage(message)
            await writer.drain()
            ack = await reader.readmessage()
        except (OSError, EOFError) as exc:
            raise DeliveryFailed(f"the LIS closed the connection: {type(exc).__name__}") from exc
        except Exception as exc:  # an answer that is not HL7
            detail = f"the LIS answered something other than HL7 ({type(exc).__name__})"
            raise DeliveryFailed(detail) from exc
        finally:
            writer.close()
        try:
            code = str(ack.segment("MSA")[1])
        except (KeyError, IndexError) as exc:
            raise DeliveryFailed("the LIS answered without an MSA segment") from exc
        if code not in ACCEPTED:  # the LIS's own text is not shown: it may quote the patient
            raise DeliveryFailed(f"the LIS answered {code}")
        return f"ACK {code} {item.control_id}"


__all__ = ["OruTarget", "build_oru", "parse_mllp_url"]
