"""STOW-RS (PS3.18 10.5): the request's parts, each instance's fate, the response data set.

The body is ``multipart/related; type="application/dicom"``, one Part 10 file per part, split
on its boundary (:func:`split_parts`; headers parsed by :mod:`email`). Each
instance is stored or refused on its own (nothing half-stored: an instance is written whole or
not at all, see :mod:`slideserver.dicom.ingest`), and the answer lists them as PS3.18 says:

- ``ReferencedSOPSequence`` (0008,1199): stored instances, with their Retrieve URL;
- ``FailedSOPSequence`` (0008,1198): refused ones, each with its ``FailureReason`` (0008,1197);
- HTTP 200 when all were stored, 202 when some were, 409 when none was.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage

import pydicom
from pydicom.dataset import Dataset

from slideserver.dicom.ingest import Stored
from slideserver.dicom.instance import CANNOT_UNDERSTAND, InstanceRefused, is_uid
from slideserver.errors import BadRequest

DICOM_MEDIA_TYPE = "application/dicom"
RESPONSE_MEDIA_TYPE = "application/dicom+json"
MAX_PARTS = 10_000
"""Most instances one request may carry."""


class StowMediaTypeRefused(BadRequest):
    """The request is not ``multipart/related; type="application/dicom"`` (415)."""

    code = "unsupported_media_type"


class StowBodyRefused(BadRequest):
    """The multipart body cannot be split into parts (400)."""

    code = "bad_request"


@dataclass(frozen=True)
class Outcome:
    """What became of one part."""

    sop_class_uid: str | None
    sop_instance_uid: str | None
    stored: Stored | None = None
    failure: int | None = None
    """The FailureReason of a refused part."""
    patient_id: str | None = None
    accession: str | None = None


def check_media_type(content_type: str) -> str:
    """Refuse anything but ``multipart/related`` of ``application/dicom`` parts; return the
    boundary."""
    message = _headers_only(content_type)
    kind = message.get_content_type()
    part_type = message.get_param("type") or DICOM_MEDIA_TYPE  # PS3.18 asks for it; lenient
    if isinstance(part_type, tuple):  # an RFC 2231 value: (charset, language, value)
        part_type = part_type[2]
    if kind != "multipart/related" or str(part_type).strip().lower() != DICOM_MEDIA_TYPE:
        raise StowMediaTypeRefused('the body must be multipart/related; type="application/dicom"')
    boundary = message.get_boundary()
    if not boundary:
        raise StowBodyRefused("the multipart Content-Type names no boundary")
    return str(boundary)


def split_parts(content_type: str, body: bytes) -> list[bytes]:
    """Return the bodies of the ``application/dicom`` parts, in order (blocking: a thread).

    The parts are found with ``bytes.find`` on the boundary delimiter (RFC 2046 5.1.1); each
    part's headers are parsed by :mod:`email`. Python's MIME parser reads bodies line by line
    in Python, some 7 MB/s: a slide's instances (hundreds of megabytes) took a minute to split.
    A body without its close delimiter (cut in transit) is refused whole.
    """
    delimiter = b"--" + check_media_type(content_type).encode("latin-1", "replace")
    boundary_line = b"\r\n" + delimiter
    if body.startswith(delimiter):
        position = len(delimiter)
    else:  # a preamble (often just CRLF) before the first delimiter
        found = body.find(boundary_line)
        if found < 0:
            raise StowBodyRefused("the multipart body holds no boundary delimiter")
        position = found + len(boundary_line)
    headers = email.parser.BytesHeaderParser(policy=email.policy.HTTP)
    parts: list[bytes] = []
    while not body.startswith(b"--", position):  # the close delimiter ends the parts
        line_end = body.find(b"\r\n", position)
        if line_end < 0 or body[position:line_end].strip(b" \t"):
            raise StowBodyRefused("the multipart body is malformed after a boundary")
        start = line_end + 2
        following = body.find(boundary_line, start)
        if following < 0:
            raise StowBodyRefused("the multipart body ends before its close delimiter")
        parts.append(_part_content(headers, body[start:following]))
        if len(parts) > MAX_PARTS:
            raise StowBodyRefused(f"more than {MAX_PARTS} parts")
        position = following + len(boundary_line)
    if not parts:
        raise StowBodyRefused("the multipart body holds no part")
    return parts


def _part_content(headers: email.parser.BytesHeaderParser[EmailMessage], part: bytes) -> bytes:
    """The content of one part after its headers, checked to be a binary DICOM file."""
    if part.startswith(b"\r\n"):
        raise StowMediaTypeRefused("every part must be application/dicom")  # no headers at all
    split = part.find(b"\r\n\r\n")
    if split < 0:
        raise StowBodyRefused("a part's headers do not end")
    message = headers.parsebytes(part[: split + 4])
    if message.defects or message.get_content_type() != DICOM_MEDIA_TYPE:
        raise StowMediaTypeRefused("every part must be application/dicom")
    encoding = str(message.get("Content-Transfer-Encoding") or "binary").strip().lower()
    if encoding not in ("binary", "8bit", "7bit"):
        raise StowMediaTypeRefused("parts must be sent in binary")
    return part[split + 4 :]


def store_parts(
    parts: Sequence[bytes], accept: Callable[[bytes, str | None], Stored], study_uid: str | None
) -> list[Outcome]:
    """Store each part with ``accept``; return each one's outcome (blocking: a thread)."""
    outcomes: list[Outcome] = []
    for data in parts:
        try:
            stored = accept(data, study_uid)
        except InstanceRefused as exc:
            sop_class, sop_instance = identify(data)
            outcomes.append(Outcome(sop_class, sop_instance, failure=exc.reason))
            continue
        instance = stored.instance
        outcomes.append(
            Outcome(
                instance.sop_class_uid,
                instance.sop_instance_uid,
                stored=stored,
                patient_id=instance.patient_id,
                accession=instance.accession,
            )
        )
    return outcomes


def identify(data: bytes) -> tuple[str | None, str | None]:
    """SOP Class and Instance UIDs of a refused part, when it says them (never raises)."""
    try:
        ds = pydicom.dcmread(
            io.BytesIO(data),
            stop_before_pixels=True,
            force=True,
            specific_tags=["SOPClassUID", "SOPInstanceUID"],
        )
        values = (str(ds.get("SOPClassUID") or ""), str(ds.get("SOPInstanceUID") or ""))
    except Exception:
        return None, None
    sop_class, sop_instance = (v if is_uid(v) else None for v in values)
    return sop_class, sop_instance


def response_status(outcomes: Sequence[Outcome]) -> int:
    """200 all stored, 202 some, 409 none (PS3.18 Table 10.5.3-1)."""
    stored = sum(o.stored is not None for o in outcomes)
    if stored == len(outcomes):
        return 200
    return 202 if stored else 409


def response_dataset(
    outcomes: Sequence[Outcome], retrieve_url: Callable[[Stored], str], study_url: str | None
) -> dict[str, object]:
    """The Store Instances Response Module as DICOM JSON (PS3.18 10.5.3.2)."""
    ds = Dataset()
    if study_url is not None:
        ds.RetrieveURL = study_url
    referenced, failed = [], []
    for outcome in outcomes:
        item = Dataset()
        if outcome.sop_class_uid:
            item.ReferencedSOPClassUID = outcome.sop_class_uid
        if outcome.sop_instance_uid:
            item.ReferencedSOPInstanceUID = outcome.sop_instance_uid
        if outcome.stored is not None:
            item.RetrieveURL = retrieve_url(outcome.stored)
            referenced.append(item)
        else:
            item.FailureReason = (
                outcome.failure if outcome.failure is not None else CANNOT_UNDERSTAND
            )
            failed.append(item)
    if referenced:
        ds.ReferencedSOPSequence = referenced
    if failed:
        ds.FailedSOPSequence = failed
    return ds.to_json_dict()


def _headers_only(content_type: str) -> EmailMessage:
    parser = email.parser.BytesParser(policy=email.policy.HTTP)
    message = parser.parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
    )
    assert isinstance(message, EmailMessage)
    return message


__all__ = [
    "DICOM_MEDIA_TYPE",
    "RESPONSE_MEDIA_TYPE",
    "Outcome",
    "StowBodyRefused",
    "StowMediaTypeRefused",
    "check_media_type",
    "identify",
    "response_dataset",
    "response_status",
    "split_parts",
    "store_parts",
]
