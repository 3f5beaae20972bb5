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
integrator can fix the message without reading our code. The field checks are those of
:mod:`slideserver.lis.validate`, shared with the FHIR and HL7 v2 parsers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slideserver.catalog.cases import BlockIn, CaseOrder, PatientIn, SlideIn, SpecimenIn
from slideserver.lis.validate import (
    OrderError,
    check_identifier,
    check_order,
    check_text,
    json_type,
    normalize_birth_date,
    normalize_name,
    normalize_sex,
)

MAX_ITEMS = 1000
"""Most specimens per case, blocks per specimen and slides per block: a guard, not a rule."""

_TOP_KEYS = frozenset({"accession", "accession_issuer", "patient", "specimens", "message_id"})
_PATIENT_KEYS = frozenset({"identifier", "issuer", "name", "birth_date", "sex"})
_SPECIMEN_KEYS = frozenset({"id", "description", "blocks"})
_BLOCK_KEYS = frozenset({"id", "slides"})
_SLIDE_KEYS = frozenset({"barcode", "stain"})


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
        raise OrderError(field, f"must be an object, not {json_type(value)}")
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
        raise OrderError(field, f"must be an array, not {json_type(value)}")
    if len(value) > MAX_ITEMS:
        raise OrderError(field, f"has more than {MAX_ITEMS} items")
    return value


__all__ = ["MAX_ITEMS", "parse_case_order", "parse_patient"]
