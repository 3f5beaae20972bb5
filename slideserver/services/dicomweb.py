"""DICOMweb over every catalog slide: what the ``/dicomweb`` routes call.

Slides become virtual WSI series (:mod:`slideserver.dicom.virtual`), built once per file
fingerprint and audience (clinical or de-identified) from what the slide's reader reports, in the
tile service's worker threads. Searches (QIDO-RS) page through the catalog, matching
(:mod:`slideserver.dicom.qido`) the series the caller may see; retrievals (WADO-RS) find the
instance by its UIDs and read frames as the Deep Zoom tiles are read: stored JPEG tiles as
they are (on the event loop when their bytes are in memory), everything else rendered in the
worker threads. No HTTP types here.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import imagecodecs
import numpy as np
from anyio.to_thread import run_sync
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000, UID, ExplicitVRLittleEndian, JPEGBaseline8Bit

from slideserver.catalog.base import SlideQuery, SlideRecord
from slideserver.catalog.scanner import scan_date
from slideserver.codecs import jpeg
from slideserver.dicom import frames as framing
from slideserver.dicom import part10, qido
from slideserver.dicom.qido import Level, Query
from slideserver.dicom.stored import file_uids
from slideserver.dicom.virtual import (
    DEFAULT_FRAME,
    FileUids,
    LevelEncoding,
    SlideFacts,
    VirtualInstance,
    VirtualSeries,
    build_series,
)
from slideserver.errors import NotFound, SlideServerError, SlideUnreadable, TooLarge
from slideserver.handles import named_safely
from slideserver.imaging.encode import encode_image
from slideserver.readers.base import SlideReader, WouldBlock
from slideserver.security.principals import Principal, in_collections
from slideserver.services.iiif import IIIFService
from slideserver.services.tiles import ImageResult, SlideView, TileService

log = logging.getLogger(__name__)

PAGE = 1000
"""Catalog rows read per query while searching."""
PART10_BATCH = 32
"""Frames read per worker-thread call while streaming a Part 10 instance."""
MAX_CACHED = 4096


class StudyNotFound(NotFound):
    """No study, series or instance with that UID that the caller may see."""

    code = "dicom_not_found"


class Audience(NamedTuple):
    """Who a series is built for: clinical roles, or de-identified (researchers)."""

    deidentified: bool
    collections: tuple[str, ...]

    @classmethod
    def of(cls, principal: Principal | None) -> Audience:
        if principal is None:
            return cls(False, ())
        return cls(not principal.sees_phi, principal.collections)

    def may_see(self, record: SlideRecord) -> bool:
        return not self.collections or in_collections(
            self.collections, record.root.name, record.relpath
        )


@dataclass(frozen=True)
class Frames:
    """Frames to send: their bytes, in the order asked, and what they are."""

    offer: framing.Offer
    data: list[bytes]
    series: VirtualSeries


@dataclass(frozen=True)
class Instance10:
    """A Part 10 instance to stream."""

    syntax: str
    multipart: bool
    chunks: AsyncIterator[bytes]
    series: VirtualSeries


class DicomWebService:
    """QIDO-RS and WADO-RS over the catalog's slides."""

    def __init__(self, tiles: TileService, iiif: IIIFService) -> None:
        self.tiles = tiles
        self.iiif = iiif
        self._facts: dict[tuple[str, str], SlideFacts] = {}
        self._series: dict[tuple[str, str, bool], VirtualSeries] = {}
        self._where: dict[tuple[str, str, bool], str] = {}
        """(study UID, series UID, de-identified) -> slide ID, of every series built: frame
        requests find their slide without searching the catalog."""

    # -- series -------------------------------------------------------------------------------

    async def series_of(
        self, slide_id: str, audience: Audience, view: SlideView | None = None
    ) -> VirtualSeries:
        """Return the virtual series of one slide as ``audience`` sees it (``view``: the
        slide's view, when the caller has it already)."""
        if view is None:
            view = await self.tiles.view(slide_id)
        key = (slide_id, view.fingerprint, audience.deidentified)
        known = self._series.get(key)
        if known is not None:
            return known
        facts = self._facts.get((slide_id, view.fingerprint))
        if facts is None:
            facts = await self.tiles.with_reader(view, lambda r: self._gather(view, r))
            if len(self._facts) > MAX_CACHED:
                self._facts.clear()
            self._facts[(slide_id, view.fingerprint)] = facts
        series = build_series(facts, deidentified=audience.deidentified)
        if len(self._series) > MAX_CACHED:
            self._series.clear()
            self._where.clear()
        self._series[key] = series
        self._where[(series.study_uid, series.series_uid, audience.deidentified)] = slide_id
        return series

    @staticmethod
    def _gather(view: SlideView, reader: SlideReader) -> SlideFacts:
        """Read what a series needs that the catalog does not know (worker thread)."""
        info = view.info
        levels: list[LevelEncoding] = []
        for index, level in enumerate(info.levels):
            width = level.tile_width or min(DEFAULT_FRAME, level.width)
            height = level.tile_height or min(DEFAULT_FRAME, level.height)
            stored = None
            if level.tile_width:
                with contextlib.suppress(SlideServerError):
                    stored = reader.read_encoded_tile(index, 0, 0)
            if stored is not None and stored.media_type == "image/jpeg":
                try:
                    rgb = jpeg.adobe_transform(stored.data) == 0
                except ValueError:
                    rgb = False
                photometric = "RGB" if rgb else "YBR_FULL_422"
                levels.append(LevelEncoding(width, height, True, photometric))
            else:
                levels.append(_jpeg2000_level(reader, index, width, height))
        sizes: dict[str, tuple[int, int]] = {}
        for name in ("label", "macro"):
            if name in info.associated:
                with contextlib.suppress(SlideServerError):
                    image = reader.associated(name)
                    sizes[name] = (image.width, image.height)
        record = view.record
        own: FileUids | None = None
        if info.format == "dicom":
            own = file_uids(record.source.all_files, [(lv.width, lv.height) for lv in info.levels])
        case = record.extra.get("case") if record.extra else None
        return SlideFacts(
            slide_id=record.id,
            content_hash=record.content_hash,
            info=info,
            levels=tuple(levels),
            associated_sizes=sizes,
            case=case if isinstance(case, dict) else None,
            scanned=scan_date(dict(info.properties)),
            file_uids=own,
        )

    async def _records(
        self,
        audience: Audience,
        query: Query,
        study: str | None = None,
        series: str | None = None,
    ) -> list[SlideRecord]:
        """Return the readable slides ``audience`` may see, narrowed in the catalog by exact
        patient, case, study and series (``study``/``series``: the request path's), so a search
        builds the series of the slides that can match, not of every slide."""
        patient = _exact(query.value_of("PatientID"))
        accession = _exact(query.value_of("AccessionNumber"))
        if audience.deidentified and (patient or accession):
            return []  # de-identified series name no patient and no case
        studies = _uids(study) or _uids(query.value_of("StudyInstanceUID"))
        series_uids = _uids(series) or _uids(query.value_of("SeriesInstanceUID"))

        def read() -> list[SlideRecord]:
            records: list[SlideRecord] = []
            cursor = ""
            while True:
                page = self.tiles.catalog.search(
                    SlideQuery(
                        status="ok",
                        limit=PAGE,
                        cursor=cursor,
                        patient=patient,
                        accession=accession,
                        study_uids=studies,
                        series_uids=series_uids,
                        deidentified_uids=audience.deidentified,
                    )
                )
                records += [r for r in page.items if audience.may_see(r)]
                if not page.next:
                    return records
                cursor = page.next

        return await run_sync(read, limiter=self.tiles.limiter)

    async def _all_series(
        self,
        audience: Audience,
        query: Query,
        study: str | None = None,
        series: str | None = None,
    ) -> list[VirtualSeries]:
        out: list[VirtualSeries] = []
        for record in await self._records(audience, query, study, series):
            try:
                out.append(await self.series_of(record.id, audience))
            except SlideServerError as exc:  # unreadable, changed or gone: not listed
                log.debug("slide %s left out of DICOMweb: %s", record.id, exc.code)
        return out

    # -- QIDO-RS ------------------------------------------------------------------------------

    async def search(
        self,
        level: Level,
        params: Sequence[tuple[str, str]],
        audience: Audience,
        study: str | None = None,
        series: str | None = None,
    ) -> list[dict[str, Any]]:
        """Return the DICOM JSON of the studies, series or instances matching a QIDO query."""
        query = qido.parse_query(params)
        everything = await self._all_series(audience, query, study, series)
        if study is not None:
            everything = [s for s in everything if s.study_uid == study]
        if series is not None:
            everything = [s for s in everything if s.series_uid == series]
        if (study is not None or series is not None) and not everything:
            raise StudyNotFound("no such study or series")

        def match() -> list[dict[str, Any]]:
            found = [ds for ds in _candidates(level, everything) if qido.matches(ds, query)]
            return [qido.result(ds, level, query) for ds in qido.page(found, query)]

        return await run_sync(match, limiter=self.tiles.limiter)

    # -- WADO-RS ------------------------------------------------------------------------------

    async def locate(
        self, audience: Audience, study: str, series: str | None = None
    ) -> list[VirtualSeries]:
        """Return the series of a study (or the one series) ``audience`` may see; 404 if none."""
        if series is not None:
            known = await self._known_series(audience, study, series)
            if known is not None:
                return [known[0]]
        found = [
            s
            for s in await self._all_series(audience, Query(), study, series)
            if s.study_uid == study and (series is None or s.series_uid == series)
        ]
        if not found:
            raise StudyNotFound("no such study or series")
        return found

    async def _known_series(
        self, audience: Audience, study: str, series: str
    ) -> tuple[VirtualSeries, SlideView] | None:
        """The series of a slide seen before under these UIDs, if it still has them, and the
        slide's view."""
        slide_id = self._where.get((study, series, audience.deidentified))
        if slide_id is None:
            return None
        try:
            view = await self.tiles.view(slide_id)
            if view.record.status != "ok" or not audience.may_see(view.record):
                return None
            item = await self.series_of(slide_id, audience, view)
        except SlideServerError:
            return None
        if (item.study_uid, item.series_uid) != (study, series):
            return None
        return item, view

    async def instance(
        self, audience: Audience, study: str, series: str, uid: str
    ) -> tuple[VirtualSeries, VirtualInstance]:
        """Return one instance and its series; 404 when the caller may not see it."""
        item, instance, _ = await self._instance_and_view(audience, study, series, uid)
        return item, instance

    async def _instance_and_view(
        self, audience: Audience, study: str, series: str, uid: str
    ) -> tuple[VirtualSeries, VirtualInstance, SlideView]:
        """:meth:`instance`, with the slide's view: frame requests need all three, and a
        series seen before costs dictionary lookups only (no catalog search, one view)."""
        known = await self._known_series(audience, study, series)
        if known is not None:
            instance = known[0].instance(uid)
            if instance is not None:
                return known[0], instance, known[1]
        for item in await self.locate(audience, study, series):
            instance = item.instance(uid)
            if instance is not None:
                return item, instance, await self.tiles.view(item.slide_id)
        raise StudyNotFound("no such instance")

    async def metadata(
        self, audience: Audience, study: str, series: str | None = None, uid: str | None = None
    ) -> tuple[list[dict[str, Any]], list[VirtualSeries]]:
        """Return the metadata of every instance of a study, series or one instance."""
        if uid is not None and series is not None:
            item, instance = await self.instance(audience, study, series, uid)
            found, instances = [item], [instance]
        else:
            found = await self.locate(audience, study, series)
            instances = [i for s in found for i in s.instances]

        def to_json() -> list[dict[str, Any]]:
            return [i.dataset.to_json_dict() for i in instances]

        return await run_sync(to_json, limiter=self.tiles.limiter), found

    async def frames(
        self, audience: Audience, study: str, series: str, uid: str, numbers: str, accept: str
    ) -> Frames:
        """Return frames of an instance as the ``Accept`` header asks (stored bytes if it may)."""
        item, instance, view = await self._instance_and_view(audience, study, series, uid)
        wanted = framing.parse_frame_list(numbers, instance.frame_count)
        offer = framing.negotiate_frames(accept, instance.stored_syntax)
        data: list[bytes | None] = [None] * len(wanted)
        if offer.syntax == JPEGBaseline8Bit and instance.level is not None:
            for index, number in enumerate(wanted):
                data[index] = self._stored_nowait(view, instance, number)
        missing = [i for i, d in enumerate(data) if d is None]
        if missing:
            quality = self.tiles.settings.jpeg_quality

            def read(reader: SlideReader) -> list[bytes]:
                return [
                    frame_bytes(reader, view, instance, wanted[i], offer.syntax, quality)
                    for i in missing
                ]

            for index, frame in zip(missing, await self.tiles.with_reader(view, read), strict=True):
                data[index] = frame
        return Frames(offer, [d for d in data if d is not None], item)

    def _stored_nowait(
        self, view: SlideView, instance: VirtualInstance, number: int
    ) -> bytes | None:
        """A stored JPEG frame whose reader is open and bytes are in memory, on the event loop."""
        record = view.record
        loan = self.tiles.handles.lend_if_open(record.id, view.fingerprint)
        if loan is None or instance.level is None:
            if loan is not None:
                loan.release()
            return None
        column, row = instance.tile_of(number)
        try:
            encoded = loan.reader.read_encoded_tile(instance.level, column, row, nowait=True)
        except WouldBlock:
            return None
        except SlideUnreadable as exc:
            raise named_safely(exc, record.source) from exc.__cause__
        finally:
            loan.release()
        if encoded is None or encoded.media_type != "image/jpeg":
            return None
        return encoded.data

    async def part10(
        self, audience: Audience, study: str, series: str, uid: str, accept: str
    ) -> Instance10:
        """Return a Part 10 instance, its frames read as it is sent."""
        item, instance = await self.instance(audience, study, series, uid)
        syntax, multipart = framing.negotiate_instance(accept, instance.stored_syntax)
        _check_size(instance, syntax)
        view = await self.tiles.view(item.slide_id)
        chunks = self._stream(view, instance, syntax)
        return Instance10(str(syntax), multipart, chunks, item)

    async def series_part10(
        self, audience: Audience, study: str, series: str, accept: str
    ) -> tuple[list[tuple[str, AsyncIterator[bytes]]], VirtualSeries]:
        """Return every instance of a series as (transfer syntax, Part 10 stream), in order.

        Each instance goes out as stored unless the client asks for uncompressed, as for one.
        """
        item = (await self.locate(audience, study, series))[0]
        view = await self.tiles.view(item.slide_id)
        out = []
        for instance in item.instances:
            syntax, _ = framing.negotiate_instance(accept, instance.stored_syntax)
            _check_size(instance, syntax)
            out.append((str(syntax), self._stream(view, instance, syntax)))
        return out, item

    async def study_part10(
        self, audience: Audience, study: str, accept: str
    ) -> tuple[list[tuple[str, AsyncIterator[bytes]]], list[VirtualSeries]]:
        """Return every instance of every series of a study ``audience`` may see, as
        (transfer syntax, Part 10 stream), series after series; 404 when it sees none.

        Every size is checked before anything is sent, so a refusal is an answer, not a cut body.
        """
        found = await self.locate(audience, study)
        out = []
        for item in found:
            view = await self.tiles.view(item.slide_id)
            for instance in item.instances:
                syntax, _ = framing.negotiate_instance(accept, instance.stored_syntax)
                _check_size(instance, syntax)
                out.append((str(syntax), self._stream(view, instance, syntax)))
        return out, found

    async def _stream(
        self, view: SlideView, instance: VirtualInstance, syntax: UID
    ) -> AsyncIterator[bytes]:
        """Yield a Part 10 file: its header, then its frames a batch at a time (worker threads)."""
        native = _native_length(instance)
        quality = self.tiles.settings.jpeg_quality
        head = await run_sync(
            lambda: part10.header(instance.dataset, syntax), limiter=self.tiles.limiter
        )
        yield head + part10.pixel_data_start(syntax, native)
        for start in range(1, instance.frame_count + 1, PART10_BATCH):
            numbers = range(start, min(start + PART10_BATCH, instance.frame_count + 1))

            def read(reader: SlideReader, numbers: range = numbers) -> bytes:
                frames = [frame_bytes(reader, view, instance, n, syntax, quality) for n in numbers]
                if syntax == ExplicitVRLittleEndian:
                    return b"".join(frames)
                return b"".join(part10.fragment(f) for f in frames)

            yield await self.tiles.with_reader(view, read)
        yield part10.pixel_data_end(syntax, native)

    async def rendered(
        self, audience: Audience, study: str, series: str, uid: str, viewport: str, fmt: str
    ) -> tuple[ImageResult, VirtualSeries]:
        """Return an instance rendered as one image: a level through IIIF, else the image."""
        item, instance = await self.instance(audience, study, series, uid)
        if instance.associated is not None:
            return await self.tiles.associated(item.slide_id, instance.associated), item
        size = f"!{viewport}" if viewport else f"{instance.width},{instance.height}"
        image = await self.iiif.image(item.slide_id, "full", size, "0", "default", fmt)
        return image.result, item

    async def thumbnail(
        self, audience: Audience, study: str, series: str, uid: str, size: int
    ) -> tuple[ImageResult, VirtualSeries]:
        """Return a small JPEG of an instance (a level: of the whole slide)."""
        item, instance = await self.instance(audience, study, series, uid)
        if instance.associated is not None:
            return await self.tiles.associated(item.slide_id, instance.associated), item
        return await self.tiles.thumbnail(item.slide_id, size), item


def _jpeg2000_level(reader: SlideReader, index: int, width: int, height: int) -> LevelEncoding:
    """A level whose stored JPEG 2000 tiles can go out as they are, else a rendered one."""
    stored = None
    with contextlib.suppress(SlideServerError):
        stored = reader.read_jpeg2000_tile(index, 0, 0)
    photometric = framing.jpeg2000_photometric(stored.data) if stored is not None else None
    if stored is None or photometric is None or (stored.width, stored.height) != (width, height):
        return LevelEncoding(width, height, False)
    return LevelEncoding(width, height, False, photometric, stored_jpeg2000=True)


def _native_length(instance: VirtualInstance) -> int:
    """Bytes of an instance's frames uncompressed (8-bit RGB)."""
    return instance.frame_count * instance.frame_width * instance.frame_height * 3


def _check_size(instance: VirtualInstance, syntax: UID) -> None:
    """Refuse, before anything is sent, an uncompressed instance over the 4 GiB OB limit."""
    if syntax == ExplicitVRLittleEndian and _native_length(instance) >= 0xFFFFFFFE:
        raise TooLarge("this instance is over 4 GiB uncompressed; ask for its stored form")


def _uids(value: str | None) -> tuple[str, ...]:
    """The UIDs a UID match value lists (``a,b`` or ``a\\b``); ``()`` for universal matching."""
    if not value or value.strip() == "*":
        return ()
    return tuple(dict.fromkeys(v.strip() for v in re.split(r"[,\\]", value) if v.strip()))


def _exact(value: str | None) -> str:
    """A match value the catalog can filter on exactly (no wildcard, no list), else ``""``."""
    if not value or any(c in value for c in "*?\\,"):
        return ""
    return value


def _candidates(level: Level, series: Sequence[VirtualSeries]) -> list[Dataset]:
    """The datasets a query matches at ``level``, with the computed attributes QIDO returns."""
    if level is Level.INSTANCE:
        out = []
        for item in series:
            for instance in item.instances:
                ds = Dataset()
                ds.update(instance.dataset)
                ds.NumberOfSeriesRelatedInstances = len(item.instances)
                syntaxes = [str(instance.stored_syntax)]
                if instance.stored_syntax != ExplicitVRLittleEndian:
                    syntaxes.append(str(ExplicitVRLittleEndian))
                ds.AvailableTransferSyntaxUID = syntaxes
                out.append(ds)
        return out
    if level is Level.SERIES:
        out = []
        for item in series:
            ds = Dataset()
            ds.update(item.common)
            ds.NumberOfSeriesRelatedInstances = len(item.instances)
            out.append(ds)
        return out
    studies: dict[str, Dataset] = {}
    for item in series:
        study = studies.get(item.study_uid)
        if study is None:
            study = Dataset()
            study.update(item.common)
            study.ModalitiesInStudy = ["SM"]
            study.NumberOfStudyRelatedSeries = 0
            study.NumberOfStudyRelatedInstances = 0
            studies[item.study_uid] = study
        study.NumberOfStudyRelatedSeries += 1
        study.NumberOfStudyRelatedInstances += len(item.instances)
    return list(studies.values())


def frame_bytes(
    reader: SlideReader,
    view: SlideView,
    instance: VirtualInstance,
    number: int,
    syntax: Any,
    quality: int,
) -> bytes:
    """Return frame ``number`` of ``instance`` in ``syntax`` (worker thread).

    JPEG: the stored tile as it is, or (a tile the reader cannot pass through) the tile rendered
    and encoded. Uncompressed: the stored tile decoded, or the region rendered.
    """
    column, row = instance.tile_of(number)
    stored = None
    if instance.level is not None and instance.stored_syntax == JPEG2000:
        if syntax == JPEG2000:
            return _jpeg2000_frame(reader, view, instance, column, row)
    elif instance.level is not None and instance.stored_syntax == JPEGBaseline8Bit:
        stored = reader.read_encoded_tile(instance.level, column, row)
        if stored is not None and stored.media_type != "image/jpeg":
            stored = None
    if syntax == JPEGBaseline8Bit:
        if stored is not None:
            return stored.data
        return encode_image(_region(reader, view, instance, column, row), "jpeg", quality)
    image = framing.decode_jpeg(stored.data) if stored is not None else None
    if image is None:
        image = _region(reader, view, instance, column, row)
    return framing.raw_frame(image, instance.frame_width, instance.frame_height)


def _jpeg2000_frame(
    reader: SlideReader, view: SlideView, instance: VirtualInstance, column: int, row: int
) -> bytes:
    """A stored JPEG 2000 frame as it is; a tile the reader no longer hands out (sparse, say)
    rendered and encoded with the level's colour transform (OpenJPEG through imagecodecs)."""
    assert instance.level is not None
    stored = reader.read_jpeg2000_tile(instance.level, column, row)
    if stored is not None:
        return stored.data
    pixels = np.asarray(_region(reader, view, instance, column, row).convert("RGB"))
    photometric = instance.dataset.PhotometricInterpretation
    reversible = photometric == "YBR_RCT"
    encoded = imagecodecs.jpeg2k_encode(
        pixels, codecformat="J2K", mct=photometric != "RGB", reversible=reversible
    )
    return bytes(encoded)


def _region(
    reader: SlideReader, view: SlideView, instance: VirtualInstance, column: int, row: int
) -> Any:
    """The pixels of one frame, rendered: a tile of a level, or a whole associated image."""
    if instance.associated is not None:
        return reader.associated(instance.associated)
    assert instance.level is not None
    level = view.info.levels[instance.level]
    scale_x = view.info.width / level.width
    scale_y = view.info.height / level.height
    x = column * instance.frame_width
    y = row * instance.frame_height
    return reader.read_region(
        round(x * scale_x),
        round(y * scale_y),
        instance.level,
        instance.frame_width,
        instance.frame_height,
    )
