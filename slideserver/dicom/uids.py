"""Stable DICOM UIDs for slides that are not DICOM files: derived from the slide's identity.

Every UID made here is a ``2.25`` UID (PS3.5 B.2: the decimal form of a UUID), the name-based
(version 5) UUID of a fixed namespace and the slide's identity (pydicom's ``generate_uid`` ignores
its entropy sources under the ``2.25`` root and draws a random UUID, so it cannot be used), so
the same slide gets the same UIDs on every server, restart and re-index, and no registered root
is needed. The identity is the slide ID (which changes when the file's content does) or, for a
study, the case's accession number. Researchers' views use their own namespace, so their UIDs
cannot be matched to the clinical ones (nor brute-forced back to an accession: they are derived
from the slide ID only). DICOM slides keep the UIDs their files carry (see
:mod:`slideserver.dicom.virtual`).
"""

from __future__ import annotations

import uuid

from pydicom.uid import UID

UID_ROOT = "2.25"
"""Every derived UID starts with this root (UUID-derived UIDs, PS3.5 B.2)."""
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://slideserver/dicom/uids")
"""The UUID namespace of every identity: two deployments derive the same UIDs for one slide."""
RESEARCH = "research"
"""The namespace of de-identified views: unrelated to the clinical UIDs."""


def derived_uid(kind: str, *identity: str, research: bool = False) -> UID:
    """Return the UID of ``kind`` (``study``, ``series``, ``instance``...) for ``identity``."""
    name = "\x1f".join([RESEARCH if research else "clinical", kind, *identity])
    return UID(f"{UID_ROOT}.{uuid.uuid5(NAMESPACE, name).int}")


def study_uid(slide_id: str, accession: str | None, *, research: bool = False) -> UID:
    """The study of a slide: its case when it has one (clinical views), else the slide itself."""
    if accession and not research:
        return derived_uid("study", "accession", accession)
    return derived_uid("study", "slide", slide_id, research=research)


def series_uid(slide_id: str, *, research: bool = False) -> UID:
    """One series per slide."""
    return derived_uid("series", slide_id, research=research)


def instance_uid(slide_id: str, image: str, *, research: bool = False) -> UID:
    """One instance per pyramid level (``level-N``), label and overview."""
    return derived_uid("instance", slide_id, image, research=research)


def frame_of_reference_uid(slide_id: str, *, research: bool = False) -> UID:
    """One frame of reference per glass slide."""
    return derived_uid("frame-of-reference", slide_id, research=research)
