"""FHIR out: Patient, Specimen, Endpoint and ImagingStudy resources, searchset Bundles.

An ImagingStudy is one case: modality ``SM`` from the DICOM ``DCM`` code system, one series per
slide, each series with ``endpoint`` references to its viewer and IIIF Endpoints; the study's
endpoint is the case launch link. Every resource is built with the ``fhir.resources`` models, so
it validates as it is made. Resource IDs come from :mod:`slideserver.lis.fhir.ids`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from urllib.parse import quote

from fhir.resources.R4B.annotation import Annotation
from fhir.resources.R4B.bundle import (
    Bundle,
    BundleEntry,
    BundleEntrySearch,
    BundleLink,
)
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.endpoint import Endpoint
from fhir.resources.R4B.humanname import HumanName
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.imagingstudy import ImagingStudy, ImagingStudySeries
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.resource import Resource
from fhir.resources.R4B.specimen import Specimen, SpecimenContainer, SpecimenProcessing

from slideserver.catalog.cases import (
    CaseView,
    PatientIn,
)
from slideserver.lis.fhir.ids import (
    CONNECTION_TYPE,
    DCM,
    DICOM_UID,
    LOCAL_CONNECTION_TYPE,
    PAYLOAD_TYPE,
    V2_0203,
    accession_identifier,
    dicom_uid,
    endpoint_id,
    fhir_id,
    issuer_fields,
    slide_specimen_id,
    subject_reference,
)

MEDIA_TYPE = "application/fhir+json"
_SEX_TO_GENDER = {"M": "male", "F": "female", "O": "other", "U": "unknown"}


def patient_resource(patient: PatientIn) -> Patient:
    """Return the FHIR Patient for a catalog patient (PHI); the identifier as it was sent."""
    kind = patient.identifier_type
    identifier = Identifier(
        use="usual",
        type=CodeableConcept(coding=[Coding(system=V2_0203, code=kind)]) if kind else None,
        value=patient.identifier,
        **issuer_fields(patient.issuer),
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
    subject = subject_reference(case)
    accession = accession_identifier(case)
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
                        id=slide_specimen_id(slide),
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


def study_uid(case: CaseView) -> str:
    """The study's DICOM UID: the files' own StudyInstanceUID when every slide of the case is a
    DICOM slide of one study; else a ``2.25.`` UID derived from the accession."""
    uids = {slide.study_uid for slide in case.slides}
    if len(uids) == 1 and None not in uids:
        return str(next(iter(uids)))
    return dicom_uid("study", case.accession)


def imaging_study(case: CaseView) -> ImagingStudy:
    """Return the case as one ImagingStudy: modality SM, one series per slide.

    A DICOM slide's series carries its own SeriesInstanceUID; other files get a ``2.25.`` UID
    derived from the slide ID (stable, but no DICOM object has it).
    """
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
                uid=slide.series_uid or dicom_uid("series", slide.id),
                number=n,
                modality=sm,
                description=", ".join(w for w in words if w) or None,
                endpoint=[
                    Reference(reference=f"Endpoint/{endpoint_id('viewer', slide.id)}"),
                    Reference(reference=f"Endpoint/{endpoint_id('iiif', slide.id)}"),
                ],
                specimen=[Reference(reference=f"Specimen/{slide_specimen_id(slide)}")]
                if where
                else None,
            )
        )
    identifiers = [
        accession_identifier(case),
        Identifier(system=DICOM_UID, value=f"urn:oid:{study_uid(case)}"),
    ]
    return ImagingStudy(
        id=fhir_id(case.accession),
        identifier=identifiers,
        status="available" if any(s.status == "ok" for s in case.slides) else "registered",
        modality=[sm],
        subject=subject_reference(case),
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


__all__ = [
    "MEDIA_TYPE",
    "case_endpoint",
    "endpoints",
    "imaging_study",
    "imaging_study_searchset",
    "patient_resource",
    "searchset",
    "slide_endpoints",
    "specimen_resources",
    "specimens_with_container",
    "study_uid",
    "to_json",
]
