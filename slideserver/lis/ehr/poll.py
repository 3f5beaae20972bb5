"""What one poll asks the EHR and what one page of its answer means.

The cursor is the newest ``meta.lastUpdated`` of the resources already applied. A poll asks for
what changed since (``_lastUpdated=ge{cursor}``, oldest first, ``_count`` per page): ``ge``, not
``gt``, because several resources written in one transaction share a timestamp and a page may
end between them; what was applied already is applied again as a no-op (orders are idempotent).

A page of ServiceRequests becomes :class:`PulledOrder` items: each ServiceRequest with its
Patient and its Specimens (and their parents), taken from the ``_include``\\ d entries or read
when the server did not include them, then shaped as the transaction Bundle a pushed order would
be, so that it goes through the very parser and links pushed FHIR orders do. The Encounter comes
along (``_include``, validated) but the case model keeps no encounter yet.
A page of Patients becomes :class:`PatientChange` items: a merge (``Patient.link`` typed
``replaced-by``) or new demographics.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.resource import Resource
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.specimen import Specimen

from slideserver.catalog.cases import CaseOrder, PatientIn
from slideserver.lis.ehr.source import FhirSource
from slideserver.lis.fhir.inbound import parse_transaction, patient_from_resource
from slideserver.lis.fhir.outcome import FhirError
from slideserver.lis.validate import OrderError

ORDER_INCLUDES = (
    "ServiceRequest:subject",
    "ServiceRequest:encounter",
    "ServiceRequest:specimen",
)
MAX_SPECIMEN_DEPTH = 3
"""Parts, blocks, slides: parents are followed no deeper than this."""

Reader = Callable[[str], Resource | None]
"""Reads one ``Type/id`` from the EHR (``None`` when it is gone)."""


def search_params(
    cursor: str | None, count: int, includes: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """The first page's query: changed since ``cursor`` (everything when none), oldest first."""
    params = [("_sort", "_lastUpdated"), ("_count", str(count))]
    if cursor:
        params.append(("_lastUpdated", f"ge{cursor}"))
    params.extend(("_include", inc) for inc in includes)
    return params


def matches(bundle: Bundle, rtype: str) -> list[Resource]:
    """The page's matches of type ``rtype`` (entries not marked ``include``), in order."""
    out = []
    for entry in bundle.entry or []:
        mode = entry.search.mode if entry.search else None
        if (
            entry.resource is not None
            and mode != "include"
            and entry.resource.get_resource_type() == rtype
        ):
            out.append(entry.resource)
    return out


def page_cursor(resources: Iterable[Resource], cursor: str | None) -> str | None:
    """The cursor once ``resources`` are applied: the newest ``meta.lastUpdated`` seen, as a FHIR
    instant to the millisecond (cut, never rounded up: with ``ge`` a cut loses nothing)."""
    stamps = [r.meta.lastUpdated for r in resources if r.meta and r.meta.lastUpdated]
    newest = max((s for s in stamps if isinstance(s, datetime)), default=None)
    if newest is None:
        return cursor
    if cursor is not None and newest <= _instant(cursor):
        return cursor
    return newest.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _key(resource: Resource) -> str:
    return f"{resource.get_resource_type()}/{resource.id}"


def _local(reference: str | None, base_url: str) -> str | None:
    """``Type/id`` for a reference to this server (relative or absolute); None otherwise."""
    if not reference or reference.startswith(("#", "urn:")):
        return None
    if reference.startswith(("http://", "https://")):
        if not reference.startswith(base_url.rstrip("/") + "/"):
            return None
        reference = reference[len(base_url.rstrip("/")) + 1 :]
    parts = reference.split("/")
    return "/".join(parts[:2]) if len(parts) >= 2 else None


@dataclass
class Included:
    """The resources a page brought along, by ``Type/id``; the missing ones are read once."""

    read: Reader
    base_url: str
    known: dict[str, Resource | None] = field(default_factory=dict)

    @classmethod
    def of(cls, bundle: Bundle, client: FhirSource) -> Included:
        known: dict[str, Resource | None] = {}
        for entry in bundle.entry or []:
            if entry.resource is not None and entry.resource.id:
                known[_key(entry.resource)] = entry.resource
        return cls(client.read, client.base_url, known)

    def get(self, reference: str | None) -> Resource | None:
        key = _local(reference, self.base_url)
        if key is None:
            return None
        if key not in self.known:
            self.known[key] = self.read(key)
        return self.known[key]


@dataclass(frozen=True)
class PulledOrder:
    """One ServiceRequest as an order, or why it cannot be one; ``raw`` is what is recorded."""

    reference: str
    raw: str
    order: CaseOrder | None = None
    error: str = ""
    merges: tuple[tuple[PatientIn, str], ...] = ()
    """(survivor, merged MRN) for a subject the EHR merged into another patient."""


def order_of(request: ServiceRequest, included: Included) -> PulledOrder:
    """Shape one ServiceRequest and what it references as a transaction; parse it as pushed."""
    entries: list[dict[str, Any]] = []
    merges: list[tuple[PatientIn, str]] = []
    subject = included.get(request.subject.reference if request.subject else None)
    request_json = request.model_dump(mode="json", exclude_none=True)
    if isinstance(subject, Patient):
        survivor = survivor_of(subject, included)
        if survivor is not None:
            merges.append(
                (patient_from_resource(survivor), patient_from_resource(subject).identifier)
            )
            subject = survivor
            request_json["subject"] = {"reference": _key(survivor)}
        entries.append(_entry(subject))
    for specimen in _specimens(request, included):
        entries.append(_entry(specimen))
    entries.append(_entry(request, request_json))
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    raw = json.dumps(bundle, separators=(",", ":"))
    reference = _key(request)
    try:
        order = parse_transaction(bundle).order
    except FhirError as exc:
        return PulledOrder(reference, raw, error=exc.diagnostics)
    except OrderError as exc:
        return PulledOrder(reference, raw, error=f"{exc.field}: {exc.reason}")
    return PulledOrder(reference, raw, order=_as_ehr(order), merges=tuple(merges))


def _as_ehr(order: CaseOrder) -> CaseOrder:
    return replace(order, source="ehr")


def _entry(resource: Resource, body: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "fullUrl": f"urn:ehr:{_key(resource)}",
        "resource": body or resource.model_dump(mode="json", exclude_none=True),
        "request": {"method": "PUT", "url": _key(resource)},
    }


def _specimens(request: ServiceRequest, included: Included) -> list[Specimen]:
    """The request's Specimens and their parents (read when not included), each once."""
    found: dict[str, Specimen] = {}
    todo = [(ref.reference, 0) for ref in request.specimen or []]
    while todo:
        reference, depth = todo.pop()
        specimen = included.get(reference)
        if not isinstance(specimen, Specimen) or _key(specimen) in found:
            continue
        found[_key(specimen)] = specimen
        if depth < MAX_SPECIMEN_DEPTH:
            todo.extend((p.reference, depth + 1) for p in specimen.parent or [])
    return list(found.values())


def survivor_of(patient: Patient, included: Included) -> Patient | None:
    """The patient ``patient`` was merged into (``link`` typed ``replaced-by``), followed to the
    end of a chain of merges (at most five); ``None`` when it was not merged."""
    current, survivor = patient, None
    for _ in range(5):
        link = next((lk for lk in current.link or [] if lk.type == "replaced-by"), None)
        if link is None or link.other is None:
            break
        found = included.get(link.other.reference)
        if not isinstance(found, Patient):
            break
        current = survivor = found
    return survivor


@dataclass(frozen=True)
class PatientChange:
    """A patient the EHR changed: new demographics, or merged into ``survivor``."""

    reference: str
    raw: str
    patient: PatientIn | None = None
    survivor: PatientIn | None = None
    error: str = ""


def patient_change(patient: Patient, included: Included) -> PatientChange:
    raw = json.dumps(patient.model_dump(mode="json", exclude_none=True), separators=(",", ":"))
    try:
        mine = patient_from_resource(patient)
        survivor = survivor_of(patient, included)
        return PatientChange(
            _key(patient),
            raw,
            patient=mine,
            survivor=patient_from_resource(survivor) if survivor is not None else None,
        )
    except OrderError as exc:
        return PatientChange(_key(patient), raw, error=f"{exc.field}: {exc.reason}")


__all__ = [
    "ORDER_INCLUDES",
    "Included",
    "PatientChange",
    "PulledOrder",
    "matches",
    "order_of",
    "page_cursor",
    "patient_change",
    "search_params",
    "survivor_of",
]
