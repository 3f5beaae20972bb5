"""DICOMweb (PS3.18) read routes under ``/dicomweb``: QIDO-RS searches and WADO-RS retrieval.

HTTP only: the URL becomes a call to :class:`slideserver.services.dicomweb.DicomWebService`,
its result ``application/dicom+json``, a ``multipart/related`` body of frames or instances, a
Part 10 stream, or an image. Errors keep the house JSON format (``{"error", "detail"}``).
Researchers see de-identified series (the service builds them so); the audit row of each
request names the case and patient it concerns, and frame reads are summarized like tiles.
"""

from __future__ import annotations

import itertools
import os
import re
import uuid
from collections.abc import AsyncIterator, Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from slideserver.api.openapi import NOT_MODIFIED, Param, Reply, image_reply, operation, ref
from slideserver.api.params import parse_int
from slideserver.api.responses import image_response
from slideserver.api.state import state_of
from slideserver.dicom.qido import Level
from slideserver.dicom.virtual import VirtualSeries
from slideserver.errors import BadRequest, NotAcceptable
from slideserver.security import principal_of
from slideserver.security.audit import note_subjects
from slideserver.security.principals import Principal
from slideserver.services.dicomweb import Audience, DicomWebService

DICOM_JSON = "application/dicom+json"
PREFIX = "/dicomweb"
STUDY = PREFIX + "/studies/{study}"
SERIES = STUDY + "/series/{series}"
INSTANCE = SERIES + "/instances/{instance}"
FRAMES = INSTANCE + "/frames/{frames}"
UID_MAX = 64
UID = re.compile(r"[0-9.]{1,64}")
"""What a UID in a path may be: digits and dots, at most 64 (checked on every frame request)."""


# -- the description (docs/architecture.md, "The API description") --

TAG = "dicomweb"
NO_STORE_HEADER = {"Cache-Control": "no-store"}
READ_ERRORS = (400, 404, 406, 410, 422, 503, 504)
"""Malformed UIDs or query, unknown objects, an Accept that cannot be met, a slide that changed
or cannot be read, storage that is down or slow."""
QIDO_PARAMS = (
    Param(
        "includefield",
        "More attributes in each result: keywords or tags, comma-separated, or all",
        {"type": "string"},
    ),
    Param("limit", "Most results", {"type": "integer", "minimum": 0, "maximum": 1000}),
    Param("offset", "Results to skip", {"type": "integer", "minimum": 0}),
    Param("fuzzymatching", "Person names match loosely", {"enum": ["true", "false"]}),
    Param("StudyInstanceUID", "Match: a UID or a comma-separated list", {"type": "string"}),
    Param("SeriesInstanceUID", "Match: a UID or a comma-separated list", {"type": "string"}),
    Param("AccessionNumber", "Match (wildcards * and ?)", {"type": "string"}),
    Param("PatientID", "Match (wildcards * and ?)", {"type": "string"}),
    Param("StudyDate", "Match: a date or a range (20240101-20240131)", {"type": "string"}),
    Param("Modality", "Match: SM for slides", {"type": "string"}),
)
"""The QIDO-RS controls and the usual keys; any other attribute, by keyword or tag, matches
too (PS3.18 8.3.4)."""
DICOM_JSON_REPLY = Reply(
    "The matches or the metadata, in the DICOM JSON Model (researchers get de-identified "
    "data sets under UIDs of their own)",
    {DICOM_JSON: ref("DicomJsonDatasets")},
    NO_STORE_HEADER,
)
JSON_REPLIES = {200: DICOM_JSON_REPLY}
BINARY = {"type": "string", "format": "binary"}
FRAMES_PARAM = Param(
    "frames",
    "Frame numbers, 1-based, comma-separated (at most 1000)",
    {"type": "string", "pattern": "^[0-9]+(,[0-9]+)*$"},
    where="path",
)
VIEWPORT = Param(
    "viewport",
    "width,height of the image in pixels, each 1 to 1048576 (PS3.18 8.3.5.1.3); default: "
    "the whole image",
    {"type": "string", "pattern": "^[1-9][0-9]{0,5},[1-9][0-9]{0,5}$"},
)
THUMBNAIL_VIEWPORT = Param(
    "viewport",
    "The longest side in pixels, 1 to 2048, as width or width,height (default 256)",
    {"type": "string", "pattern": "^(204[0-8]|20[0-3][0-9]|1[0-9]{3}|[1-9][0-9]{0,2})(,[0-9]*)?$"},
)


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
    if UID.fullmatch(value) is None:
        raise BadRequest(f"{name} must be a DICOM UID (digits and dots, at most 64)")
    return value


def _note(request: Request, series: Sequence[VirtualSeries]) -> None:
    """Name the case and patient the answer concerns in its audit row (one of them, if several)."""
    for item in series:
        if item.accession or item.patient_id:
            note_subjects(request.scope, item.accession, item.patient_id)
            return


def _count_pixels(request: Request, principal: Principal | None, series: VirtualSeries) -> None:
    """Summarize a pixel read in the audit trail like a tile read (no I/O)."""
    security = request.app.state.security
    audit = security.audit
    if audit is None:
        return
    client = request.scope.get("client")
    host = str(client[0])[:100] if client else None
    subjects = security.known_subjects(series.slide_id) or (series.accession, series.patient_id)
    audit.tile_read(principal, series.slide_id, host, subjects)


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


@operation(
    "Search studies (QIDO-RS)",
    tag=TAG,
    params=QIDO_PARAMS,
    replies=JSON_REPLIES,
    errors=READ_ERRORS,
)
async def search_studies(request: Request) -> Response:
    return await _search(request, Level.STUDY)


@operation(
    "Search series (QIDO-RS)",
    tag=TAG,
    params=QIDO_PARAMS,
    replies=JSON_REPLIES,
    errors=READ_ERRORS,
)
async def search_series(request: Request) -> Response:
    return await _search(request, Level.SERIES)


@operation(
    "Search instances (QIDO-RS)",
    tag=TAG,
    params=QIDO_PARAMS,
    replies=JSON_REPLIES,
    errors=READ_ERRORS,
)
async def search_instances(request: Request) -> Response:
    return await _search(request, Level.INSTANCE)


@operation(
    "Search one study's series (QIDO-RS)",
    tag=TAG,
    params=QIDO_PARAMS,
    replies=JSON_REPLIES,
    errors=READ_ERRORS,
)
async def search_study_series(request: Request) -> Response:
    return await _search(request, Level.SERIES, _uid(request, "study"))


@operation(
    "Search one study's instances (QIDO-RS)",
    tag=TAG,
    params=QIDO_PARAMS,
    replies=JSON_REPLIES,
    errors=READ_ERRORS,
)
async def search_study_instances(request: Request) -> Response:
    return await _search(request, Level.INSTANCE, _uid(request, "study"))


@operation(
    "Search one series' instances (QIDO-RS)",
    tag=TAG,
    params=QIDO_PARAMS,
    replies=JSON_REPLIES,
    errors=READ_ERRORS,
)
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


@operation("A study's metadata (WADO-RS)", tag=TAG, replies=JSON_REPLIES, errors=READ_ERRORS)
async def study_metadata(request: Request) -> Response:
    return await _metadata(request)


@operation("A series' metadata (WADO-RS)", tag=TAG, replies=JSON_REPLIES, errors=READ_ERRORS)
async def series_metadata(request: Request) -> Response:
    return await _metadata(request, _uid(request, "series"))


@operation("An instance's metadata (WADO-RS)", tag=TAG, replies=JSON_REPLIES, errors=READ_ERRORS)
async def instance_metadata(request: Request) -> Response:
    return await _metadata(request, _uid(request, "series"), _uid(request, "instance"))


# -- WADO-RS bulk data ---------------------------------------------------------------------------


_BOUNDARY_PREFIX = os.urandom(8).hex()
_BOUNDARY_COUNTER = itertools.count()


def _boundary() -> str:
    """A multipart boundary no body holds: a random prefix, secret to this process, and a
    counter (``uuid4`` reads the kernel's random source on every call, as much as a frame)."""
    return f"{_BOUNDARY_PREFIX}{next(_BOUNDARY_COUNTER) & 0xFFFFFFFFFFFF:012x}"


def multipart(parts: Sequence[bytes], part_type: str) -> Response:
    """Return ``parts`` as one ``multipart/related`` body (RFC 2387, PS3.18 8.7.3.4)."""
    boundary = _boundary()
    head = f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode()
    body = head + (b"\r\n" + head).join(parts) + f"\r\n--{boundary}--\r\n".encode()
    media = part_type.split(";")[0]
    content_type = f'multipart/related; type="{media}"; boundary={boundary}'
    return Response(body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})


@operation(
    "Frames of an instance (WADO-RS)",
    tag=TAG,
    params=(FRAMES_PARAM,),
    replies={
        200: Reply(
            'The frames, one part each: multipart/related; type="image/jpeg" as stored, or '
            'type="application/octet-stream" uncompressed, as Accept asks; with '
            "transfer-syntax=* the stored bytes, each part labelled with its transfer syntax",
            {"multipart/related": BINARY},
            NO_STORE_HEADER,
        )
    },
    errors=READ_ERRORS,
)
async def frames(request: Request) -> Response:
    principal = principal_of(request)
    answer = await dicomweb_of(request).frames(
        Audience.of(principal),
        _uid(request, "study"),
        _uid(request, "series"),
        _uid(request, "instance"),
        str(request.path_params["frames"]),
        request.headers.get("accept", ""),
    )
    _count_pixels(request, principal, answer.series)
    return multipart(answer.data, answer.offer.content_type)


@operation(
    "An instance as a DICOM Part 10 file (WADO-RS)",
    tag=TAG,
    replies={
        200: Reply(
            "The instance: application/dicom, or one part of multipart/related; "
            'type="application/dicom" when Accept asks for it',
            {"application/dicom": BINARY, "multipart/related": BINARY},
            NO_STORE_HEADER,
        )
    },
    errors=(413, *READ_ERRORS),
)
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


@operation(
    "A series' instances as DICOM Part 10 files (WADO-RS)",
    tag=TAG,
    replies={
        200: Reply(
            'The instances, one part each: multipart/related; type="application/dicom"',
            {"multipart/related": BINARY},
            NO_STORE_HEADER,
        )
    },
    errors=(413, *READ_ERRORS),
)
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


@operation(
    "Every instance of a study, as Part 10 files (WADO-RS)",
    tag="dicomweb",
    params=(Param("study", "StudyInstanceUID", where="path"),),
    replies={
        200: Reply(
            "Part 10 files of every series of the study, in one multipart/related body",
            {'multipart/related; type="application/dicom"': {"type": "string"}},
        )
    },
    errors=(400, 404, 406, 413, 503, 504),
)
async def study(request: Request) -> Response:
    """Retrieve a study: every instance of every series the caller may see, each as stored
    unless uncompressed is asked, streamed (researchers get their de-identified series)."""
    accept = request.headers.get("accept", "")
    if accept.strip() and "multipart/related" not in accept and "*/*" not in accept:
        raise NotAcceptable('a study is sent as multipart/related; type="application/dicom"')
    instances, found = await dicomweb_of(request).study_part10(
        _audience(request), _uid(request, "study"), accept
    )
    _note(request, found)
    return part10_multipart(instances)


def part10_multipart(instances: Sequence[tuple[str, AsyncIterator[bytes]]]) -> Response:
    """Stream Part 10 files as one ``multipart/related; type="application/dicom"`` body."""
    boundary = uuid.uuid4().hex

    async def body() -> AsyncIterator[bytes]:
        for syntax, chunks in instances:
            part_type = f"application/dicom; transfer-syntax={syntax}"
            yield f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode()
            async for chunk in chunks:
                yield chunk
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    headers = {"Content-Type": content_type, "Cache-Control": "no-store"}
    return StreamingResponse(body(), headers=headers)


def _image_format(request: Request) -> str:
    accept = request.headers.get("accept", "").lower()
    if not accept or "image/jpeg" in accept or "*/*" in accept or "image/*" in accept:
        return "jpg"
    if "image/png" in accept:
        return "png"
    raise NotAcceptable("rendered images are sent as image/jpeg or image/png")


@operation(
    "An instance rendered as an image (WADO-RS rendered)",
    tag=TAG,
    params=(VIEWPORT,),
    replies={
        200: image_reply("The image (as Accept asks; JPEG by default)", "image/jpeg", "image/png"),
        304: NOT_MODIFIED,
    },
    errors=(413, *READ_ERRORS),
)
async def rendered(request: Request) -> Response:
    viewport = request.query_params.get("viewport", "")
    if viewport:
        width, _, height = viewport.partition(",")
        if not width.strip() or not height.strip():  # int("") below would be a 500
            raise BadRequest("viewport must be width,height")
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


@operation(
    "A thumbnail of an instance (WADO-RS thumbnail)",
    tag=TAG,
    params=(THUMBNAIL_VIEWPORT,),
    replies={
        200: image_reply(
            "The thumbnail (as Accept asks; JPEG by default)", "image/jpeg", "image/png"
        ),
        304: NOT_MODIFIED,
    },
    errors=READ_ERRORS,
)
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
        Route(STUDY, study, methods=get),  # the same path's POST is STOW-RS (dicomweb_store.py)
        Route(INSTANCE, instance, methods=get),
        Route(FRAMES, frames, methods=get),  # also answered by api/frames_lane.py
        Route(INSTANCE + "/rendered", rendered, methods=get),
        Route(INSTANCE + "/thumbnail", thumbnail, methods=get),
    ]
