"""A catalog held in memory, rebuilt by scanning: for tests and the stateless demo."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from slideserver.catalog.base import SlidePage, SlideQuery, SlideRecord
from slideserver.catalog.discovery import (
    FoundSlide,
    content_hash,
    discover,
    slide_id_from_hash,
)
from slideserver.catalog.scanner import check_pixels, unreadable_reason
from slideserver.errors import BadRequest, SlideServerError
from slideserver.readers.registry import ReaderRegistry

log = logging.getLogger(__name__)


def describe(found: FoundSlide, registry: ReaderRegistry) -> SlideRecord:
    """Open a found slide once and record what the readers see (or why they cannot)."""
    digest = content_hash(found.source)
    base = {
        "id": slide_id_from_hash(digest),
        "name": found.name,
        "relpath": found.relpath,
        "root": found.root,
        "source": found.source,
        "content_hash": digest,
    }
    try:
        with registry.open(found.source) as reader:
            check_pixels(reader)  # ok only when the pixels decode, as in the SQL catalog
            return SlideRecord(**base, **reader.info.summary())  # type: ignore[arg-type]
    except SlideServerError as exc:
        reason = unreadable_reason(exc.detail, found.source)
        return SlideRecord(**base, status="unreadable", error=reason)  # type: ignore[arg-type]


class MemoryCatalog:
    """Slides found under the roots, described by the readers, kept in a dict."""

    def __init__(self, roots: Sequence[Path], registry: ReaderRegistry) -> None:
        self.roots = tuple(roots)
        self.registry = registry
        self._lock = threading.Lock()
        self._slides: dict[str, SlideRecord] = {}

    def refresh(self) -> int:
        slides: dict[str, SlideRecord] = {}
        for found in discover(self.roots, self.registry):
            try:
                record = describe(found, self.registry)
            except OSError:
                log.warning("a slide file vanished during the scan")
                continue
            if record.id in slides:  # a byte-identical copy is a slide of its own (README)
                copy_id = slide_id_from_hash(f"{record.content_hash}:{record.relpath}")
                record = replace(record, id=copy_id)
            slides[record.id] = record
        with self._lock:
            changed = sum(1 for k, v in slides.items() if self._slides.get(k) != v)
            self._slides = slides
        return changed

    def get(self, slide_id: str) -> SlideRecord | None:
        with self._lock:
            return self._slides.get(slide_id)

    def search(self, query: SlideQuery) -> SlidePage:
        with self._lock:
            records = sorted(self._slides.values(), key=lambda r: (r.relpath, r.id))
        needle = query.q.lower()
        hits = [
            r
            for r in records
            if (not needle or needle in r.relpath.lower())
            and (not query.format or r.format == query.format)
            and (not query.vendor or r.vendor == query.vendor)
            and (not query.status or r.status == query.status)
        ]
        start = 0
        if query.cursor:
            try:
                start = int(query.cursor)
            except ValueError as exc:
                raise BadRequest("cursor is not one this server gave out") from exc
        end = start + query.limit
        return SlidePage(hits[start:end], str(end) if end < len(hits) else None)

    def ping(self) -> None:
        """Always answers: the slides are in this process."""

    def close(self) -> None:
        """Nothing to release."""
