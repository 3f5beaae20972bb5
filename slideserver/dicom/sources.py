"""Slides held in a PACS: list its WSI series over QIDO-RS, read their frames over WADO-RS.

``dicomweb_sources`` names the archives: comma-separated DICOMweb roots, each
``https://user:password@pacs.example/dicom-web`` (HTTP basic) or
``https://pacs.example/dicom-web;bearer=TOKEN`` (a bearer token), or neither.
:class:`PacsSources` lists every VL WSI instance of each (``dicomweb-client``), groups them into
slide scans as the DICOM reader groups files (study, then frame of reference, else series), and
keeps one pointer file per slide under ``dicomweb_sources_dir/<source>/<study>/`` (see
:mod:`slideserver.readers.dicomweb`): new slides get one, slides gone from the archive lose
theirs (only when the archive answered), and then the catalog is scanned, so PACS slides are
indexed, linked to cases and served (Deep Zoom, IIIF, DICOMweb, cached like any tile) the way
slides on disk are. The listing runs at start and every ``dicomweb_sources_interval`` seconds.

:meth:`PacsSources.open` is the readers' opener: wsidicom's web source over a
``requests`` session holding the credentials, asking for stored JPEG frames first.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import requests
from anyio.to_thread import run_sync
from dicomweb_client import DICOMwebClient
from pydicom.uid import UID, JPEGBaseline8Bit
from wsidicom import WsiDicom, WsiDicomWebClient

from slideserver.dicom.instance import WSI_SOP_CLASS, is_uid
from slideserver.dicom.intake import Index
from slideserver.readers.dicomweb import POINTER_SUFFIX, PacsSlide, dicomweb_reader
from slideserver.readers.registry import ReaderRegistry
from slideserver.settings import Settings

log = logging.getLogger("slideserver.dicom.sources")

PAGE = 1000
"""Instances asked for per QIDO-RS page."""
TIMEOUT = 30.0
"""Seconds one request to a PACS may take."""
TRANSFER_SYNTAXES = (JPEGBaseline8Bit, "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91")
"""Frames asked for as stored JPEG (sent on as they are), then JPEG 2000; else wsidicom's."""
_TAGS = {
    "study": "0020000D",
    "series": "0020000E",
    "frame_of_reference": "00200052",
    "image_type": "00080008",
    "container": "00400512",
}


class SourceError(ValueError):
    """``dicomweb_sources`` cannot be read."""


@dataclass(frozen=True)
class Source:
    """One DICOMweb archive and how to authenticate to it."""

    url: str
    """The DICOMweb root, without credentials."""
    username: str | None = None
    password: str | None = None
    bearer: str | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        """A stable folder name for the archive: its host and a hash of its URL."""
        host = urlsplit(self.url).hostname or "pacs"
        digest = hashlib.blake2b(self.url.encode(), digest_size=5).hexdigest()
        return f"{''.join(c if c.isalnum() or c in '.-' else '-' for c in host)}-{digest}"

    def session(self) -> requests.Session:
        """A ``requests`` session carrying the archive's credentials."""
        session = requests.Session()
        if self.username is not None:
            session.auth = (self.username, self.password or "")
        if self.bearer is not None:
            session.headers["Authorization"] = f"Bearer {self.bearer}"
        return session


def parse_sources(setting: str) -> list[Source]:
    """Read ``dicomweb_sources``; raise :class:`SourceError` for an entry that is no URL."""
    sources = []
    for entry in (e.strip() for e in setting.split(",")):
        if not entry:
            continue
        url, _, options = entry.partition(";")
        bearer = None
        if options:
            key, _, value = options.partition("=")
            if key.strip().lower() != "bearer" or not value.strip():
                raise SourceError("a DICOMweb source option must be ;bearer=TOKEN")
            bearer = value.strip()
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SourceError("a DICOMweb source must be an http(s) URL")
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        clean = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), parts.query, ""))
        sources.append(Source(clean, parts.username, parts.password, bearer))
    return sources


class _PerSeriesWebClient(WsiDicomWebClient):  # type: ignore[misc]
    """wsidicom's web client, asking for instances one series at a time.

    wsidicom asks for the instances of all series of a slide in one QIDO-RS query, a list of
    Series Instance UIDs; some archives (Orthanc 1.10) match only one of them, so the label and
    overview series went missing.
    """

    def get_wsi_instances(
        self, study_uid: UID, series_uids: Iterable[UID]
    ) -> Iterator[tuple[UID, UID, set[UID] | None]]:
        for series in series_uids:
            yield from super().get_wsi_instances(study_uid, [series])

    def get_annotation_instances(
        self, study_uid: UID, series_uids: Iterable[UID]
    ) -> Iterator[tuple[UID, UID, set[UID] | None]]:
        for series in series_uids:
            yield from super().get_annotation_instances(study_uid, [series])


class PacsSources:
    """The archives of ``dicomweb_sources``: listed into pointer files, opened for readers."""

    def __init__(self, sources: list[Source], folder: Path, interval: float = 300.0) -> None:
        self.sources = {source.name: source for source in sources}
        self.folder = folder.absolute()
        self.interval = interval
        self._lock = threading.Lock()
        self._clients: dict[str, WsiDicomWebClient] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> PacsSources | None:
        """The sources ``settings`` name, or ``None``; ValueError when misconfigured."""
        sources = parse_sources(settings.dicomweb_sources)
        if not sources:
            return None
        if not settings.dicomweb_sources_dir:
            raise SourceError("dicomweb_sources needs dicomweb_sources_dir")
        folder = Path(settings.dicomweb_sources_dir)
        return cls(sources, folder, settings.dicomweb_sources_interval)

    def readers(self, registry: ReaderRegistry) -> ReaderRegistry:
        """``registry`` with the reader of PACS slides, opened by :meth:`open`."""
        return ReaderRegistry([*registry.readers, dicomweb_reader(self.open)])

    # -- the readers' opener --

    def client(self, name: str) -> WsiDicomWebClient:
        """wsidicom's web client of one archive (one session each, shared by readers)."""
        with self._lock:
            client = self._clients.get(name)
            if client is None:
                source = self.sources.get(name)
                if source is None:
                    raise LookupError("the slide's DICOMweb source is no longer configured")
                client = _PerSeriesWebClient(DICOMwebClient(source.url, session=source.session()))
                self._clients[name] = client
            return client

    def open(self, slide: PacsSlide) -> WsiDicom:
        """Open a PACS slide with wsidicom's web source (blocking: network)."""
        return WsiDicom.open_web(
            self.client(slide.source),
            slide.study,
            list(slide.series),
            requested_transfer_syntax=list(TRANSFER_SYNTAXES),
        )

    # -- listing --

    def sync(self, index: Index) -> int:
        """List every archive, update the pointer files, then ``index`` (scan the catalog) if
        any changed; return how many pointer files were added, changed or removed."""
        changed = self._forget_unconfigured()
        for name, source in self.sources.items():
            try:
                slides = list(self._list(source))
            except Exception as exc:  # an archive down keeps its slides as they were
                log.warning("DICOMweb source %s cannot be listed: %s", name, type(exc).__name__)
                continue
            changed += self._write_pointers(name, slides)
        if changed:
            index()
        return changed

    def _list(self, source: Source) -> Iterator[tuple[str, PacsSlide]]:
        """The slide scans of one archive (all its VL WSI instances, grouped), each with the
        name of its pointer file (the scan's UID, or a hash of its container identifier)."""
        client = DICOMwebClient(source.url, session=source.session())
        groups: dict[tuple[str, str], set[str]] = defaultdict(set)
        offset = 0
        while True:
            page = client.search_for_instances(
                search_filters={"SOPClassUID": WSI_SOP_CLASS},
                fields=["FrameOfReferenceUID", "ImageType", "ContainerIdentifier"],
                limit=PAGE,
                offset=offset,
            )
            for item in page:
                key = _slide_key(item)
                series_uid = _value(item, "series")
                if key is not None and series_uid is not None and is_uid(series_uid):
                    groups[key].add(series_uid)
            if len(page) < PAGE:
                break
            offset += len(page)
        for (study, scan), series in sorted(groups.items()):
            stem = (
                scan if is_uid(scan) else hashlib.blake2b(scan.encode(), digest_size=8).hexdigest()
            )
            yield stem, PacsSlide(source.name, study, tuple(sorted(series)))

    def _forget_unconfigured(self) -> int:
        """Remove the pointer files of archives no longer configured; return how many."""
        removed = 0
        for folder in (p for p in _children(self.folder) if p.name not in self.sources):
            removed += sum(1 for _ in folder.glob(f"*/*{POINTER_SUFFIX}"))
            shutil.rmtree(folder, ignore_errors=True)
        return removed

    def _write_pointers(self, name: str, slides: list[tuple[str, PacsSlide]]) -> int:
        """Make the pointer files of one archive match its slides; return how many changed."""
        folder = self.folder / name
        folder.mkdir(parents=True, exist_ok=True)
        wanted = {folder / s.study / f"{stem}{POINTER_SUFFIX}": s for stem, s in slides}
        changed = 0
        for path, slide in wanted.items():
            content = slide.to_json()
            with contextlib.suppress(OSError):
                if path.read_text() == content:
                    continue
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
            temporary.write_text(content)
            os.replace(temporary, path)
            changed += 1
        for path in folder.glob(f"*/*{POINTER_SUFFIX}"):
            if path not in wanted:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                changed += 1
        return changed

    async def run(self, index: Index) -> None:
        """List the archives now and every ``interval`` seconds until cancelled."""
        while True:
            try:
                await run_sync(self.sync, index)
            except Exception:
                log.exception("the DICOMweb sources could not be listed")
            await anyio.sleep(self.interval)


def _children(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_dir()]
    except FileNotFoundError:
        return []


def _hashed(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _value(item: dict[str, Any], name: str) -> str | None:
    values = (item.get(_TAGS[name]) or {}).get("Value") or []
    return str(values[0]) if values else None


def _slide_key(item: dict[str, Any]) -> tuple[str, str] | None:
    """Study, and the scan within it: frame of reference (or container), else the series."""
    study, series = _value(item, "study"), _value(item, "series")
    if not study or not series or not is_uid(study):
        return None
    scan = _value(item, "frame_of_reference") or _value(item, "container") or series
    return study, scan


__all__ = ["PacsSources", "Source", "SourceError", "parse_sources"]
