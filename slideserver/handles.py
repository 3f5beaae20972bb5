"""A bounded, thread-safe pool of open slide readers.

Opening a slide costs milliseconds to seconds; reading a tile costs microseconds once it is open,
so readers stay open between requests. A reader is closed only when it has been evicted *and* no
request still holds it: closing an OpenSlide handle while another thread reads it is not safe.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from slideserver.errors import SlideGone, SlideServerError, SlideUnreadable
from slideserver.files import is_within, stat_fingerprint, without_file_names
from slideserver.models import SlideSource
from slideserver.readers.base import SlideReader
from slideserver.readers.registry import ReaderRegistry

E = TypeVar("E", bound=SlideServerError)


def named_safely(exc: E, source: SlideSource) -> E:
    """Return ``exc`` as the same error class with :func:`without_file_names` applied (raise it
    ``from exc.__cause__``: the backend's exception, not the message naming the file)."""
    return type(exc)(without_file_names(exc.detail, source))


@dataclass
class _Entry:
    reader: SlideReader
    fingerprint: str
    users: int = 0
    evicted: bool = False


@dataclass
class _Opening:
    done: threading.Event = field(default_factory=threading.Event)


class Loan:
    """An open reader lent by :meth:`HandlePool.lend_if_open`; release it exactly once."""

    __slots__ = ("_entry", "_pool", "reader")

    def __init__(self, pool: HandlePool, entry: _Entry) -> None:
        self._pool = pool
        self._entry = entry
        self.reader = entry.reader

    def release(self) -> None:
        self._pool._release(self._entry)


class HandlePool:
    """Open readers keyed by slide ID, at most ``size`` kept when idle."""

    def __init__(self, registry: ReaderRegistry, roots: Sequence[Path], size: int = 64) -> None:
        self.registry = registry
        self.roots = tuple(roots)
        self.size = max(1, size)
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._opening: dict[str, _Opening] = {}

    def fingerprint(self, slide_id: str, source: SlideSource) -> str:
        """Return the slide's current on-disk fingerprint, checking it is still there and ours."""
        for path in source.all_files:
            if not is_within(path, self.roots):
                raise SlideGone(f"slide {slide_id!r} is no longer available")
        try:
            return stat_fingerprint(source)
        except OSError as exc:
            raise SlideGone(f"slide {slide_id!r} is no longer available") from exc

    @contextmanager
    def borrow(
        self, slide_id: str, source: SlideSource, fingerprint: str | None = None
    ) -> Iterator[SlideReader]:
        """Lend the open reader of the slide, opening (or reopening a replaced file) as needed."""
        fingerprint = fingerprint or self.fingerprint(slide_id, source)
        entry = self._acquire(slide_id, source, fingerprint)
        try:
            yield entry.reader
        except SlideServerError as exc:
            raise named_safely(exc, source) from exc.__cause__
        finally:
            self._release(entry)

    def lend_if_open(self, slide_id: str, fingerprint: str) -> Loan | None:
        """Lend the slide's reader if it is open already (never opens: cheap, no I/O).

        For the event loop: it reads stored tiles that are in the page cache without a thread
        hop, and must not wait for a slide to open. The caller must :meth:`Loan.release` it.
        """
        with self._lock:
            entry = self._entries.get(slide_id)
            if entry is None or entry.fingerprint != fingerprint:
                return None
            entry.users += 1
            self._entries.move_to_end(slide_id)
        return Loan(self, entry)

    def _acquire(self, slide_id: str, source: SlideSource, fingerprint: str) -> _Entry:
        key = slide_id
        while True:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None and entry.fingerprint == fingerprint:
                    entry.users += 1
                    self._entries.move_to_end(key)
                    return entry
                if entry is not None:  # the file changed under the same ID
                    self._evict_locked(key)
                opening = self._opening.get(key)
                if opening is None:
                    opening = self._opening[key] = _Opening()
                    leader = True
                else:
                    leader = False
            if not leader:
                opening.done.wait(timeout=60)
                continue
            try:
                reader = self.registry.open(source)
            except SlideUnreadable as exc:
                with self._lock:
                    self._opening.pop(key, None)
                opening.done.set()
                raise named_safely(exc, source) from exc.__cause__
            except OSError as exc:
                with self._lock:
                    self._opening.pop(key, None)
                opening.done.set()
                raise SlideGone(f"slide {slide_id!r} is no longer available") from exc
            with self._lock:
                entry = _Entry(reader, fingerprint, users=1)
                self._entries[key] = entry
                self._opening.pop(key, None)
                self._trim_locked()
            opening.done.set()
            return entry

    def _release(self, entry: _Entry) -> None:
        close = False
        with self._lock:
            entry.users -= 1
            close = entry.evicted and entry.users == 0
        if close:
            entry.reader.close()

    def _evict_locked(self, key: str) -> None:
        entry = self._entries.pop(key)
        entry.evicted = True
        if entry.users == 0:
            entry.reader.close()

    def _trim_locked(self) -> None:
        while len(self._entries) > self.size:
            key = next(iter(self._entries))
            self._evict_locked(key)

    def close(self) -> None:
        """Close every idle reader; busy ones close when their last user returns them."""
        with self._lock:
            for key in list(self._entries):
                self._evict_locked(key)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
