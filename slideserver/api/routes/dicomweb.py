"""DICOMweb (PS3.18) read routes under ``/dicomweb``: QIDO-RS searches and WADO-RS retrieval.

HTTP only: the URL becomes a call to :class:`slideserver.services.dicomweb.DicomWebService`,
its result ``application/dicom+json``, a ``multipart/related`` body of frames or instances, a
Part 10 stream, or an image. Errors keep the house JSON format (``{"error", "detail"}``).
Researchers see de-identified series (the service builds them so); the audit row of each
request names the case and patient it concerns, and frame reads are summarized like tiles.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from slideserver.api.params import parse_int
from slideserver.api.responses import image_response
from slideserver.api.state import state_of
from slideserver.dicom.qido import Level
from slideserver.dicom.virtual import VirtualSeries
from slideserver.errors import BadRequest, NotAcceptable
from slideserver.security import principal_of
from slideserver.security.audit import note_subjects
from slideserver.services.dicomweb import Audience, DicomWebService

DICOM_JSON = "application/dicom+json"
PREFIX = "/dicomweb"
STUDY = PREFIX + "/studies/{study}"
SERIES = STUDY + "/series/{series}"
INSTANCE = SERIES + "/instances/{instance}"
UID_MAX = 64


def dicomweb_of(request: Request) -> DicomWebService:
    """Return the DICOMweb service (built on the tile and IIIF services of the app state)."""
    state = state_of(request)
    service = getattr(request.app.state, "dicomweb", None)
    if service is None or service.tiles is not state.service:
        service = DicomWebService(state.service, state.iiif)
        request.app.state.dicomweb = service
    assert isinstance(service, DicomWebService)
    return service


def _audience(request: Request) -> Audience:
    return Audience.of(principal_of(request))


def _uid(request: Request, name: str) -> str:
    value = str(request.path_params[name])
    if not value or len(value) > UID_MAX or not all(c.isdigit() or c == "." for c in value):
        raise BadRequest(f"{name} must be a DICOM UID (digits and dots, at most 64)")
    return value


def _note(request: Request, series: Sequence[VirtualSeries]) -> None:
    """Name the case and patient the answer concerns in its audit row (one of them, if several)."""
    for item in series:
        if item.accession or item.patient_id:
            note_subjects(request.scope, item.accession, item.patient_id)
            return


def _count_pixels(request: Request, series: VirtualSeries) -> None:
    """Summarize a pixel read in the audit trail like a tile read (no I/O)."""
    security = request.app.state.security
    audit = security.audit
    if audit is None:
        return
    client = request.client.host[:100] if request.client else None
    subjects = security.known_subjects(series.slide_id) or (series.accession, series.patient_id)
    audit.tile_read(principal_of(request), series.slide_id, client, subjects)


def dicom_json(body: object) -> JSONResponse:
    return JSONResponse(body, media_type=DICOM_JSON, headers={"Cache-Control": "no-store"})


def _accepts_json(request: Request) -> None:
    accept = request.headers.get("accept", "").lower()
    if not accept:
        return
    wanted = ("application/dicom+json", "application/json", "*/*", "application/*")
    if not any(any(w in part for w in wanted) for part in accept.split(",")):
        raise NotAcceptable("this resource is sent as application/dicom+json")


# -- QIDO-RS -------------------------------------------------------------------------------------


async def _search(
    request: Request, level: Level, study: str | None = None, series: str | None = None
) -> Response:
    _accepts_json(request)
    params = request.query_params.multi_items()
    found = await dicomweb_of(request).search(level, params, _audience(request), study, series)
    names = dict(params)
    note_subjects(request.scope, names.get("AccessionNumber"), names.get("PatientID"))
    return dicom_json(found)


async def search_studies(request: Request) -> Response:
    return await _search(request, Level.STUDY)


async def search_series(request: Request) -> Response:
    return await _search(request, Level.SERIES)


async def search_instances(request: Request) -> Response:
    return await _search(request, Level.INSTANCE)


async def search_study_series(request: Request) -> Response:
    return await _search(request, Level.SERIES, _uid(request, "study"))


async def search_study_instances(request: Request) -> Response:
    return await _search(request, Level.INSTANCE, _uid(request, "study"))


async def search_series_instances(request: Request) -> Response:
    study, series = _uid(request, "study"), _uid(request, "series")
    return await _search(request, Level.INSTANCE, study, series)


# -- WADO-RS metadata ----------------------------------------------------------------------------


async def _metadata(
    request: Request, series: str | None = None, instance: str | None = None
) -> Response:
    _accepts_json(request)
    body, found = await dicomweb_of(request).metadata(
        _audience(request), _uid(request, "study"), series, instance
    )
    _note(request, found)
    return dicom_json(body)


async def study_metadata(request: Request) -> Response:
    return await _metadata(request)


async def series_metadata(request: Request) -> Response:
    return await _metadata(request, _uid(request, "series"))


async def instance_metadata(request: Request) -> Response:
    return await _metadata(request, _uid(request, "series"), _uid(request, "instance"))


# -- WADO-RS bulk data ---------------------------------------------------------------------------


def multipart(parts: Sequence[bytes], part_type: str) -> Response:
    """Return ``parts`` as one ``multipart/related`` body (RFC 2387, PS3.18 8.7.3.4)."""
    boundary = uuid.uuid4().hex
    head = f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode()
    body = b"".join(head + part + b"\r\n" for part in parts) + f"--{boundary}--\r\n".encode()
    media = part_type.split(";")[0]
    content_type = f'multipart/related; type="{media}"; boundary={boundary}'
    return Response(body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})


async def frames(request: Request) -> Response:
    answer = await dicomweb_of(request).frames(
        _audience(request),
        _uid(request, "study"),
        _uid(request, "series"),
        _uid(request, "instance"),
        str(request.path_params["frames"]),
        request.headers.get("accept", ""),
    )
    _count_pixels(request, answer.series)
    return multipart(answer.data, answer.offer.content_type)


async def instance(request: Request) -> Response:
    answer = await dicomweb_of(request).part10(
        _audience(request),
        _uid(request, "study"),
        _uid(request, "series"),
        _uid(request, "instance"),
        request.headers.get("accept", ""),
    )
    _note(request, [answer.series])
    part_type = f"application/dicom; transfer-syntax={answer.syntax}"
    headers = {"Cache-Control": "no-store"}
    if not answer.multipart:
        headers["Content-Type"] = part_type
        return StreamingResponse(answer.chunks, headers=headers)
    boundary = uuid.uuid4().hex
    headers["Content-Type"] = f'multipart/related; type="application/dicom"; boundary={boundary}'

    async def body(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        yield f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode()
        async for chunk in chunks:
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    return StreamingResponse(body(answer.chunks), headers=headers)


async def series(request: Request) -> Response:
    accept = request.headers.get("accept", "")
    if accept.strip() and "multipart/related" not in accept and "*/*" not in accept:
        raise NotAcceptable('a series is sent as multipart/related; type="application/dicom"')
    instances, found = await dicomweb_of(request).series_part10(
        _audience(request), _uid(request, "study"), _uid(request, "series"), accept
    )
    _note(request, [found])
    boundary = uuid.uuid4().hex
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'

    async def body() -> AsyncIterator[bytes]:
        for syntax, chunks in instances:
            yield (
                f"--{boundary}\r\nContent-Type: application/dicom; transfer-syntax={syntax}\r\n\r\n"
            ).encode()
            async for chunk in chunks:
                yield chunk
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    headers = {"Content-Type": content_type, "Cache-Control": "no-store"}
    return StreamingResponse(body(), headers=headers)


def _image_format(request: Request) -> str:
    accept = request.headers.get("accept", "").lower()
    if not accept or "image/jpeg" in accept or "*/*" in accept or "image/*" in accept:
        return "jpg"
    if "image/png" in accept:
        return "png"
    raise NotAcceptable("rendered images are sent as image/jpeg or image/png")


async def rendered(request: Request) -> Response:
    viewport = request.query_params.get("viewport", "")
    if viewport:
        width, _, height = viewport.partition(",")
        parse_int("viewport width", width, 1, 1, 1 << 20)
        parse_int("viewport height", height, 1, 1, 1 << 20)
        viewport = f"{int(width)},{int(height)}"
    result, series = await dicomweb_of(request).rendered(
        _audience(request),
        _uid(request, "study"),
        _uid(request, "series"),
        _uid(request, "instance"),
        viewport,
        _image_format(request),
    )
    _note(request, [series])
    return image_response(request, result)


async def thumbnail(request: Request) -> Response:
    _image_format(request)
    size = parse_int("viewport", request.query_params.get("viewport", "").split(",")[0] or None,
                     256, 1, 2048)  # fmt: skip
    result, series = await dicomweb_of(request).thumbnail(
        _audience(request),
        _uid(request, "study"),
        _uid(request, "series"),
        _uid(request, "instance"),
        size,
    )
    _note(request, [series])
    return image_response(request, result)


def routes() -> list[Route]:
    """Return the DICOMweb read routes (STOW-RS is :mod:`slideserver.api.routes.dicomweb_store`)."""
    get = ["GET", "HEAD"]
    return [
        Route(PREFIX + "/studies", search_studies, methods=get),
        Route(PREFIX + "/series", search_series, methods=get),
        Route(PREFIX + "/instances", search_instances, methods=get),
        Route(STUDY + "/series", search_study_series, methods=get),
        Route(STUDY + "/instances", search_study_instances, methods=get),
        Route(SERIES + "/instances", search_series_instances, methods=get),
        Route(STUDY + "/metadata", study_metadata, methods=get),
        Route(SERIES + "/metadata", series_metadata, methods=get),
        Route(INSTANCE + "/metadata", instance_metadata, methods=get),
        Route(SERIES, series, methods=get),
        Route(INSTANCE, instance, methods=get),
        Route(INSTANCE + "/frames/{frames}", frames, methods=get),
        Route(INSTANCE + "/rendered", rendered, methods=get),
        Route(INSTANCE + "/thumbnail", thumbnail, methods=get),
    ]
