"""The checks every LIS interface shares (JSON, FHIR, HL7 v2): identifiers, text, dates, sex.

Each rule has one implementation here so that every interface accepts and rejects the same
values. :class:`OrderError` names the offending field in the interface's own terms (a JSON path,
a FHIR path or an HL7 field) so that an LIS integrator can fix the message without our code.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping

from slideserver.catalog.cases import CaseOrder

MAX_ID = 64
"""Longest identifier (accession, MRN, specimen, block, barcode) we store."""
MAX_TEXT = 1024
"""Longest free text (names, descriptions)."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UNDECODABLE = "\ufffd"
"""What :func:`decode_text` puts where bytes were not valid in the message's character set."""
_SEX = {
    "m": "M",
    "male": "M",
    "f": "F",
    "female": "F",
    "o": "O",
    "other": "O",
    "u": "U",
    "unknown": "U",
    "a": "O",
    "n": "U",
}
"""Every spelling we accept (HL7 table 0001, DICOM, FHIR gender) -> the HL7/DICOM code we keep."""


class OrderError(ValueError):
    """An order the LIS must fix; ``field`` names where (JSON path, FHIR path or HL7 field)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def check_identifier(value: object, field: str, *, required: bool = True) -> str:
    """Return ``value`` stripped when it is a usable identifier, else raise OrderError."""
    if value is None or value == "":
        if required:
            raise OrderError(field, "is required")
        return ""
    if not isinstance(value, str):
        raise OrderError(field, f"must be a string, not {json_type(value)}")
    text = value.strip()
    if not text:
        if required:
            raise OrderError(field, "must not be blank")
        return ""
    if len(text) > MAX_ID:
        raise OrderError(field, f"is longer than {MAX_ID} characters")
    _check_characters(text, field)
    return text


def _check_characters(text: str, field: str) -> None:
    """Refuse control characters (NUL...) and undecodable bytes, in every interface alike."""
    if _CONTROL.search(text):
        raise OrderError(field, "contains control characters")
    if _UNDECODABLE in text:
        raise OrderError(field, "contains bytes that are not valid in the message's character set")


def decode_text(payload: bytes, charset: str = "utf-8") -> str:
    """Decode a message body; bytes not valid in ``charset`` become U+FFFD, which every field
    check refuses (so a field with them is an error naming the field, whatever the interface)."""
    return payload.decode(charset, errors="replace")


def check_text(value: object, field: str) -> str | None:
    """Return optional free text stripped (``None`` when absent or blank)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise OrderError(field, f"must be a string, not {json_type(value)}")
    text = " ".join(value.split())
    if len(text) > MAX_TEXT:
        raise OrderError(field, f"is longer than {MAX_TEXT} characters")
    _check_characters(text, field)
    return text or None


def normalize_sex(value: object, field: str) -> str | None:
    """Return ``M``, ``F``, ``O`` or ``U`` for any HL7, DICOM or FHIR spelling."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise OrderError(field, f"must be a string, not {json_type(value)}")
    code = _SEX.get(value.strip().lower())
    if code is None:
        raise OrderError(field, "must be one of M, F, O, U (or male, female, other, unknown)")
    return code


def normalize_birth_date(value: object, field: str) -> str | None:
    """Return an ISO ``YYYY-MM-DD`` date from ISO or HL7 ``YYYYMMDD[HHMM...]`` input."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise OrderError(field, f"must be a string, not {json_type(value)}")
    text = value.strip()
    match = re.fullmatch(r"(\d{4})-?(\d{2})-?(\d{2})(?:[T ]?[\d:.+\-]*)?", text)
    if match is None:
        raise OrderError(field, "must be a date, YYYY-MM-DD")
    try:
        day = dt.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        raise OrderError(field, "is not a valid calendar date") from None
    return day.isoformat()


def normalize_name(value: object, field: str) -> str | None:
    """Return a ``FAMILY^GIVEN`` name with blank trailing components removed."""
    text = check_text(value, field)
    if text is None:
        return None
    parts = [p.strip() for p in text.split("^")]
    while parts and not parts[-1]:
        parts.pop()
    return "^".join(parts) or None


def check_unique(values: Iterable[str], field: str, what: str) -> None:
    """Raise OrderError when one identifier appears twice in the same order."""
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise OrderError(field, f"{what} {value!r} appears more than once")
        seen.add(value)


def check_order(order: CaseOrder) -> CaseOrder:
    """Check the rules every interface shares: unique specimens, blocks and slide barcodes."""
    check_unique((s.id for s in order.specimens), "specimens", "specimen")
    for i, spec in enumerate(order.specimens):
        check_unique((b.id for b in spec.blocks), f"specimens[{i}].blocks", "block")
    check_unique(
        (sl.barcode for s in order.specimens for b in s.blocks for sl in b.slides),
        "specimens",
        "slide barcode",
    )
    return order


def json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


__all__ = [
    "MAX_ID",
    "MAX_TEXT",
    "OrderError",
    "check_identifier",
    "check_order",
    "check_text",
    "check_unique",
    "decode_text",
    "json_type",
    "normalize_birth_date",
    "normalize_name",
    "normalize_sex",
]
