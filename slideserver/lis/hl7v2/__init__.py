"""HL7 v2 (ER7) in, ACK out: :mod:`.parse` the message, :mod:`.apply` it, answer its :mod:`.ack`.

Every message is answered with an ACK (original mode): ``AA`` when applied, ``AE`` when the
message is understood but wrong (a required field missing, a bad date, duplicate barcodes) or the
store failed, ``AR`` when it is not an HL7 v2 message we accept (garbage, unsupported type or
version). :func:`handle_message` never raises.
"""

from slideserver.lis.hl7v2.ack import ACCEPT, ERROR, REJECT, Header, build_ack, escape
from slideserver.lis.hl7v2.apply import Hl7Reply, handle_message, summarize
from slideserver.lis.hl7v2.parse import (
    Hl7Error,
    Hl7Message,
    PatientMerge,
    normalize,
    parse_message,
    read_header,
    split_messages,
)

__all__ = [
    "ACCEPT",
    "ERROR",
    "REJECT",
    "Header",
    "Hl7Error",
    "Hl7Message",
    "Hl7Reply",
    "PatientMerge",
    "build_ack",
    "escape",
    "handle_message",
    "normalize",
    "parse_message",
    "read_header",
    "split_messages",
    "summarize",
]
