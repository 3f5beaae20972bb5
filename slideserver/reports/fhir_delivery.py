"""Signed reports to the EHR as FHIR R4: a DiagnosticReport, optionally a DocumentReference.

Every resource is validated with the ``fhir.resources.R4B`` models (as :mod:`slideserver.lis.fhir`
does) before it is sent. Writes are idempotent by the report's identifier: the DiagnosticReport
of a report is looked up by ``identifier=SYSTEM|ID``; when found it is updated in place (an
amendment changes its status), otherwise created with ``If-None-Exist`` on the same identifier,
so two attempts racing or a retry after a lost answer never make a second one.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import httpx
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.documentreference import DocumentReference
from pydantic import ValidationError

from slideserver.catalog.cases import CaseView
from slideserver.lis.fhir.ids import DICOM_UID, V2_0203
from slideserver.lis.fhir.outbound import study_uid
from slideserver.reports.outbox import DeliveryFailed, Outgoing

LOINC = "http://loinc.org"
PATHOLOGY_STUDY = {"system": LOINC, "code": "11526-1", "display": "Pathology study"}
PATHOLOGY_CATEGORY = {
    "system": "http://terminology.hl7.org/CodeSystem/v2-0074",
    "code": "SP",
    "display": "Surgical Pathology",
}
FHIR_JSON = "application/fhir+json"
RETRYABLE = frozenset({408, 409, 412, 425, 429})
"""Client-error statuses that may pass on a later attempt (the rest are retried too, as the
server's configuration may be fixed, but these are expected to clear by themselves)."""


def _accession_identifier(accession: str) -> dict[str, Any]:
    return {"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]}, "value": accession}


def _attachment(item: Outgoing, title: str) -> dict[str, Any]:
    """The PDF as FHIR wants it: Base64 data, size in bytes, SHA-1 hash (Base64)."""
    pdf = item.pdf
    return {
        "contentType": "application/pdf",
        "language": "en",
        "data": base64.b64encode(pdf).decode(),
        "size": len(pdf),
        "hash": base64.b64encode(hashlib.sha1(pdf).digest()).decode(),
        "title": title,
        "creation": item.version.signed_at.isoformat() if item.version.signed_at else None,
    }


def _subject(case: CaseView | None) -> dict[str, Any]:
    """The patient by MRN (a logical reference: the EHR knows its own Patient IDs)."""
    if case is None or case.patient is None:
        return {"display": "patient not known"}
    patient = case.patient
    identifier: dict[str, Any] = {"value": patient.identifier}
    if patient.issuer:
        identifier["system" if ":" in patient.issuer else "assigner"] = (
            patient.issuer if ":" in patient.issuer else {"display": patient.issuer}
        )
    if patient.identifier_type:
        identifier["type"] = {"coding": [{"system": V2_0203, "code": patient.identifier_type}]}
    return {"type": "Patient", "identifier": identifier}


def diagnostic_report(item: Outgoing, system: str) -> dict[str, Any]:
    """The DiagnosticReport of a signed version, validated (ValueError when it does not)."""
    version = item.version
    case = item.case
    conclusion = version.body.diagnosis or None
    resource: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "identifier": [
            {"use": "official", "system": system, "value": version.report_id},
        ],
        "basedOn": [
            {"type": "ServiceRequest", "identifier": _accession_identifier(version.accession)}
        ],
        "status": version.status,
        "category": [{"coding": [PATHOLOGY_CATEGORY]}],
        "code": {"coding": [PATHOLOGY_STUDY], "text": "Surgical pathology report"},
        "subject": _subject(case),
        "effectiveDateTime": version.signed_at.isoformat() if version.signed_at else None,
        "issued": version.signed_at.isoformat() if version.signed_at else None,
        "resultsInterpreter": [{"display": version.signer or ""}],
        "conclusion": conclusion,
        "presentedForm": [
            _attachment(item, f"Pathology report {version.accession} v{version.version}")
        ],
    }
    if case is not None:
        resource["specimen"] = [
            {
                "type": "Specimen",
                "identifier": {"value": f"{case.accession}-{s.id}"},
                "display": f"Specimen {s.id}" + (f": {s.description}" if s.description else ""),
            }
            for s in case.specimens
        ]
        if case.slides:
            resource["imagingStudy"] = [
                {
                    "type": "ImagingStudy",
                    "identifier": {"system": DICOM_UID, "value": f"urn:oid:{study_uid(case)}"},
                }
            ]
    return validated(DiagnosticReport, resource)


def document_reference(item: Outgoing, system: str) -> dict[str, Any]:
    """The DocumentReference of one signed version's PDF, validated."""
    version = item.version
    resource: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "identifier": [
            {"system": system, "value": f"{version.report_id}.{version.version}"},
        ],
        "status": "current",
        "docStatus": "final" if version.status == "final" else "amended",
        "type": {"coding": [PATHOLOGY_STUDY]},
        "subject": _subject(item.case),
        "date": version.signed_at.isoformat() if version.signed_at else None,
        "description": f"Pathology report {version.accession}, version {version.version}",
        "content": [
            {"attachment": _attachment(item, f"Pathology report {version.accession}")},
        ],
    }
    return validated(DocumentReference, resource)


def validated(model: Any, resource: dict[str, Any]) -> dict[str, Any]:
    """Check ``resource`` against its R4B model; return it as the model serialises it."""
    clean = {k: v for k, v in resource.items() if v is not None}
    try:
        parsed = model.model_validate(clean)
    except ValidationError as exc:
        where = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors()[:3])
        raise ValueError(f"invalid {resource['resourceType']} at {where}") from exc
    result: dict[str, Any] = parsed.model_dump(mode="json", exclude_none=True)
    return result


class FhirTarget:
    """Delivers signed versions to one FHIR server."""

    name = "fhir"

    def __init__(
        self,
        base_url: str,
        *,
        token: str = "",
        system: str = "urn:slideserver:report",
        document_reference: bool = False,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.system = system
        self.document_reference = document_reference
        headers = {"Accept": FHIR_JSON, "Content-Type": FHIR_JSON}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.headers = headers
        self.timeout = timeout
        self.transport = transport

    async def deliver(self, item: Outgoing) -> str:
        """Create or update the DiagnosticReport (and DocumentReference); return their IDs."""
        try:
            report = diagnostic_report(item, self.system)
            document = document_reference(item, self.system) if self.document_reference else None
        except ValueError as exc:
            raise DeliveryFailed(str(exc), permanent=True) from exc
        async with httpx.AsyncClient(
            headers=self.headers, timeout=self.timeout, transport=self.transport
        ) as client:
            ids = [await self._upsert(client, report, item.version.report_id)]
            if document is not None:
                key = f"{item.version.report_id}.{item.version.version}"
                ids.append(await self._upsert(client, document, key))
        return " ".join(ids)

    async def _upsert(self, client: httpx.AsyncClient, resource: dict[str, Any], key: str) -> str:
        """Update the resource with this identifier, or create it if none exists yet."""
        kind = resource["resourceType"]
        query = f"{self.system}|{key}"
        try:
            found = await client.get(f"{self.base_url}/{kind}", params={"identifier": query})
            _check(found, f"search {kind}")
            entries = [e for e in found.json().get("entry") or [] if "resource" in e]
            matches = [
                e["resource"] for e in entries if e.get("search", {}).get("mode") != "include"
            ]
            if len(matches) > 1:
                raise DeliveryFailed(f"{len(matches)} {kind}s carry identifier {key}", True)
            if matches:
                resource_id = str(matches[0]["id"])
                answer = await client.put(
                    f"{self.base_url}/{kind}/{resource_id}", json={**resource, "id": resource_id}
                )
            else:
                answer = await client.post(
                    f"{self.base_url}/{kind}",
                    json=resource,
                    headers={"If-None-Exist": f"identifier={query}"},
                )
            _check(answer, f"write {kind}")
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{kind}: {type(exc).__name__}") from exc
        except (ValueError, KeyError) as exc:  # an answer that is not FHIR JSON
            raise DeliveryFailed(f"{kind}: the server answered something other than FHIR") from exc
        written = answer.json() if answer.content else {}
        return f"{kind}/{written.get('id', '')}"


def _check(answer: httpx.Response, what: str) -> None:
    if answer.status_code >= 400:
        raise DeliveryFailed(f"{what}: HTTP {answer.status_code}")


__all__ = ["FhirTarget", "diagnostic_report", "document_reference", "validated"]
