"""Identifiers and references: code systems, FHIR resource IDs, DICOM UIDs, Endpoint IDs.

Resource IDs are the business identifiers when they are valid FHIR IDs, else a reversible ``x-``
base32 form (see :func:`fhir_id`); longer ones are hashed (``h-``).
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from typing import Any

from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.reference import Reference

from slideserver.catalog.cases import (
    CaseView,
    SlideView,
)
from slideserver.catalog.dicom_uids import UID_NAMESPACE

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
DICOM_UID = "urn:dicom:uid"
CONNECTION_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
PAYLOAD_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-payload-type"
LOCAL_CONNECTION_TYPE = "urn:slideserver:fhir:endpoint-connection-type"
"""IIIF Image API has no code in the HL7 endpoint connection types; ours lives here."""

_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def fhir_id(value: str) -> str:
    """Return a FHIR resource ID for a business identifier, reversible when it fits 64 chars."""
    if _FHIR_ID.fullmatch(value) and not value.startswith("x-") and not value.startswith("h-"):
        return value
    encoded = base64.b32encode(value.encode()).decode().rstrip("=").lower()
    if len(encoded) <= 62:
        return "x-" + encoded
    return "h-" + hashlib.sha256(value.encode()).hexdigest()[:40]


def value_of_fhir_id(resource_id: str) -> str | None:
    """Invert :func:`fhir_id`; ``None`` for hashed or malformed IDs."""
    if resource_id.startswith("h-"):
        return None
    if resource_id.startswith("x-"):
        body = resource_id[2:].upper()
        try:
            return base64.b32decode(body + "=" * (-len(body) % 8)).decode()
        except (ValueError, UnicodeDecodeError):
            return None
    return resource_id if _FHIR_ID.fullmatch(resource_id) else None


def dicom_uid(kind: str, key: str) -> str:
    """Return a stable ``2.25.`` DICOM UID for a study (accession) or series (slide ID)."""
    return f"2.25.{uuid.uuid5(UID_NAMESPACE, f'{kind}:{key}').int}"


def endpoint_id(kind: str, key: str) -> str:
    """Endpoint IDs are ``{kind}.{fhir_id(key)}``: kind is ``viewer``, ``iiif`` or ``case``."""
    return f"{kind}.{fhir_id(key)}"


def parse_endpoint_id(resource_id: str) -> tuple[str, str] | None:
    """Invert :func:`endpoint_id`; ``None`` when it is not one of ours."""
    kind, _, rest = resource_id.partition(".")
    key = value_of_fhir_id(rest) if rest else None
    if kind not in {"viewer", "iiif", "case"} or key is None:
        return None
    return kind, key


def slide_specimen_id(slide: SlideView) -> str:
    """The Specimen ID of a slide: its barcode, else its slide ID."""
    return fhir_id(f"slide/{slide.barcode or slide.id}")


def subject_reference(case: CaseView) -> Reference:
    """The case's patient as a reference (a display when the patient is not known)."""
    if case.patient is None:
        return Reference(display="patient not known")
    return Reference(reference=f"Patient/{fhir_id(case.patient.identifier)}")


def accession_identifier(case: CaseView) -> Identifier:
    """The case's accession number typed ``ACSN`` (v2-0203), with its issuer."""
    return Identifier(
        use="usual",
        type=CodeableConcept(coding=[Coding(system=V2_0203, code="ACSN")]),
        value=case.accession,
        **issuer_fields(case.accession_issuer),
    )


def issuer_fields(issuer: str) -> dict[str, Any]:
    """An issuer that is a URI becomes ``system``; anything else the assigner's display."""
    if not issuer:
        return {}
    if re.match(r"^(https?://|urn:)\S+$", issuer):
        return {"system": issuer}
    return {"assigner": Reference(display=issuer)}


__all__ = [
    "CONNECTION_TYPE",
    "DCM",
    "DICOM_UID",
    "LOCAL_CONNECTION_TYPE",
    "PAYLOAD_TYPE",
    "UID_NAMESPACE",
    "V2_0203",
    "accession_identifier",
    "dicom_uid",
    "endpoint_id",
    "fhir_id",
    "issuer_fields",
    "parse_endpoint_id",
    "slide_specimen_id",
    "subject_reference",
    "value_of_fhir_id",
]
