"""The JSON order of ``POST /api/lis/cases``: validate a decoded body and build a CaseOrder.

The body (every identifier a non-empty string of at most 64 characters)::

    {"accession": "S24-01234", "accession_issuer": "LAB",            # issuer optional
     "patient": {"identifier": "MRN-0012345", "issuer": "HOSP",       # all but identifier optional
                 "name": "DOE^JANE", "birth_date": "1961-04-12", "sex": "F"},
     "specimens": [{"id": "A", "description": "...",
                    "blocks": [{"id": "A1", "slides": [{"barcode": "S24-01234-A1-1",
                                                        "stain": "HE"}]}]}],
     "message_id": "..."}                                               # optional

Errors name the offending field with a JSON path (``specimens[0].blocks[1].id``) so that an LIS
integrator can fix the message without reading our code. The helpers here (``OrderError``,
``check_identifier``, ``normalize_sex``, ``normalize_birth_date``) are shared with the FHIR and
HL7 v2 parsers so that every interface accepts and rejects the same values.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Any

from slideserver.catalog.cases import BlockIn, CaseOrder, PatientIn, SlideIn, SpecimenIn

MAX_ID = 64
"""Longest identifier (accession, MRN, specimen, block, barcode) we store."""
MAX_TEXT = 1024
"""Longest free text (names, descriptions)."""
MAX_ITEMS = 1000
"""Most specimens per case, blocks per specimen and slides per block: a guard, not a rule."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
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

_TOP_KEYS = frozenset({"accession", "accession_issuer", "patient", "specimens", "message_id"})
_PATIENT_KEYS = frozenset({"identifier", "issuer", "name", "birth_date", "sex"})
_SPECIMEN_KEYS = frozenset({"id", "description", "blocks"})
_BLOCK_KEYS = frozenset({"id", "slides"})
_SLIDE_KEYS = frozenset({"barcode", "stain"})


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
        raise OrderError(field, f"must be a string, not {_json_type(value)}")
    text = value.strip()
    if not text:
        if required:
            raise OrderError(field, "must not be blank")
        return ""
    if len(text) > MAX_ID:
        raise OrderError(field, f"is longer than {MAX_ID} characters")
    if _CONTROL.search(text):
        raise OrderError(field, "contains control characters")
    return text


def check_text(value: object, field: str) -> str | None:
    """Return optional free text stripped (``None`` when absent or blank)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise OrderError(field, f"must be a string, not {_json_type(value)}")
    text = " ".join(value.split())
    if len(text) > MAX_TEXT:
        raise OrderError(field, f"is longer than {MAX_TEXT} characters")
    return text or None


def normalize_sex(value: object, field: str) -> str | None:
    """Return ``M``, ``F``, ``O`` or ``U`` for any HL7, DICOM or FHIR spelling."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise OrderError(field, f"must be a string, not {_json_type(value)}")
    code = _SEX.get(value.strip().lower())
    if code is None:
        raise OrderError(field, "must be one of M, F, O, U (or male, female, other, unknown)")
    return code


def normalize_birth_date(value: object, field: str) -> str | None:
    """Return an ISO ``YYYY-MM-DD`` date from ISO or HL7 ``YYYYMMDD[HHMM...]`` input."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise OrderError(field, f"must be a string, not {_json_type(value)}")
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


def parse_case_order(body: object) -> CaseOrder:
    """Validate a decoded JSON body and return the CaseOrder it describes."""
    top = _object(body, "body", _TOP_KEYS)
    accession = check_identifier(top.get("accession"), "accession")
    issuer = check_identifier(top.get("accession_issuer"), "accession_issuer", required=False)
    patient = parse_patient(top.get("patient"), "patient")
    message_id = check_identifier(top.get("message_id"), "message_id", required=False)
    raw_specimens = top.get("specimens", [])
    specimens = tuple(
        _specimen(item, f"specimens[{i}]")
        for i, item in enumerate(_array(raw_specimens, "specimens"))
    )
    return check_order(
        CaseOrder(
            accession=accession,
            patient=patient,
            accession_issuer=issuer,
            specimens=specimens,
            source="json",
            message_id=message_id or None,
        )
    )


def parse_patient(value: object, field: str) -> PatientIn:
    """Validate the ``patient`` object (also the body of a JSON demographic update)."""
    obj = _object(value, field, _PATIENT_KEYS)
    return PatientIn(
        identifier=check_identifier(obj.get("identifier"), f"{field}.identifier"),
        issuer=check_identifier(obj.get("issuer"), f"{field}.issuer", required=False),
        name=normalize_name(obj.get("name"), f"{field}.name"),
        birth_date=normalize_birth_date(obj.get("birth_date"), f"{field}.birth_date"),
        sex=normalize_sex(obj.get("sex"), f"{field}.sex"),
    )


def _specimen(value: object, field: str) -> SpecimenIn:
    obj = _object(value, field, _SPECIMEN_KEYS)
    blocks = tuple(
        _block(item, f"{field}.blocks[{i}]")
        for i, item in enumerate(_array(obj.get("blocks", []), f"{field}.blocks"))
    )
    return SpecimenIn(
        id=check_identifier(obj.get("id"), f"{field}.id"),
        description=check_text(obj.get("description"), f"{field}.description"),
        blocks=blocks,
    )


def _block(value: object, field: str) -> BlockIn:
    obj = _object(value, field, _BLOCK_KEYS)
    slides = tuple(
        _slide(item, f"{field}.slides[{i}]")
        for i, item in enumerate(_array(obj.get("slides", []), f"{field}.slides"))
    )
    return BlockIn(id=check_identifier(obj.get("id"), f"{field}.id"), slides=slides)


def _slide(value: object, field: str) -> SlideIn:
    obj = _object(value, field, _SLIDE_KEYS)
    return SlideIn(
        barcode=check_identifier(obj.get("barcode"), f"{field}.barcode"),
        stain=check_identifier(obj.get("stain"), f"{field}.stain", required=False) or None,
    )


def _object(value: object, field: str, allowed: frozenset[str]) -> Mapping[str, Any]:
    """Return ``value`` as a mapping; unknown keys are errors (they are usually typos)."""
    if not isinstance(value, Mapping):
        raise OrderError(field, f"must be an object, not {_json_type(value)}")
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise OrderError(
            field, f"unknown field {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})"
        )
    return value


def _array(value: object, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise OrderError(field, f"must be an array, not {_json_type(value)}")
    if len(value) > MAX_ITEMS:
        raise OrderError(field, f"has more than {MAX_ITEMS} items")
    return value


def _json_type(value: object) -> str:
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
    "OrderError",
    "check_identifier",
    "check_order",
    "check_text",
    "normalize_birth_date",
    "normalize_name",
    "normalize_sex",
    "parse_case_order",
    "parse_patient",
]
