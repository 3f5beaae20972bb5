"""The derived DICOM UIDs of a slide, kept in indexed catalog columns so that searches find them.

DICOMweb gives each slide a study and a series; a slide that is not a DICOM file gets ``2.25.``
UIDs derived from its identity (:mod:`slideserver.dicom.uids` says which). Those are hashes: a
search by UID cannot invert them, so the catalog stores them when it indexes a scan, and QIDO
matches Study and Series Instance UIDs against the columns instead of deriving the UIDs of every
slide. The derivation lives here, below both the catalog and the DICOM package, so that the two
cannot drift apart (``tests/test_catalog_dicom_uids.py`` checks the columns against DICOMweb).

Columns (all indexed):

- ``scans.dicom_series_uid``: the clinical series (``series:SLIDE_ID``);
- ``scans.dicom_study_uid``: the clinical study while no case with an accession number is
  linked: ``study:EV_ACCESSION`` when the file names its case, else ``slide-study:SLIDE_ID``;
- ``cases.dicom_study_uid``: ``study:ACCESSION``, the study of every slide linked to the case;
- ``scans.research_study_uid`` and ``scans.research_series_uid``: the de-identified view's;
- a DICOM file's own UIDs are its ``ev_study_uid`` and ``ev_series_uid`` (indexed too).
"""

from __future__ import annotations

import uuid
from typing import Any

UID_NAMESPACE = uuid.UUID("6f1c1f2e-6d0b-4bd5-9a53-3f4e0cf1c0de")
"""Namespace of the UUID-derived (``2.25.``) DICOM UIDs we give studies and series."""
UID_ROOT = "2.25"
"""Every derived UID starts with this root (UUID-derived UIDs, PS3.5 B.2)."""


def derived_uid(kind: str, *identity: str, research: bool = False) -> str:
    """Return the UID of ``kind`` (``study``, ``series``, ``instance``...) for ``identity``."""
    name = f"{'research-' if research else ''}{kind}:{'/'.join(identity)}"
    return f"{UID_ROOT}.{uuid.uuid5(UID_NAMESPACE, name).int}"


def study_uid(slide_id: str, accession: str | None, *, research: bool = False) -> str:
    """The study of a slide: its case when it has one (clinical views), else the slide itself."""
    if accession and not research:
        return derived_uid("study", accession)
    return derived_uid("slide-study", slide_id, research=research)


def series_uid(slide_id: str, *, research: bool = False) -> str:
    """One series per slide."""
    return derived_uid("series", slide_id, research=research)


def scan_columns(slide_id: str, ev_accession: str | None) -> dict[str, Any]:
    """The derived-UID columns of a ``scans`` row: of its slide ID and the file's accession."""
    return {
        "dicom_study_uid": study_uid(slide_id, ev_accession),
        "dicom_series_uid": series_uid(slide_id),
        "research_study_uid": study_uid(slide_id, None, research=True),
        "research_series_uid": series_uid(slide_id, research=True),
    }


def case_study_uid(accession: str | None) -> str | None:
    """``cases.dicom_study_uid``: the study of a case's slides, ``None`` while it has no number."""
    return derived_uid("study", accession) if accession else None
