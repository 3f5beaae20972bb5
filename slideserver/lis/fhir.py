"""FHIR R4 in and out, with the R4-compatible models of ``fhir.resources.R4B``.

In: a ``transaction`` Bundle of one Patient, one ServiceRequest and the case's Specimens.

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

Out: Patient, Specimen, Endpoint, ImagingStudy (one per case: modality ``SM`` from the DICOM
``DCM`` code system, one series per slide, each series with ``endpoint`` references to its viewer
and IIIF Endpoints; the study's endpoint is the case launch link), searchset and
transaction-response Bundles, and OperationOutcomes. Every resource is built with the
``fhir.resources`` models, so it validates as it is made. Resource IDs are the business
identifiers when they are valid FHIR IDs, else a reversible ``x-`` base32 form (see
:func:`fhir_id`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fhir.resources.R4B.annotation import Annotation
from fhir.resources.R4B.bundle import (
    Bundle,
    BundleEntry,
    BundleEntryResponse,
    BundleEntrySearch,
    BundleLink,
)
from fhir.resources.R4B.capabilitystatement import (
    CapabilityStatement,
    CapabilityStatementImplementation,
    CapabilityStatementRest,
    CapabilityStatementRestInteraction,
    CapabilityStatementRestResource,
    CapabilityStatementRestResourceInteraction,
    CapabilityStatementRestResourceSearchParam,
    CapabilityStatementRestSecurity,
    CapabilityStatementSoftware,
)
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.endpoint import Endpoint
from fhir.resources.R4B.humanname import HumanName
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.imagingstudy import ImagingStudy, ImagingStudySeries
from fhir.resources.R4B.operationoutcome import OperationOutcome, OperationOutcomeIssue
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.resource import Resource
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.specimen import Specimen, SpecimenContainer, SpecimenProcessing
from pydantic import ValidationError

from slideserver.catalog.cases import (
    ApplyResult,
    BlockIn,
    CaseOrder,
    CaseView,
    PatientIn,
    SlideIn,
    SlideView,
    SpecimenIn,
)
from slideserver.lis.json_orders import (
    OrderError,
    check_identifier,
    check_order,
    check_text,
    normalize_birth_date,
    normalize_name,
    normalize_sex,
)

FHIR_VERSION = "4.0.1"
MEDIA_TYPE = "application/fhir+json"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
DICOM_UID = "urn:dicom:uid"
CONNECTION_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
PAYLOAD_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-payload-type"
LOCAL_CONNECTION_TYPE = "urn:slideserver:fhir:endpoint-connection-type"
"""IIIF Image API has no code in the HL7 endpoint connection types; ours lives here."""
UID_NAMESPACE = uuid.UUID("6f1c1f2e-6d0b-4bd5-9a53-3f4e0cf1c0de")
"""Namespace of the UUID-derived (``2.25.``) DICOM UIDs we give studies and series."""

_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_SEX_TO_GENDER = {"M": "male", "F": "female", "O": "other", "U": "unknown"}


class FhirError(Exception):
    """A request we answer with an OperationOutcome; ``issue`` is the FHIR issue type."""

    def __init__(
        self, status: int, issue: str, diagnostics: str, expression: str | None = None
    ) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.issue = issue
        self.diagnostics = diagnostics
        self.expression = expression


# --- identifiers ---


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


# --- in: transaction Bundle -> CaseOrder ---


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
    try:
        bundle = Bundle.model_validate(data)
    except ValidationError as exc:
        raise FhirError(400, "structure", _validation_message(exc), "Bundle") from None
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


# --- out ---


def outcome(
    issue: str, diagnostics: str, *, severity: str = "error", expression: str | None = None
) -> OperationOutcome:
    """Return an OperationOutcome with one issue."""
    return OperationOutcome(
        issue=[
            OperationOutcomeIssue(
                severity=severity,
                code=issue,
                diagnostics=diagnostics,
                expression=[expression] if expression else None,
            )
        ]
    )


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


def patient_resource(patient: PatientIn) -> Patient:
    """Return the FHIR Patient for a catalog patient (PHI)."""
    identifier = Identifier(
        use="usual",
        type=CodeableConcept(coding=[Coding(system=V2_0203, code="MR")]),
        value=patient.identifier,
        **_issuer(patient.issuer),
    )
    name = None
    if patient.name:
        family, _, rest = patient.name.partition("^")
        given: list[str | None] = [g for g in rest.split("^")[:1] if g]
        name = [HumanName(use="official", family=family or None, given=given or None)]
    return Patient(
        id=fhir_id(patient.identifier),
        identifier=[identifier],
        name=name,
        gender=_SEX_TO_GENDER.get(patient.sex or ""),
        birthDate=_date(patient.birth_date),
    )


def specimen_resources(case: CaseView) -> list[Specimen]:
    """Return the case's parts, blocks and slides as Specimens linked by ``parent``.

    Slides the LIS ordered that no scan carries yet come last, without parent (the case view
    does not say which block they belong to).
    """
    subject = _subject(case)
    accession = _accession_identifier(case)
    out: list[Specimen] = []
    for part in case.specimens:
        part_id = fhir_id(f"{case.accession}/{part.id}")
        out.append(
            Specimen(
                id=part_id,
                identifier=[Identifier(value=part.id)],
                accessionIdentifier=accession,
                status="available",
                subject=subject,
                note=[Annotation(text=part.description)] if part.description else None,
            )
        )
        for block in part.blocks:
            block_id = fhir_id(f"{case.accession}/{part.id}/{block.id}")
            out.append(
                Specimen(
                    id=block_id,
                    identifier=[Identifier(value=block.id)],
                    accessionIdentifier=accession,
                    status="available",
                    subject=subject,
                    parent=[Reference(reference=f"Specimen/{part_id}")],
                    container=[
                        SpecimenContainer(
                            identifier=[Identifier(value=block.id)],
                            type=CodeableConcept(text="block"),
                        )
                    ],
                )
            )
            for slide in block.slides:
                barcode = slide.barcode or slide.id
                out.append(
                    Specimen(
                        id=_slide_specimen_id(slide),
                        identifier=[Identifier(value=barcode)],
                        accessionIdentifier=accession,
                        status="available",
                        subject=subject,
                        parent=[Reference(reference=f"Specimen/{block_id}")],
                        container=[
                            SpecimenContainer(
                                identifier=[Identifier(value=barcode)],
                                type=CodeableConcept(text="slide"),
                            )
                        ],
                        processing=[
                            SpecimenProcessing(
                                description="stain", procedure=CodeableConcept(text=slide.stain)
                            )
                        ]
                        if slide.stain
                        else None,
                    )
                )
    for barcode in case.expected_barcodes:
        out.append(
            Specimen(
                id=fhir_id(f"slide/{barcode}"),
                identifier=[Identifier(value=barcode)],
                accessionIdentifier=accession,
                status="available",
                subject=subject,
                container=[
                    SpecimenContainer(
                        identifier=[Identifier(value=barcode)], type=CodeableConcept(text="slide")
                    )
                ],
                note=[Annotation(text="ordered by the LIS; not scanned yet")],
            )
        )
    return out


def specimens_with_container(case: CaseView, container_id: str) -> list[Specimen]:
    """Return the case's Specimens whose container (block or slide) carries ``container_id``."""
    return [
        spec
        for spec in specimen_resources(case)
        if any(
            ident.value == container_id
            for container in spec.container or []
            for ident in container.identifier or []
        )
    ]


def endpoints(case: CaseView, base_url: str) -> list[Endpoint]:
    """Return the case launch Endpoint and each slide's viewer and IIIF Endpoints."""
    out = [case_endpoint(case.accession, base_url)]
    for slide in case.slides:
        out.extend(slide_endpoints(slide.id, base_url, slide.status))
    return out


def case_endpoint(accession: str, base_url: str) -> Endpoint:
    """The EMR launch link of a case (IHE Invoke Image Display style)."""
    return Endpoint(
        id=endpoint_id("case", accession),
        status="active",
        connectionType=Coding(system=CONNECTION_TYPE, code="ihe-iid"),
        name="slideserver case viewer",
        payloadType=[CodeableConcept(coding=[Coding(system=PAYLOAD_TYPE, code="any")])],
        payloadMimeType=["text/html"],
        address=f"{base_url}/launch?accession={quote(accession, safe='')}",
    )


def slide_endpoints(slide_id: str, base_url: str, status: str = "ok") -> list[Endpoint]:
    """The viewer page and the IIIF Image API 3.0 service of one slide."""
    state = {"ok": "active", "missing": "off", "unreadable": "error"}.get(status, "active")
    payload = [CodeableConcept(coding=[Coding(system=PAYLOAD_TYPE, code="any")])]
    return [
        Endpoint(
            id=endpoint_id("viewer", slide_id),
            status=state,
            connectionType=Coding(system=CONNECTION_TYPE, code="ihe-iid"),
            name="slideserver slide viewer",
            payloadType=payload,
            payloadMimeType=["text/html"],
            address=f"{base_url}/view/{slide_id}",
        ),
        Endpoint(
            id=endpoint_id("iiif", slide_id),
            status=state,
            connectionType=Coding(
                system=LOCAL_CONNECTION_TYPE, code="iiif-image-3", display="IIIF Image API 3.0"
            ),
            name="IIIF Image API 3.0",
            payloadType=payload,
            payloadMimeType=["application/ld+json", "image/jpeg", "image/png", "image/webp"],
            address=f"{base_url}/iiif/3/{slide_id}/info.json",
        ),
    ]


def imaging_study(case: CaseView) -> ImagingStudy:
    """Return the case as one ImagingStudy: modality SM, one series per slide."""
    sm = Coding(system=DCM, code="SM", display="Slide Microscopy")
    block_of = {
        slide.id: (part.id, block.id)
        for part in case.specimens
        for block in part.blocks
        for slide in block.slides
    }
    series = []
    for n, slide in enumerate(case.slides, start=1):
        where = block_of.get(slide.id)
        words = [
            f"specimen {slide.specimen}" if slide.specimen else "",
            f"block {slide.block}" if slide.block else "",
            slide.stain or "",
        ]
        series.append(
            ImagingStudySeries(
                uid=dicom_uid("series", slide.id),
                number=n,
                modality=sm,
                description=", ".join(w for w in words if w) or None,
                endpoint=[
                    Reference(reference=f"Endpoint/{endpoint_id('viewer', slide.id)}"),
                    Reference(reference=f"Endpoint/{endpoint_id('iiif', slide.id)}"),
                ],
                specimen=[Reference(reference=f"Specimen/{_slide_specimen_id(slide)}")]
                if where
                else None,
            )
        )
    identifiers = [
        _accession_identifier(case),
        Identifier(system=DICOM_UID, value=f"urn:oid:{dicom_uid('study', case.accession)}"),
    ]
    return ImagingStudy(
        id=fhir_id(case.accession),
        identifier=identifiers,
        status="available" if any(s.status == "ok" for s in case.slides) else "registered",
        modality=[sm],
        subject=_subject(case),
        endpoint=[Reference(reference=f"Endpoint/{endpoint_id('case', case.accession)}")],
        numberOfSeries=len(series),
        series=series or None,
    )


def searchset(
    matches: Iterable[Resource],
    base_url: str,
    self_url: str,
    includes: Iterable[Resource] = (),
) -> Bundle:
    """Return a searchset Bundle of ``matches`` (counted in ``total``) and ``includes``."""
    entries = []
    total = 0
    seen: set[str] = set()
    for mode, resources in (("match", matches), ("include", includes)):
        for resource in resources:
            key = f"{resource.get_resource_type()}/{resource.id}"
            if key in seen:
                continue
            seen.add(key)
            total += mode == "match"
            entries.append(
                BundleEntry(
                    fullUrl=f"{base_url}/fhir/{key}",
                    resource=resource,
                    search=BundleEntrySearch(mode=mode),
                )
            )
    return Bundle(
        type="searchset",
        total=total,
        link=[BundleLink(relation="self", url=self_url)],
        entry=entries or None,
    )


def imaging_study_searchset(cases: Sequence[CaseView], base_url: str, self_url: str) -> Bundle:
    """One ImagingStudy per case, their Endpoints included."""
    return searchset(
        [imaging_study(case) for case in cases],
        base_url,
        self_url,
        includes=[ep for case in cases for ep in endpoints(case, base_url)],
    )


def to_json(resource: Resource) -> str:
    """Serialize a resource as FHIR JSON (no nulls)."""
    return str(resource.model_dump_json(exclude_none=True))


def _date(text: str | None) -> dt.date | None:
    """An ISO date from the store; anything else (a DICOM evidence oddity) is left out."""
    try:
        return dt.date.fromisoformat(text) if text else None
    except ValueError:
        return None


def _slide_specimen_id(slide: SlideView) -> str:
    return fhir_id(f"slide/{slide.barcode or slide.id}")


def _subject(case: CaseView) -> Reference:
    if case.patient is None:
        return Reference(display="patient not known")
    return Reference(reference=f"Patient/{fhir_id(case.patient.identifier)}")


def _accession_identifier(case: CaseView) -> Identifier:
    return Identifier(
        use="usual",
        type=CodeableConcept(coding=[Coding(system=V2_0203, code="ACSN")]),
        value=case.accession,
        **_issuer(case.accession_issuer),
    )


def _issuer(issuer: str) -> dict[str, Any]:
    """An issuer that is a URI becomes ``system``; anything else the assigner's display."""
    if not issuer:
        return {}
    if re.match(r"^(https?://|urn:)\S+$", issuer):
        return {"system": issuer}
    return {"assigner": Reference(display=issuer)}


__all__ = [
    "DCM",
    "FHIR_VERSION",
    "MEDIA_TYPE",
    "V2_0203",
    "FhirError",
    "Transaction",
    "case_endpoint",
    "dicom_uid",
    "endpoint_id",
    "endpoints",
    "fhir_id",
    "imaging_study",
    "imaging_study_searchset",
    "outcome",
    "parse_endpoint_id",
    "parse_transaction",
    "patient_resource",
    "searchset",
    "slide_endpoints",
    "specimen_resources",
    "specimens_with_container",
    "to_json",
    "transaction_response",
    "value_of_fhir_id",
]


SUPPORTED: tuple[tuple[str, tuple[str, ...], tuple[tuple[str, str, str], ...]], ...] = (
    ("Patient", ("read",), ()),
    ("Specimen", ("search-type",), (("container-id", "token", "the block or slide label"),)),
    (
        "ImagingStudy",
        ("search-type",),
        (
            ("identifier", "token", "the case's accession number"),
            ("patient", "reference", "the patient's medical record number"),
        ),
    ),
    ("Endpoint", ("read",), ()),
)
"""What the FHIR routes serve: resource type, interactions, search parameters (name, type, doc)."""


def capability_statement(base: str, software_version: str) -> CapabilityStatement:
    """Return the server's CapabilityStatement (``GET /fhir/metadata``), built from SUPPORTED."""
    resources = [
        CapabilityStatementRestResource(
            type=kind,
            interaction=[
                CapabilityStatementRestResourceInteraction(code=code) for code in interactions
            ],
            searchParam=[
                CapabilityStatementRestResourceSearchParam(name=name, type=type_, documentation=doc)
                for name, type_, doc in params
            ]
            or None,
        )
        for kind, interactions, params in SUPPORTED
    ]
    return CapabilityStatement(
        status="active",
        date=dt.datetime.now(dt.UTC).replace(microsecond=0),
        kind="instance",
        fhirVersion=FHIR_VERSION,
        format=["json"],
        software=CapabilityStatementSoftware(name="slideserver", version=software_version),
        implementation=CapabilityStatementImplementation(
            description="slideserver: whole-slide images of pathology cases", url=f"{base}/fhir"
        ),
        rest=[
            CapabilityStatementRest(
                mode="server",
                security=CapabilityStatementRestSecurity(
                    description=(
                        "Authorization: Bearer with an API token (`slideserver token create`) or "
                        "an OIDC access token; the lis role writes, pathologists read."
                    )
                ),
                resource=resources,
                interaction=[CapabilityStatementRestInteraction(code="transaction")],
            )
        ],
    )
