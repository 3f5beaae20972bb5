"""Stable DICOM UIDs for slides that are not DICOM files: derived from the slide's identity.

Every UID made here is a ``2.25`` UID (PS3.5 B.2: the decimal form of a UUID): the name-based
(version 5) UUID of ``kind:identity`` in the namespace of :data:`UID_NAMESPACE`, the one the
FHIR ImagingStudy resources use (:func:`slideserver.lis.fhir.ids.dicom_uid`), so a study or
series named in FHIR is the one DICOMweb serves. The same slide gets the same UIDs on every
server, restart and re-index, and no registered root is needed. (pydicom's ``generate_uid``
ignores its entropy sources under ``2.25`` and draws a random UUID, so it is not used.)

Identities: a study is its case's accession number (a slide without a case is a study of its
own), a series its slide ID (which changes when the file's content does), an instance its slide
ID and image (``level-N``, ``label``, ``overview``). Researchers' views use kinds of their own
(``research-...``) derived from the slide ID only: their UIDs match none of the clinical ones and
cannot be brute-forced back to an accession. DICOM slides keep the UIDs their files carry (see
:mod:`slideserver.dicom.virtual`). The derivation itself lives in
:mod:`slideserver.catalog.dicom_uids`, which also keeps the study and series UIDs in indexed
catalog columns for QIDO searches.
"""

from __future__ import annotations

from pydicom.uid import UID

from slideserver.catalog import dicom_uids
from slideserver.catalog.dicom_uids import UID_NAMESPACE, UID_ROOT

__all__ = [
    "UID_NAMESPACE",
    "UID_ROOT",
    "derived_uid",
    "frame_of_reference_uid",
    "instance_uid",
    "series_uid",
    "study_uid",
]


def derived_uid(kind: str, *identity: str, research: bool = False) -> UID:
    """Return the UID of ``kind`` (``study``, ``series``, ``instance``...) for ``identity``."""
    return UID(dicom_uids.derived_uid(kind, *identity, research=research))


def study_uid(slide_id: str, accession: str | None, *, research: bool = False) -> UID:
    """The study of a slide: its case when it has one (clinical views), else the slide itself."""
    return UID(dicom_uids.study_uid(slide_id, accession, research=research))


def series_uid(slide_id: str, *, research: bool = False) -> UID:
    """One series per slide."""
    return UID(dicom_uids.series_uid(slide_id, research=research))


def instance_uid(slide_id: str, image: str, *, research: bool = False) -> UID:
    """One instance per pyramid level (``level-N``), label and overview."""
    return derived_uid("instance", slide_id, image, research=research)


def frame_of_reference_uid(slide_id: str, *, research: bool = False) -> UID:
    """One frame of reference per glass slide."""
    return derived_uid("frame-of-reference", slide_id, research=research)
