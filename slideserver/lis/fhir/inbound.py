"""FHIR in: a ``transaction`` Bundle -> a :class:`CaseOrder`, and its transaction-response.

The Bundle is a ``transaction`` of one Patient, one ServiceRequest and the case's Specimens.

- Patient: the identifier typed ``MR`` (v2-0203), else the first (issuer: its ``system``, else
  ``assigner.display``); ``name[0]`` (``official`` first) as ``FAMILY^GIVEN``; ``birthDate``;
  ``gender``. Without a Patient entry, ``ServiceRequest.subject`` may name the patient by
  ``identifier`` or as ``Patient/{id}``.
- ServiceRequest: the accession is the identifier whose ``type`` has the coding
  ``http://terminology.hl7.org/CodeSystem/v2-0203#ACSN`` (issuer: its ``system``).
- Specimen: the hierarchy follows ``Specimen.parent`` (references to other entries): no parent =
  part, parent is a part = block, parent is a block = slide. A part's ID is ``identifier[0]``; a
  block's and a slide's are their ``container[0].identifier[0]`` (else ``identifier[0]``). The
  part's description is ``note[0].text`` (else ``type.text``); the slide's stain is the
  ``processing`` step described ``stain`` (else the first): ``procedure.text``, else its first
  coding's code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import (
    Bundle,
    BundleEntry,
    BundleEntryResponse,
)
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.operationoutcome import OperationOutcome, OperationOutcomeIssue
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.resource import Resource
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.specimen import Specimen
from pydantic import ValidationError

from slideserver.catalog.cases import (
    ApplyResult,
    BlockIn,
    CaseOrder,
    PatientIn,
    SlideIn,
    SpecimenIn,
)
from slideserver.lis.fhir.ids import (
    V2_0203,
    fhir_id,
    value_of_fhir_id,
)
from slideserver.lis.fhir.outcome import FhirError
from slideserver.lis.validate import (
    OrderError,
    check_identifier,
    check_order,
    check_text,
    normalize_birth_date,
    normalize_name,
    normalize_sex,
)


@dataclass(frozen=True)
class Transaction:
    """A parsed transaction: the order and the entries to answer, in request order."""

    order: CaseOrder
    entries: tuple[tuple[str, str | None], ...]
    """(resource type, our location or ``None``) per entry."""


def parse_transaction(data: object) -> Transaction:
    """Validate a decoded ``transaction`` Bundle and build its CaseOrder; raise FhirError."""
    if not isinstance(data, Mapping):
        raise FhirError(400, "structure", "the body must be a JSON object (a FHIR Bundle)")
    if data.get("resourceType") != "Bundle":
        raise FhirError(400, "structure", "the body must be a Bundle", "Bundle")
    unknown = _unknown_resource_type(data)
    if unknown is not None:
        raise FhirError(400, "structure", f"unknown resourceType {unknown}", "Bundle.entry")
    try:
        bundle = Bundle.model_validate(data)
    except ValidationError as exc:
        raise FhirError(400, "structure", _validation_message(exc), "Bundle") from None
    except (KeyError, TypeError):  # fhir.resources' own lookups, should one slip past the check
        raise FhirError(400, "structure", "the Bundle holds an unknown resourceType") from None
    if bundle.type != "transaction":
        raise FhirError(
            422,
            "not-supported",
            f"Bundle.type must be 'transaction', not {bundle.type!r}",
            "Bundle.type",
        )
    try:
        return _transaction(bundle)
    except OrderError as exc:
        raise FhirError(422, "invalid", exc.reason, exc.field) from None


def _known_resource_type(name: str) -> bool:
    """Whether ``name`` is a FHIR R4B resource type (not a data type, not unknown)."""
    try:
        model = get_fhir_model_class(name)  # caches only the types found, never the misses
    except (ValueError, AttributeError):
        return False
    return isinstance(model, type) and issubclass(model, Resource)


def _unknown_resource_type(data: object) -> str | None:
    """Return the first ``resourceType`` anywhere in ``data`` that is not a FHIR type, quoted and
    clipped to 40 characters (it is a type name, not patient data); ``None`` when all are known.

    fhir.resources raises a bare KeyError on such a type (nested ones too: ``contained``), so it
    is looked for first, without recursion.
    """
    stack: list[object] = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            rtype = item.get("resourceType")
            if rtype is not None and not (isinstance(rtype, str) and _known_resource_type(rtype)):
                return repr(rtype[:40]) if isinstance(rtype, str) else "(not a string)"
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _transaction(bundle: Bundle) -> Transaction:
    by_ref: dict[str, tuple[int, Resource]] = {}
    typed: list[tuple[int, str, Any]] = []
    for i, entry in enumerate(bundle.entry or []):
        where = f"Bundle.entry[{i}]"
        resource = entry.resource
        if resource is None:
            raise OrderError(f"{where}.resource", "is required")
        if entry.request is None:
            raise OrderError(f"{where}.request", "is required in a transaction")
        if entry.request.method not in {"POST", "PUT"}:
            raise OrderError(f"{where}.request.method", "must be POST or PUT")
        rtype = resource.get_resource_type()
        if rtype not in {"Patient", "ServiceRequest", "Specimen"}:
            raise OrderError(
                f"{where}.resource",
                f"{rtype} is not supported here (Patient, ServiceRequest and Specimen are)",
            )
        if entry.fullUrl:
            by_ref[str(entry.fullUrl)] = (i, resource)
        if resource.id:
            by_ref[f"{rtype}/{resource.id}"] = (i, resource)
        typed.append((i, rtype, resource))

    requests = [(i, r) for i, t, r in typed if t == "ServiceRequest"]
    if len(requests) != 1:
        raise OrderError("Bundle.entry", f"one ServiceRequest is required, found {len(requests)}")
    req_index, request = requests[0]
    accession, issuer = _accession(request, f"Bundle.entry[{req_index}].resource")

    patients = [(i, r) for i, t, r in typed if t == "Patient"]
    if len(patients) > 1:
        raise OrderError("Bundle.entry", "at most one Patient is supported")
    if patients:
        patient = _patient(patients[0][1], f"Bundle.entry[{patients[0][0]}].resource")
    else:
        patient = _patient_of_reference(
            request.subject, f"Bundle.entry[{req_index}].resource.subject"
        )

    specimens = _specimens([(i, r) for i, t, r in typed if t == "Specimen"], by_ref)
    order = check_order(
        CaseOrder(
            accession=accession,
            patient=patient,
            accession_issuer=issuer,
            specimens=specimens,
            source="fhir",
            message_id=check_identifier(bundle.id, "Bundle.id", required=False) or None,
        )
    )
    entries = tuple(
        (t, f"Patient/{fhir_id(patient.identifier)}" if t == "Patient" else None)
        for _i, t, _r in typed
    )
    return Transaction(order, entries)


def _accession(request: ServiceRequest, where: str) -> tuple[str, str]:
    for n, ident in enumerate(request.identifier or []):
        codings = ident.type.coding if ident.type and ident.type.coding else []
        if any(c.system == V2_0203 and c.code == "ACSN" for c in codings):
            value = check_identifier(ident.value, f"{where}.identifier[{n}].value")
            return value, check_identifier(
                str(ident.system or ""), f"{where}.identifier[{n}].system", required=False
            )
    raise OrderError(
        f"{where}.identifier",
        f"is required: no identifier with type {V2_0203}#ACSN (the accession number)",
    )


def _patient(patient: Patient, where: str) -> PatientIn:
    idents = [i for i in patient.identifier or [] if i.value]
    if not idents:
        raise OrderError(f"{where}.identifier", "is required: the patient's MRN")

    def is_mr(i: Identifier) -> bool:
        return bool(i.type and any(c.code == "MR" for c in i.type.coding or []))

    ident = next((i for i in idents if is_mr(i)), idents[0])
    issuer = str(ident.system or "") or (ident.assigner.display if ident.assigner else "") or ""
    names = patient.name or []
    name = next((n for n in names if n.use == "official"), names[0] if names else None)
    text = None
    if name is not None and (name.family or name.given):
        given = name.given[0] if name.given else ""
        text = f"{name.family or ''}^{given}" if given else (name.family or "")
    return PatientIn(
        identifier=check_identifier(ident.value, f"{where}.identifier.value"),
        issuer=check_identifier(issuer, f"{where}.identifier.system", required=False),
        name=normalize_name(text, f"{where}.name"),
        birth_date=normalize_birth_date(
            str(patient.birthDate) if patient.birthDate else None, f"{where}.birthDate"
        ),
        sex=normalize_sex(patient.gender, f"{where}.gender"),
    )


def _patient_of_reference(subject: Reference | None, where: str) -> PatientIn:
    if subject is not None and subject.identifier is not None and subject.identifier.value:
        return PatientIn(
            identifier=check_identifier(subject.identifier.value, f"{where}.identifier.value"),
            issuer=check_identifier(
                str(subject.identifier.system or ""),
                f"{where}.identifier.system",
                required=False,
            ),
        )
    ref = subject.reference if subject is not None else None
    if ref and ref.startswith("Patient/"):
        value = value_of_fhir_id(ref.removeprefix("Patient/"))
        if value:
            return PatientIn(identifier=value)
    raise OrderError("Bundle.entry", "a Patient entry (or ServiceRequest.subject) is required")


def _specimens(
    items: Sequence[tuple[int, Specimen]], by_ref: Mapping[str, tuple[int, Resource]]
) -> tuple[SpecimenIn, ...]:
    parent_of: dict[int, int | None] = {}
    for i, spec in items:
        parents = spec.parent or []
        if len(parents) > 1:
            raise OrderError(f"Bundle.entry[{i}].resource.parent", "one parent per specimen")
        if not parents:
            parent_of[i] = None
            continue
        ref = parents[0].reference or ""
        target = by_ref.get(ref)
        if target is None or target[1].get_resource_type() != "Specimen":
            raise OrderError(
                f"Bundle.entry[{i}].resource.parent[0].reference",
                "must reference a Specimen entry of this Bundle",
            )
        parent_of[i] = target[0]

    def depth(i: int) -> int:
        level, seen = 0, {i}
        parent = parent_of[i]
        while parent is not None:
            if parent in seen:
                raise OrderError(f"Bundle.entry[{i}].resource.parent", "parents form a cycle")
            seen.add(parent)
            parent = parent_of[parent]
            level += 1
        return level

    level = {i: depth(i) for i, _ in items}
    for i, _ in items:
        if level[i] > 2:
            raise OrderError(
                f"Bundle.entry[{i}].resource.parent", "too deep: parts, blocks and slides only"
            )

    def ident(i: int, spec: Specimen, container_first: bool) -> str:
        where = f"Bundle.entry[{i}].resource"
        container = next(
            (c.identifier[0].value for c in spec.container or [] if c.identifier), None
        )
        own = spec.identifier[0].value if spec.identifier else None
        value = (container or own) if container_first else (own or container)
        return check_identifier(
            value,
            f"{where}.identifier" if not container_first else f"{where}.container[0].identifier",
        )

    parts = []
    for i, spec in items:
        if level[i] != 0:
            continue
        where = f"Bundle.entry[{i}].resource"
        note = spec.note[0].text if spec.note else None
        description = note or (spec.type.text if spec.type else None)
        blocks = []
        for j, block in items:
            if parent_of[j] != i:
                continue
            slides = tuple(
                SlideIn(barcode=ident(k, slide, True), stain=_stain(k, slide))
                for k, slide in items
                if parent_of[k] == j
            )
            blocks.append(BlockIn(id=ident(j, block, True), slides=slides))
        parts.append(
            SpecimenIn(
                id=ident(i, spec, False),
                description=check_text(description, f"{where}.note[0].text"),
                blocks=tuple(blocks),
            )
        )
    return tuple(parts)


def _stain(i: int, spec: Specimen) -> str | None:
    steps = spec.processing or []
    step = next(
        (p for p in steps if (p.description or "").strip().lower() in {"stain", "staining"}),
        steps[0] if steps else None,
    )
    if step is None or step.procedure is None:
        return None
    proc = step.procedure
    value = proc.text or next((c.code or c.display for c in proc.coding or []), None)
    return (
        check_identifier(value, f"Bundle.entry[{i}].resource.processing.procedure", required=False)
        or None
    )


def _validation_message(exc: ValidationError) -> str:
    """Say where the Bundle is invalid without echoing its values (they may be PHI)."""
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) if not isinstance(x, int) else f"[{x}]" for x in err["loc"])
        parts.append(f"{loc.replace('.[', '[')}: {err['msg']}")
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def transaction_response(transaction: Transaction, result: ApplyResult) -> Bundle:
    """Answer a transaction: one entry per request entry, in order, with what changed."""
    status = "201 Created" if result.created else "200 OK"
    issues = [
        OperationOutcomeIssue(severity="warning", code="conflict", diagnostics=conflict)
        for conflict in result.conflicts
    ]
    issues.append(
        OperationOutcomeIssue(
            severity="information",
            code="informational",
            diagnostics=(
                f"{'case created' if result.created else 'case updated'}; "
                f"{len(result.linked_slides)} slide(s) linked"
                if result.changed
                else "no change (already applied)"
            ),
        )
    )
    entries = []
    for n, (rtype, location) in enumerate(transaction.entries):
        entries.append(
            BundleEntry(
                response=BundleEntryResponse(
                    status=status,
                    location=location,
                    outcome=OperationOutcome(issue=issues)
                    if rtype == "ServiceRequest"
                    or (n == 0 and "ServiceRequest" not in {t for t, _ in transaction.entries})
                    else None,
                )
            )
        )
    return Bundle(type="transaction-response", entry=entries)


__all__ = ["Transaction", "parse_transaction", "transaction_response"]
