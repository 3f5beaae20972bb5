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
from typing import Any, cast

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import (
    Bundle,
    BundleEntry,
    BundleEntryResponse,
)
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.operationoutcome import OperationOutcome, OperationOutcomeIssue
from fhir.resources.R4B.patient import Patient
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
from slideserver.lis.fhir.ids import V2_0203, fhir_id
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


class _References:
    """Resolve references the way FHIR does inside one transaction.

    A reference names a resource of the Bundle by its ``fullUrl`` (``urn:uuid:...`` or an
    absolute URL) or by ``Type/id`` (the resource's own id, or the tail of its fullUrl); ``#id``
    names a resource contained in the resource that holds the reference.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[str, Resource]] = {}
        self._contained: dict[tuple[str, str], tuple[str, Resource]] = {}

    def add_entry(self, where: str, full_url: str | None, resource: Resource) -> None:
        rtype = resource.get_resource_type()
        if full_url:
            self._entries[full_url] = (where, resource)
            tail = "/".join(full_url.rstrip("/").split("/")[-2:])
            if tail.startswith(f"{rtype}/"):
                self._entries.setdefault(tail, (where, resource))
        if resource.id:
            self._entries[f"{rtype}/{resource.id}"] = (where, resource)
        for n, inner in enumerate(getattr(resource, "contained", None) or []):
            if inner.id:
                self._contained[(where, inner.id)] = (f"{where}.contained[{n}]", inner)

    def resolve(self, reference: str | None, holder: str) -> tuple[str, Resource] | None:
        """The (path, resource) ``reference`` names from the resource at ``holder``."""
        if not reference:
            return None
        if reference.startswith("#"):
            return self._contained.get((holder, reference[1:]))
        found = self._entries.get(reference)
        if found is None and reference.count("/") >= 2:
            found = self._entries.get("/".join(reference.rstrip("/").split("/")[-2:]))
        return found

    def contained(self, holder: str, rtype: str) -> list[tuple[str, Resource]]:
        """The resources of type ``rtype`` contained in the resource at ``holder``."""
        return [
            found
            for (where, _id), found in self._contained.items()
            if where == holder and found[1].get_resource_type() == rtype
        ]


def _transaction(bundle: Bundle) -> Transaction:
    refs = _References()
    typed: list[tuple[str, str, Any]] = []
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
        refs.add_entry(f"{where}.resource", str(entry.fullUrl) if entry.fullUrl else None, resource)
        typed.append((f"{where}.resource", rtype, resource))

    requests = [(w, r) for w, t, r in typed if t == "ServiceRequest"]
    if len(requests) != 1:
        raise OrderError("Bundle.entry", f"one ServiceRequest is required, found {len(requests)}")
    req_where, request = requests[0]
    numbers = _order_numbers(request, req_where)

    patients = [(w, r) for w, t, r in typed if t == "Patient"]
    if len(patients) > 1:
        raise OrderError("Bundle.entry", "at most one Patient is supported")
    patient = _subject(request, req_where, patients, refs)

    specimen_items = [(w, r) for w, t, r in typed if t == "Specimen"]
    for w, _t, _r in typed:
        specimen_items.extend(refs.contained(w, "Specimen"))
    accession, issuer = _accession(request, req_where, specimen_items)
    specimens = _specimens(specimen_items, refs)
    order = check_order(
        CaseOrder(
            accession=accession,
            patient=patient,
            accession_issuer=issuer,
            specimens=specimens,
            source="fhir",
            message_id=check_identifier(bundle.id, "Bundle.id", required=False) or None,
            **numbers,
        )
    )
    entries = tuple(
        (t, f"Patient/{fhir_id(patient.identifier)}" if t == "Patient" else None)
        for _w, t, _r in typed
    )
    return Transaction(order, entries)


def _typed(ident: Identifier, code: str) -> bool:
    codings = ident.type.coding if ident.type and ident.type.coding else []
    return any(c.system == V2_0203 and c.code == code for c in codings)


def _order_numbers(request: ServiceRequest, where: str) -> dict[str, str]:
    """The placer (``PLAC``) and filler (``FILL``) order numbers of the ServiceRequest."""
    out: dict[str, str] = {}
    for code, name in (("PLAC", "placer"), ("FILL", "filler")):
        for n, ident in enumerate(request.identifier or []):
            if _typed(ident, code) and ident.value:
                field = f"{where}.identifier[{n}]"
                out[name] = check_identifier(ident.value, f"{field}.value")
                out[f"{name}_issuer"] = check_identifier(
                    str(ident.system or ""), f"{field}.system", required=False
                )
                break
    return out


def _accession(
    request: ServiceRequest, where: str, specimens: Sequence[tuple[str, Specimen]]
) -> tuple[str, str]:
    """The ServiceRequest's ``ACSN`` identifier, else the Specimens' ``accessionIdentifier``."""
    found: list[tuple[str, str, str]] = []
    for n, ident in enumerate(request.identifier or []):
        if _typed(ident, "ACSN"):
            field = f"{where}.identifier[{n}]"
            found.append((field, ident.value or "", str(ident.system or "")))
    for spec_where, spec in specimens:
        spec_ident = spec.accessionIdentifier
        if spec_ident is not None and spec_ident.value:
            found.append(
                (
                    f"{spec_where}.accessionIdentifier",
                    spec_ident.value,
                    str(spec_ident.system or ""),
                )
            )
    if not found:
        raise OrderError(
            f"{where}.identifier",
            f"is required: no identifier with type {V2_0203}#ACSN (the accession number) "
            "and no Specimen.accessionIdentifier",
        )
    field, value, system = found[0]
    accession = check_identifier(value, f"{field}.value")
    issuer = check_identifier(system, f"{field}.system", required=False)
    for other_field, other_value, other_system in found[1:]:
        if other_value.strip() != accession or (other_system and issuer and other_system != issuer):
            raise OrderError(other_field, f"names another accession number than {field}")
        issuer = issuer or other_system
    return accession, issuer


def _subject(
    request: ServiceRequest,
    where: str,
    patients: Sequence[tuple[str, Patient]],
    refs: _References,
) -> PatientIn:
    """The order's patient: what ``ServiceRequest.subject`` references, else the Patient entry.

    A reference must resolve inside the Bundle (an entry or a contained resource); a logical
    reference (``subject.identifier``) names the patient by their MRN. A resource id is never
    taken for an MRN.
    """
    subject = request.subject
    field = f"{where}.subject"
    if subject is not None and subject.reference:
        found = refs.resolve(subject.reference, where)
        if found is None or found[1].get_resource_type() != "Patient":
            raise OrderError(
                f"{field}.reference",
                "is not a Patient of this Bundle (by fullUrl or id) nor a contained one; "
                "send the Patient in the Bundle, or name it by subject.identifier",
            )
        return _patient(cast(Patient, found[1]), found[0])
    if subject is not None and subject.identifier is not None and subject.identifier.value:
        ident = subject.identifier
        return PatientIn(
            identifier=check_identifier(ident.value, f"{field}.identifier.value"),
            issuer=check_identifier(
                str(ident.system or ""), f"{field}.identifier.system", required=False
            ),
            identifier_type=_type_code(ident),
        )
    if patients:
        return _patient(patients[0][1], patients[0][0])
    raise OrderError(field, "is required: a Patient entry or ServiceRequest.subject")


def _type_code(ident: Identifier) -> str:
    """The identifier's type code as sent (the v2-0203 coding first), else ``""``."""
    codings = ident.type.coding if ident.type and ident.type.coding else []
    code = next((c.code for c in codings if c.system == V2_0203 and c.code), None)
    code = code or next((c.code for c in codings if c.code), None)
    return check_identifier(code or "", "identifier.type", required=False)[:16]


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
        identifier_type=_type_code(ident),
    )


def patient_from_resource(patient: Patient) -> PatientIn:
    """A Patient resource as the catalog keeps patients (the EHR pull reads them one by one)."""
    return _patient(patient, "Patient")


def _specimens(items: Sequence[tuple[str, Specimen]], refs: _References) -> tuple[SpecimenIn, ...]:
    """Parts -> blocks -> slides from ``Specimen.parent``; ``items`` are (path, Specimen)."""
    parent_of: dict[str, str | None] = {}
    known = {w for w, _ in items}
    for w, spec in items:
        parents = spec.parent or []
        if len(parents) > 1:
            raise OrderError(f"{w}.parent", "one parent per specimen")
        if not parents:
            parent_of[w] = None
            continue
        holder = w.rsplit(".contained[", 1)[0] if ".contained[" in w else w
        target = refs.resolve(parents[0].reference, holder)
        if target is None or target[0] not in known:
            raise OrderError(f"{w}.parent[0].reference", "must reference a Specimen of this Bundle")
        parent_of[w] = target[0]

    def depth(w: str) -> int:
        level, seen = 0, {w}
        parent = parent_of[w]
        while parent is not None:
            if parent in seen:
                raise OrderError(f"{w}.parent", "parents form a cycle")
            seen.add(parent)
            parent = parent_of[parent]
            level += 1
        return level

    level = {w: depth(w) for w, _ in items}
    for w, _ in items:
        if level[w] > 2:
            raise OrderError(f"{w}.parent", "too deep: parts, blocks and slides only")

    def ident(w: str, spec: Specimen, container_first: bool) -> str:
        container = next(
            (c.identifier[0].value for c in spec.container or [] if c.identifier), None
        )
        own = spec.identifier[0].value if spec.identifier else None
        value = (container or own) if container_first else (own or container)
        return check_identifier(
            value, f"{w}.identifier" if not container_first else f"{w}.container[0].identifier"
        )

    parts = []
    for w, spec in items:
        if level[w] != 0:
            continue
        note = spec.note[0].text if spec.note else None
        description = note or (spec.type.text if spec.type else None)
        blocks = []
        for j, block in items:
            if parent_of[j] != w:
                continue
            slides = tuple(
                SlideIn(barcode=ident(k, slide, True), stain=_stain(k, slide))
                for k, slide in items
                if parent_of[k] == j
            )
            blocks.append(BlockIn(id=ident(j, block, True), slides=slides))
        parts.append(
            SpecimenIn(
                id=ident(w, spec, False),
                description=check_text(description, f"{w}.note[0].text"),
                blocks=tuple(blocks),
            )
        )
    return tuple(parts)


def _stain(where: str, spec: Specimen) -> str | None:
    steps = spec.processing or []
    step = next(
        (p for p in steps if (p.description or "").strip().lower() in {"stain", "staining"}),
        steps[0] if steps else None,
    )
    if step is None or step.procedure is None:
        return None
    proc = step.procedure
    value = proc.text or next((c.code or c.display for c in proc.coding or []), None)
    return check_identifier(value, f"{where}.processing.procedure", required=False) or None


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


__all__ = ["Transaction", "parse_transaction", "patient_from_resource", "transaction_response"]
