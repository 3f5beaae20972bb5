"""Parse HL7 v2 (ER7): OML^O21 and ORM^O01 orders, ADT^A08 updates, ADT^A40 merges.

Parsing uses python-hl7; this module only decides which field means what.

Orders (``OML^O21``, ``ORM^O01``) become one :class:`CaseOrder` per order group: every ORC
starts an order (an OBR without its own ORC starts one too, with the previous ORC), and the
OBR, SPM, SAC, OBX and NTE segments after it belong to it. Each order has:

- Patient: PID-3 (the repetition whose identifier type, CX.5, is ``MR``, else the first one),
  else PID-2 (the external ID that anatomic-pathology systems still send) when PID-3 is empty;
  the issuer is CX.4, the assigning authority (see :func:`issuer_of`); the type CX.5 is kept as
  sent. PID-5 (``FAMILY^GIVEN``: XPN.1 and XPN.2 of the first repetition), PID-7 (birth date,
  ``YYYYMMDD``), PID-8 (sex).
- What to do, from ORC-1 (order control, HL7 table 0119): ``NW`` (new), ``XO`` (change) and
  ``SC`` (status changed, sent by the laboratory) create or update the case; ``CA``, ``OC``,
  ``CR`` cancel it and ``DC``, ``OD``, ``DR`` discontinue it (status only; nothing unlinked).
  Any other code is answered AE (103, table value not found).
- Order numbers: the placer order number ORC-2 (else OBR-2) and the filler order number ORC-3
  (else OBR-3), entity identifier EI.1 with the issuer of EI.2-4. Which one is the accession is
  the :class:`~slideserver.lis.policy.AccessionPolicy` of the sender (MSH-3/MSH-4): the filler
  number by default. When it is missing the order is kept pending (accession empty) or refused,
  as the policy says: the other number never stands in for it.
- Specimens from SPM segments, one per part, block or slide, linked by SPM-3 (parent specimen
  ID): an SPM without parent is a part (specimen), one whose parent is a part is a block, one whose
  parent is a block is a slide. SPM-2 is the specimen ID (EIP: the placer ID, else the filler ID);
  SPM-14 the part's description; SPM-6 (additives) the slide's stain (CWE.1, else CWE.2). A slide's
  barcode is the container identifier SAC-3 of the first SAC segment after its SPM, else its
  SPM-2. ORM^O01 has no SPM in the standard; SPM segments are read there too when a sender adds
  them.

``ADT^A08`` (and ``ADT^A31``) update demographics from PID; ``ADT^A40`` merges MRG-1 (prior patient
identifier) into the PID-3 patient.

A message we cannot accept raises :class:`Hl7Error` with the ACK code it earns (``AE``:
understood but wrong; ``AR``: not an HL7 v2 message we accept).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import hl7

from slideserver.catalog.cases import (
    ACTIVE,
    CANCELLED,
    DISCONTINUED,
    BlockIn,
    CaseOrder,
    PatientIn,
    SlideIn,
    SpecimenIn,
)
from slideserver.lis.hl7v2.ack import ERROR, REJECT, Header
from slideserver.lis.policy import PLACER, REFUSE, AccessionPolicy
from slideserver.lis.validate import (
    OrderError,
    check_identifier,
    check_order,
    check_text,
    decode_text,
    normalize_birth_date,
    normalize_name,
    normalize_sex,
)

ORDER_TYPES = frozenset({("OML", "O21"), ("ORM", "O01")})
UPDATE_TYPES = frozenset({("ADT", "A08"), ("ADT", "A31")})
MERGE_TYPES = frozenset({("ADT", "A40")})
ORDER_CONTROL = {
    "NW": ACTIVE,
    "XO": ACTIVE,
    "SC": ACTIVE,
    "CA": CANCELLED,
    "OC": CANCELLED,
    "CR": CANCELLED,
    "DC": DISCONTINUED,
    "OD": DISCONTINUED,
    "DR": DISCONTINUED,
}
"""ORC-1 codes (HL7 table 0119) we act on -> the status the order asks the case to have."""

MAX_SEGMENTS = 2000
"""Segments (lines) in one message: an order with hundreds of slides stays well under it."""
MAX_FIELDS = 256
"""Fields in one segment (HL7 2.x segments define fewer than 60)."""
MAX_REPETITIONS = 100
"""Repetitions in one field."""
MAX_COMPONENTS = 500
"""Components in one field, all repetitions together."""
MAX_SUBCOMPONENTS = 500
"""Subcomponents in one field, all components together."""
MAX_HEADER_CHARS = 65536
"""How much of a message :func:`read_header` looks at."""


@dataclass(frozen=True)
class PatientMerge:
    """ADT^A40: every case of ``merged_identifier`` moves to ``surviving``."""

    surviving: PatientIn
    merged_identifier: str


@dataclass(frozen=True)
class Hl7Message:
    """A parsed, checked message: its header and what it asks for."""

    header: Header
    content: tuple[CaseOrder, ...] | PatientIn | PatientMerge
    """The orders of an OML/ORM (one per order group), a demographics update or a merge."""


class Hl7Error(Exception):
    """A message we answer with AE or AR; ``code`` is from HL7 table 0357."""

    def __init__(self, ack_code: str, reason: str, *, code: int = 207, location: str = "") -> None:
        super().__init__(reason)
        self.ack_code = ack_code
        self.reason = reason
        self.code = code
        self.location = location
        """``SEG^sequence^field`` (HL7 ERL), e.g. ``PID^1^3``; empty when not one field."""


def normalize(raw: str) -> str:
    """Return ``raw`` without MLLP bytes or blank lines, segments separated by ``\\r``."""
    text = raw.strip().strip("\x0b\x1c").strip()
    return "\r".join(line for line in re.split(r"\r\n|\r|\n", text) if line.strip())


def read_header(raw: str) -> Header | None:
    """Return the MSH of ``raw`` even when the rest is garbage, for the ACK; ``None`` if none.

    Only the start of ``raw`` is read: the header is wanted for messages too large to parse.
    """
    text = normalize(raw.lstrip()[:MAX_HEADER_CHARS])
    if not text.startswith("MSH") or len(text) < 8:
        return None
    first = text.split("\r", 1)[0]
    sep = first[3]
    fields = first.split(sep)
    # fields[1] is MSH-2 (encoding characters); MSH-n is fields[n - 1].
    comp = fields[1][0] if fields[1:] and fields[1] else "^"

    def get(n: int, c: int = 1) -> str:
        if len(fields) < n:
            return ""
        parts = fields[n - 1].split("~")[0].split(comp)
        return parts[c - 1].strip()[:50] if len(parts) >= c else ""

    return Header(
        sending_application=get(3),
        sending_facility=get(4),
        receiving_application=get(5),
        receiving_facility=get(6),
        message_code=get(9, 1).upper(),
        trigger=get(9, 2).upper(),
        control_id=get(10)[:50],
        processing_id=get(11),
        version=get(12),
    )


def check_size(raw: str) -> None:
    """Refuse (AR) a message with more segments, fields, repetitions, components or
    subcomponents than the ``MAX_*`` limits allow, before parsing builds an object for each.

    Counting separators costs a few milliseconds per megabyte; a parse costs seconds for a few
    hundred thousand segments, which one message must not be able to buy.
    """
    line_breaks = raw.count("\r") + raw.count("\n") - raw.count("\r\n")
    if line_breaks > MAX_SEGMENTS:
        raise Hl7Error(REJECT, f"the message has more than {MAX_SEGMENTS} segments", code=207)
    text = raw.lstrip().lstrip("\x0b")
    if not text.startswith("MSH") or len(text) < 8:
        return  # parse_message refuses it
    field_sep = text[3]
    encoding = text[4:8].split(field_sep, 1)[0]
    chars = (encoding + "^~\\&"[len(encoding) :])[:4]  # component, repetition, escape, sub
    per_field = (
        (chars[1], MAX_REPETITIONS, "repetitions"),
        (chars[0], MAX_COMPONENTS, "components"),
        (chars[3], MAX_SUBCOMPONENTS, "subcomponents"),
    )
    for segment in re.split(r"\r\n|\r|\n", text):
        if segment.count(field_sep) >= MAX_FIELDS:
            raise Hl7Error(REJECT, f"a segment has more than {MAX_FIELDS} fields", code=207)
        for sep, limit, what in per_field:
            if segment.count(sep) < limit:
                continue  # no field of this segment can have more
            if any(field.count(sep) >= limit for field in segment.split(field_sep)):
                raise Hl7Error(REJECT, f"a field has more than {limit} {what}", code=207)


def parse_message(raw: str, policy: AccessionPolicy | None = None) -> Hl7Message:
    """Parse one ER7 message into what it asks for; raise :class:`Hl7Error` when we cannot.

    ``policy`` says which order number is the accession (default: the filler number; pending
    when missing).
    """
    check_size(raw)
    text = normalize(raw)
    if not text:
        raise Hl7Error(REJECT, "empty message", code=100)
    if not text.startswith("MSH") or len(text) < 8:
        raise Hl7Error(REJECT, "the message does not start with an MSH segment", code=100)
    header = read_header(text)
    assert header is not None
    try:
        message = hl7.parse(text)
    except Exception as exc:  # python-hl7 raises plain exceptions on broken structure
        raise Hl7Error(
            REJECT, f"not a parsable HL7 v2 message ({type(exc).__name__})", code=102
        ) from None
    if not header.control_id:
        raise Hl7Error(
            REJECT, "MSH-10 message control ID is required", code=101, location="MSH^1^10"
        )
    if header.version and not header.version.startswith("2."):
        raise Hl7Error(
            REJECT,
            f"unsupported HL7 version {header.version[:10]!r}",
            code=203,
            location="MSH^1^12",
        )
    kind = (header.message_code, header.trigger)
    try:
        if kind in ORDER_TYPES:
            return Hl7Message(header, _orders(message, header, policy or AccessionPolicy()))
        if kind in UPDATE_TYPES:
            return Hl7Message(header, _patient(_one(message, "PID")))
        if kind in MERGE_TYPES:
            return Hl7Message(header, _merge(message))
    except OrderError as exc:
        if exc.reason.startswith(("is required", "must not be blank")):
            code = 101
        elif exc.reason.startswith("is not a supported code"):
            code = 103
        else:
            code = 102
        raise Hl7Error(
            ERROR, f"{exc.field} {exc.reason}", code=code, location=_erl(exc.field)
        ) from None
    if header.message_code in {"OML", "ORM", "ADT"}:
        raise Hl7Error(
            REJECT, f"unsupported event {header.message_type[:20]!r}", code=201, location="MSH^1^9"
        )
    raise Hl7Error(
        REJECT,
        f"unsupported message type {header.message_type[:20]!r}",
        code=200,
        location="MSH^1^9",
    )


def _orders(message: hl7.Message, header: Header, policy: AccessionPolicy) -> tuple[CaseOrder, ...]:
    """OML^O21 / ORM^O01 -> one CaseOrder per order group (see the module docstring)."""
    patient = _patient(_one(message, "PID"))
    groups = _order_groups(message)
    if not groups:
        raise OrderError("ORC", "is required: the message has no ORC or OBR segment")
    sender = header.sending_application
    message_id = f"{sender}:{header.control_id}" if sender else header.control_id
    source = policy.source_for(header.sending_application, header.sending_facility)
    orders = []
    for n, group in enumerate(groups, start=1):
        orc = next((seg for seg in group if str(seg[0]) == "ORC"), None)
        obr = next((seg for seg in group if str(seg[0]) == "OBR"), None)
        tag = "" if len(groups) == 1 else f"[{n}]"
        if orc is None:
            raise OrderError(f"ORC{tag}", "is required: every order needs its ORC")
        control = _value(orc, 1).upper()
        if not control:
            raise OrderError(f"ORC{tag}-1", "is required: the order control code")
        if control not in ORDER_CONTROL:
            raise OrderError(
                f"ORC{tag}-1",
                f"is not a supported code {control[:4]!r} (supported: {', '.join(ORDER_CONTROL)})",
            )
        placer, placer_issuer = _order_number(orc, obr, 2, tag)
        filler, filler_issuer = _order_number(orc, obr, 3, tag)
        if not placer and not filler:
            raise OrderError(
                f"ORC{tag}-2", "is required: no placer (ORC-2/OBR-2) or filler (ORC-3/OBR-3) number"
            )
        accession, issuer = (placer, placer_issuer) if source == PLACER else (filler, filler_issuer)
        if not accession and policy.missing == REFUSE:
            number = 2 if source == PLACER else 3
            raise OrderError(
                f"ORC{tag}-{number}",
                f"is required: the {source} order number is this sender's accession number",
            )
        orders.append(
            check_order(
                CaseOrder(
                    accession=accession,
                    patient=patient,
                    accession_issuer=issuer,
                    specimens=_specimens(group),
                    source="hl7v2",
                    message_id=message_id,
                    placer=placer,
                    placer_issuer=placer_issuer,
                    filler=filler,
                    filler_issuer=filler_issuer,
                    status=ORDER_CONTROL[control],
                )
            )
        )
    return tuple(orders)


_GROUP_SEGMENTS = frozenset({"TQ1", "TQ2", "OBR", "SPM", "SAC", "OBX", "NTE", "FT1", "CTI", "DG1"})
"""Segments that belong to the order group they follow."""


def _order_groups(message: hl7.Message) -> list[list[hl7.Segment]]:
    """Split the segments into order groups: each ORC starts one, so does a second OBR."""
    groups: list[list[hl7.Segment]] = []
    current: list[hl7.Segment] | None = None
    last_orc: hl7.Segment | None = None
    for seg in message:
        name = str(seg[0])
        if name == "ORC":
            last_orc = seg
            current = [seg]
            groups.append(current)
        elif name == "OBR" and (current is None or any(str(s[0]) == "OBR" for s in current)):
            current = [last_orc, seg] if last_orc is not None else [seg]
            groups.append(current)
        elif name in _GROUP_SEGMENTS:
            if current is not None:
                current.append(seg)
        elif name in {"PID", "PD1", "PV1", "PV2", "IN1", "GT1", "AL1"}:
            current = None
    return groups


def _order_number(
    orc: hl7.Segment, obr: hl7.Segment | None, field: int, tag: str
) -> tuple[str, str]:
    """The placer (2) or filler (3) order number of ORC, else OBR: (EI.1, issuer of EI.2-4)."""
    for seg, name in ((orc, "ORC"), (obr, "OBR")):
        if seg is not None and _value(seg, field):
            where = f"{name}{tag}-{field}"
            value = check_identifier(_value(seg, field), where)
            issuer = issuer_of(
                _value(seg, field, comp=2), _value(seg, field, comp=3), _value(seg, field, comp=4)
            )
            return value, check_identifier(issuer, f"{where}.2", required=False)
    return "", ""


def issuer_of(namespace: str, universal_id: str, universal_type: str) -> str:
    """An HD (or EI.2-4) as one issuer: ``urn:oid:`` + an ISO universal ID, a URI as is, else
    the namespace ID.

    The universal ID is the globally unique name of the authority, the one FHIR uses as the
    identifier's ``system``: so a patient or case numbered by the same authority is the same
    whichever interface sent it.
    """
    kind = universal_type.strip().upper()
    if universal_id and kind == "ISO":
        return f"urn:oid:{universal_id}"
    if universal_id and kind in {"URI", "URL"}:
        return universal_id
    return namespace or universal_id


def _patient(pid: hl7.Segment) -> PatientIn:
    """PID-3 (MR repetition; else PID-2), PID-5, PID-7, PID-8 -> PatientIn."""
    if _cx_reps(pid, 3) or not _cx_reps(pid, 2):
        identifier, issuer, kind = _cx(pid, 3, "PID-3")
    else:
        identifier, issuer, kind = _cx(pid, 2, "PID-2")
    family = _value(pid, 5, comp=1)
    given = _value(pid, 5, comp=2)
    name = f"{family}^{given}" if given else family
    return PatientIn(
        identifier=identifier,
        issuer=issuer,
        name=normalize_name(name, "PID-5"),
        birth_date=normalize_birth_date(_value(pid, 7), "PID-7"),
        sex=normalize_sex(_value(pid, 8), "PID-8"),
        identifier_type=kind,
    )


def _merge(message: hl7.Message) -> PatientMerge:
    """ADT^A40: the PID patient survives, MRG-1 is merged into it."""
    pids = _segments(message, "PID")
    mrgs = _segments(message, "MRG")
    if not pids:
        raise OrderError("PID", "is required: ADT^A40 needs a PID segment")
    if not mrgs:
        raise OrderError("MRG", "is required: ADT^A40 needs an MRG segment")
    if len(pids) > 1 or len(mrgs) > 1:
        raise OrderError("MRG", "one PID/MRG pair per message is supported")
    surviving = _patient(pids[0])
    merged, _issuer, _kind = _cx(mrgs[0], 1, "MRG-1")
    if merged == surviving.identifier:
        raise OrderError("MRG-1", "names the surviving patient (PID-3) itself")
    return PatientMerge(surviving, merged)


@dataclass
class _Spm:
    index: int
    id: str
    parent: str
    description: str | None
    stain: str | None
    container: str


def _specimens(segments: Sequence[hl7.Segment]) -> tuple[SpecimenIn, ...]:
    """Build parts -> blocks -> slides from the SPM hierarchy (SPM-3 parents) of one order."""
    spms: list[_Spm] = []
    current: _Spm | None = None
    for seg in segments:
        name = str(seg[0])
        if name == "SPM":
            n = len(spms) + 1
            where = f"SPM[{n}]"
            ident = _value(seg, 2, sub=1) or _value(seg, 2, comp=2, sub=1)
            parent = _value(seg, 3, sub=1) or _value(seg, 3, comp=2, sub=1)
            stain = _value(seg, 6, comp=1) or _value(seg, 6, comp=2)
            current = _Spm(
                index=n,
                id=check_identifier(ident, f"{where}-2"),
                parent=check_identifier(parent, f"{where}-3", required=False),
                description=check_text(_value(seg, 14) or None, f"{where}-14"),
                stain=check_identifier(stain, f"{where}-6", required=False) or None,
                container="",
            )
            spms.append(current)
        elif name == "SAC" and current is not None and not current.container:
            current.container = check_identifier(
                _value(seg, 3), f"SAC after SPM[{current.index}]-3", required=False
            )
        elif name not in {"SAC", "OBX", "NTE"}:
            current = None
    by_id: dict[str, _Spm] = {}
    for spm in spms:
        if spm.id in by_id:
            raise OrderError(f"SPM[{spm.index}]-2", f"specimen ID {spm.id!r} appears twice")
        by_id[spm.id] = spm

    def depth(spm: _Spm) -> int:
        level = 0
        seen = {spm.id}
        while spm.parent:
            parent = by_id.get(spm.parent)
            if parent is None:
                raise OrderError(
                    f"SPM[{spm.index}]-3", f"parent {spm.parent!r} is not an SPM of this message"
                )
            if parent.id in seen:
                raise OrderError(f"SPM[{spm.index}]-3", "parents form a cycle")
            seen.add(parent.id)
            spm = parent
            level += 1
        return level

    levels = {spm.id: depth(spm) for spm in spms}
    for spm in spms:
        if levels[spm.id] > 2:
            raise OrderError(
                f"SPM[{spm.index}]-3", "too deep: parts, blocks and slides only (3 levels)"
            )
    parts = [s for s in spms if levels[s.id] == 0]
    blocks = [s for s in spms if levels[s.id] == 1]
    slides = [s for s in spms if levels[s.id] == 2]
    return tuple(
        SpecimenIn(
            id=part.id,
            description=part.description,
            blocks=tuple(
                BlockIn(
                    id=block.id,
                    slides=tuple(
                        SlideIn(barcode=slide.container or slide.id, stain=slide.stain)
                        for slide in slides
                        if slide.parent == block.id
                    ),
                )
                for block in blocks
                if block.parent == part.id
            ),
        )
        for part in parts
    )


def decode_message(payload: bytes) -> str:
    """Decode an ER7 body by its MSH-18 character set: ``8859/1`` is Latin-1, anything else
    UTF-8 (ASCII's superset). Invalid bytes are kept as U+FFFD, refused by the field checks."""
    first = payload.split(b"\r", 1)[0].split(b"\n", 1)[0]
    fields = first.split(first[3:4]) if first.startswith(b"MSH") and len(first) > 3 else []
    charset = fields[17].split(b"~")[0].strip().upper() if len(fields) > 17 else b""
    return decode_text(payload, "latin-1" if charset == b"8859/1" else "utf-8")


def split_messages(text: str) -> Sequence[str]:
    """Split a text holding several ER7 messages at each MSH (for batch files and tests)."""
    body = normalize(text)
    return [m for m in re.split(r"\r(?=MSH\|)", body) if m.strip()]


# --- field access ---


def _segments(message: hl7.Message, name: str) -> list[hl7.Segment]:
    return [seg for seg in message if str(seg[0]) == name]


def _first(message: hl7.Message, name: str) -> hl7.Segment | None:
    found = _segments(message, name)
    return found[0] if found else None


def _one(message: hl7.Message, name: str) -> hl7.Segment:
    seg = _first(message, name)
    if seg is None:
        raise OrderError(name, f"is required: the message has no {name} segment")
    return seg


def _value(seg: hl7.Segment, field: int, *, rep: int = 1, comp: int = 1, sub: int = 1) -> str:
    """Return one unescaped leaf value, ``""`` when absent."""
    try:
        value = seg.extract_field(1, field, rep, comp, sub)
    except (IndexError, KeyError, TypeError, ValueError):
        return ""
    return str(value).strip()


def _repetitions(seg: hl7.Segment, field: int) -> int:
    if field >= len(seg):
        return 0
    value = seg[field]
    if isinstance(value, str) or not any(isinstance(x, hl7.Repetition) for x in value):
        return 1
    return len(value)


def _cx_reps(seg: hl7.Segment, field: int) -> list[tuple[str, str, str]]:
    """The non-empty repetitions of a CX list: (ID, assigning authority, identifier type)."""
    reps = [
        (
            _value(seg, field, rep=r, comp=1),
            issuer_of(
                _value(seg, field, rep=r, comp=4, sub=1),
                _value(seg, field, rep=r, comp=4, sub=2),
                _value(seg, field, rep=r, comp=4, sub=3),
            ),
            _value(seg, field, rep=r, comp=5).upper(),
        )
        for r in range(1, _repetitions(seg, field) + 1)
    ]
    return [r for r in reps if r[0]]


def _cx(seg: hl7.Segment, field: int, where: str) -> tuple[str, str, str]:
    """Return (ID, issuer, type) of the ``MR`` repetition of a CX list, else of the first."""
    reps = _cx_reps(seg, field)
    chosen = next((r for r in reps if r[2] == "MR"), reps[0] if reps else None)
    if chosen is None:
        also = " (nor in PID-2)" if where == "PID-3" else ""
        raise OrderError(where, f"is required: no patient identifier{also}")
    return (
        check_identifier(chosen[0], where),
        check_identifier(chosen[1], f"{where}.4", required=False),
        check_identifier(chosen[2], f"{where}.5", required=False),
    )


def _erl(field: str) -> str:
    """``PID-7`` -> ``PID^1^7`` (HL7 ERL); ``SPM[2]-3`` -> ``SPM^2^3``; else ``""``."""
    match = re.match(r"([A-Z][A-Z0-9]{2})(?:\[(\d+)\])?(?:-(\d+))?", field)
    if match is None:
        return ""
    seg, seq, num = match[1], match[2] or "1", match[3]
    return f"{seg}^{seq}^{num}" if num else f"{seg}^{seq}"


__all__ = [
    "MAX_SEGMENTS",
    "MERGE_TYPES",
    "ORDER_CONTROL",
    "ORDER_TYPES",
    "UPDATE_TYPES",
    "Hl7Error",
    "Hl7Message",
    "PatientMerge",
    "check_size",
    "decode_message",
    "issuer_of",
    "normalize",
    "parse_message",
    "read_header",
    "split_messages",
]
