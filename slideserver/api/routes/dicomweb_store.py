"""STOW-RS: ``POST /dicomweb/studies`` and ``POST /dicomweb/studies/{study}`` (PS3.18 10.5).

The work is :mod:`slideserver.dicom.stow` (parts, outcomes, the response data set) and the
:class:`~slideserver.dicom.intake.DicomIntake` (check, store, show, index); this module only
translates HTTP. The body is read with a size cap (``dicom_stow_max_bytes``: 413 beyond), split
and stored in a worker thread. A body that is not ``multipart/related`` of ``application/dicom``
answers 415, a malformed one 400 (nothing stored); otherwise 200, 202 or 409 with a
``application/dicom+json`` data set naming each instance's fate. The request's audit row names
the patient and case of the first instance stored. Without ``dicom_store_dir``: 404 (this
server stores nothing; a configuration, not an outage).
"""

from __future__ import annotations

from anyio.to_thread import run_sync
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from slideserver.api.bodies import BodyTooLarge, read_body
from slideserver.api.errors import error_response
from slideserver.api.openapi import Body, Reply, operation, ref
from slideserver.api.state import state_of
from slideserver.dicom.ingest import Stored
from slideserver.dicom.instance import is_uid
from slideserver.dicom.intake import DicomIntake
from slideserver.dicom.stow import (
    RESPONSE_MEDIA_TYPE,
    StowBodyRefused,
    StowMediaTypeRefused,
    check_media_type,
    response_dataset,
    response_status,
    split_parts,
    store_parts,
)
from slideserver.security.audit import note_subjects

STUDIES = "/dicomweb/studies"
STUDY = "/dicomweb/studies/{study}"
NO_STORE = {"Cache-Control": "no-store"}


STOW_BODY = {
    "type": "string",
    "format": "binary",
    "description": 'multipart/related; type="application/dicom": one DICOM Part 10 instance '
    "per part",
}
STOW_RESPONSE = Reply(
    "The PS3.18 Store Instances Response data set (ReferencedSOPSequence, "
    "FailedSOPSequence, RetrieveURL)",
    {RESPONSE_MEDIA_TYPE: ref("DicomJsonDataset")},
    NO_STORE,
)


def intake_of(request: Request) -> DicomIntake | None:
    """The DICOM intake the lifespan opened, or ``None`` when storing is off."""
    intake: DicomIntake | None = getattr(request.app.state, "dicom_intake", None)
    return intake


@operation(
    "Store DICOM instances (STOW-RS)",
    tag="dicomweb",
    body=Body({"multipart/related": STOW_BODY}, "The instances"),
    replies={
        200: STOW_RESPONSE,
        202: Reply(
            "Some instances stored, some refused (see FailedSOPSequence)",
            STOW_RESPONSE.content,
            NO_STORE,
        ),
        409: Reply("No instance stored (see FailedSOPSequence)", STOW_RESPONSE.content, NO_STORE),
    },
    errors=(400, 404, 413, 415),
)
async def store_instances(request: Request) -> Response:
    """Store the instances of a STOW-RS request; answer the PS3.18 response data set."""
    intake = intake_of(request)
    if intake is None:
        return error_response(404, "dicom_store_off", "this server does not store DICOM instances")
    study = request.path_params.get("study")
    if study is not None and not is_uid(study):
        return error_response(400, "bad_request", "the study in the path is not a valid UID")
    content_type = request.headers.get("content-type", "")
    try:
        check_media_type(content_type)
    except StowMediaTypeRefused as exc:
        return error_response(415, exc.code, exc.detail)
    except StowBodyRefused as exc:
        return error_response(400, exc.code, exc.detail)
    limit = state_of(request).settings.dicom_stow_max_bytes
    try:
        body = await read_body(request, limit)
    except BodyTooLarge:
        return error_response(413, "too_large", f"the request is larger than {limit} bytes")
    try:
        parts = await run_sync(split_parts, content_type, body)
    except StowMediaTypeRefused as exc:
        return error_response(415, exc.code, exc.detail)
    except StowBodyRefused as exc:
        return error_response(400, exc.code, exc.detail)
    del body
    outcomes = await run_sync(store_parts, parts, intake.accept, study)
    first = next((o for o in outcomes if o.stored is not None), None)
    if first is not None:
        note_subjects(request.scope, first.accession, first.patient_id)
        await run_sync(intake.settle)  # whole slides are shown and indexed before the answer
    base = _base_url(request)

    def retrieve_url(stored: Stored) -> str:
        i = stored.instance
        return (
            f"{base}/dicomweb/studies/{i.study_uid}/series/{i.series_uid}"
            f"/instances/{i.sop_instance_uid}"
        )

    study_url = f"{base}/dicomweb/studies/{study}" if study is not None else None
    return JSONResponse(
        response_dataset(outcomes, retrieve_url, study_url),
        status_code=response_status(outcomes),
        media_type=RESPONSE_MEDIA_TYPE,
        headers=NO_STORE,
    )


def _base_url(request: Request) -> str:
    public = state_of(request).settings.public_url
    return public.rstrip("/") if public else str(request.base_url).rstrip("/")


def routes() -> list[Route]:
    """The STOW-RS routes (the read side of ``/dicomweb`` is ``routes/dicomweb.py``)."""
    return [
        Route(STUDIES, store_instances, methods=["POST"]),
        Route(STUDY, store_instances, methods=["POST"]),
    ]


__all__ = ["routes", "store_instances"]
