"""Read what a scan says about its case: DICOM attributes, vendor barcodes, filename rules.

Evidence is pure data read from the file (no database); :mod:`slideserver.catalog.late_binding`
stores it with the scan and links the scan to its case once the LIS has sent it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from slideserver.catalog.rules import FilenameRules

BARCODE_PROPERTIES = (
    "dicom.ContainerIdentifier",
    "aperio.Barcode",
    "hamamatsu.Barcode",
    "leica.barcode",
    "ventana.Barcode",
    "philips.PIM_DP_UFS_BARCODE",
    "mirax.GENERAL.SLIDE_BARCODE",
)
"""Reader properties that carry the slide's label barcode, most specific first."""


@dataclass(frozen=True)
class Evidence:
    """What one scan says about its case. Patient fields are PHI."""

    sources: tuple[str, ...] = ()
    accession: str | None = None
    specimen: str | None = None
    block: str | None = None
    stain: str | None = None
    barcode: str | None = None
    patient_id: str | None = None
    patient_name: str | None = None
    patient_birth_date: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    disagreements: tuple[str, ...] = ()
    """Where two sources in the file disagree (no PHI), flagged for review."""

    def columns(self) -> dict[str, Any]:
        """Return the ``scans.ev_*`` column values."""
        return {
            "ev_source": "+".join(self.sources) or None,
            "ev_accession": self.accession,
            "ev_specimen": self.specimen,
            "ev_block": self.block,
            "ev_stain": self.stain,
            "ev_barcode": self.barcode,
            "ev_patient_id": self.patient_id,
            "ev_patient_name": self.patient_name,
            "ev_patient_birth_date": self.patient_birth_date,
            "ev_study_uid": self.study_uid,
            "ev_series_uid": self.series_uid,
        }


def gather_evidence(relpath: str, properties: Mapping[str, str], rules: FilenameRules) -> Evidence:
    """Combine DICOM attributes, vendor barcodes and filename rules into one piece of evidence."""
    prop = {k: v.strip() for k, v in properties.items() if isinstance(v, str) and v.strip()}
    barcode = next((prop[k] for k in BARCODE_PROPERTIES if k in prop), None)
    from_path = rules.read(relpath)
    from_label = rules.read(barcode) if barcode else None
    sources: list[str] = []
    fields: dict[str, str | None] = {}
    disagreements: list[str] = []

    def offer(source: str, name: str, value: str | None) -> None:
        if not value:
            return
        if source not in sources:
            sources.append(source)
        current = fields.get(name)
        if current is None:
            fields[name] = value
        elif current.casefold() != value.casefold() and name in {"accession", "block"}:
            disagreements.append(f"{name}: {source} says {value!r}, not {current!r}")

    offer("dicom", "accession", prop.get("dicom.AccessionNumber", "").upper() or None)
    specimen_ids = prop.get("dicom.SpecimenIdentifier", "")
    if from_label is None and specimen_ids:
        from_label = rules.read(specimen_ids.split(";")[0])
    offer("dicom", "stain", prop.get("dicom.Stain"))
    if barcode:
        offer("barcode", "barcode", barcode)
    for source, facts in (("barcode", from_label), ("filename", from_path)):
        if facts is None:
            continue
        offer(source, "accession", facts.accession)
        offer(source, "specimen", facts.specimen)
        offer(source, "block", facts.block)
        offer(source, "stain", facts.stain)
        offer(source, "barcode", facts.barcode)
    birth = prop.get("dicom.PatientBirthDate")
    if birth and len(birth) == 8 and birth.isdigit():
        birth = f"{birth[:4]}-{birth[4:6]}-{birth[6:]}"
    if prop.get("dicom.PatientID") and "dicom" not in sources:
        sources.insert(0, "dicom")
    return Evidence(
        sources=tuple(sources),
        accession=fields.get("accession"),
        specimen=fields.get("specimen"),
        block=fields.get("block"),
        stain=fields.get("stain"),
        barcode=fields.get("barcode"),
        patient_id=prop.get("dicom.PatientID"),
        patient_name=prop.get("dicom.PatientName"),
        patient_birth_date=birth,
        study_uid=prop.get("dicom.StudyInstanceUID"),
        series_uid=prop.get("dicom.SeriesInstanceUID"),
        disagreements=tuple(disagreements),
    )
