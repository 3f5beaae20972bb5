"""HL7 v2 ACKs (original mode): ``AA`` applied, ``AE`` understood but wrong, ``AR`` rejected.

MSA-2 echoes MSH-10 of the message answered; an ERR segment carries the HL7 table 0357 code, the
location and the reason.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass

ACCEPT = "AA"
ERROR = "AE"
REJECT = "AR"

ERROR_TEXT = {
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    200: "Unsupported message type",
    201: "Unsupported event code",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    207: "Application internal error",
}
"""HL7 table 0357, the codes we answer with."""

SENDER = "SLIDESERVER"
"""MSH-3 of our ACKs when the message named no receiving application."""


@dataclass(frozen=True)
class Header:
    """What an ACK needs from the MSH of the message it answers."""

    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    message_code: str = ""
    trigger: str = ""
    control_id: str = ""
    processing_id: str = ""
    version: str = ""

    @property
    def message_type(self) -> str:
        """``OML^O21`` style."""
        return f"{self.message_code}^{self.trigger}" if self.trigger else self.message_code


def escape(text: str) -> str:
    """Escape ``text`` for an ER7 field with the standard encoding characters."""
    out = text.replace("\\", "\\E\\")
    for char, seq in (("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\")):
        out = out.replace(char, seq)
    return " ".join(out.split())


def build_ack(
    header: Header | None,
    code: str,
    reason: str = "",
    *,
    error_code: int | None = None,
    location: str = "",
    control_id: str | None = None,
    now: dt.datetime | None = None,
) -> str:
    """Return an ACK (segments joined by ``\\r``) answering ``header`` with ``code``."""
    h = header or Header()
    now = now or dt.datetime.now(dt.UTC)
    trigger = h.trigger if re.fullmatch(r"[A-Z0-9]{3}", h.trigger) else ""
    msh = [
        "MSH",
        "^~\\&",
        escape(h.receiving_application or SENDER),
        escape(h.receiving_facility),
        escape(h.sending_application),
        escape(h.sending_facility),
        now.strftime("%Y%m%d%H%M%S"),
        "",
        f"ACK^{trigger}^ACK" if trigger else "ACK",
        control_id or uuid.uuid4().hex[:20],
        escape(h.processing_id) or "P",
        escape(h.version) if h.version.startswith("2.") else "2.5.1",
    ]
    segments = ["|".join(msh), "|".join(["MSA", code, escape(h.control_id), escape(reason)])]
    if code != ACCEPT:
        ecode = error_code or 207
        segments.append(
            "|".join(
                [
                    "ERR",
                    "",
                    location,
                    f"{ecode}^{ERROR_TEXT.get(ecode, 'Error')}^HL70357",
                    "E",
                    "",
                    "",
                    "",
                    escape(reason),
                ]
            )
        )
    return "\r".join(segments) + "\r"


__all__ = ["ACCEPT", "ERROR", "ERROR_TEXT", "REJECT", "SENDER", "Header", "build_ack", "escape"]
