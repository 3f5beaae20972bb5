"""Re-scan when files under the roots change (``serve --watch``), using watchfiles.

The watcher runs in its own daemon thread: watchfiles batches a burst of events (a scanner
writing a slide, a DICOM folder being copied) into one, and each batch triggers one incremental
scan, which opens only the new or changed files. A failed scan is logged and the watch goes on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from watchfiles import DefaultFilter, watch

log = logging.getLogger(__name__)


class _SlideFilter(DefaultFilter):
    """Ignore hidden files (the SQLite catalog and its journal live in the first root)."""

    def __call__(self, change: Any, path: str) -> bool:
        if Path(path).name.startswith("."):
            return False
        return bool(super().__call__(change, path))


class RootWatcher:
    """Call ``on_change`` after every batch of file changes under ``roots``."""

    def __init__(
        self,
        roots: Sequence[Path],
        on_change: Callable[[], object],
        *,
        debounce_ms: int = 500,
        step_ms: int = 50,
    ) -> None:
        self.roots = [Path(r) for r in roots if Path(r).is_dir()]
        self.on_change = on_change
        self.debounce_ms = debounce_ms
        self.step_ms = step_ms
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ready = threading.Event()
        """Set once the watch is in place (tests wait on it before touching files)."""
        self.scans = 0

    def start(self) -> None:
        """Begin watching in a daemon thread."""
        if not self.roots:
            log.warning("watch: no slide root to watch")
            return
        self._thread = threading.Thread(target=self._run, name="catalog-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching and wait for the thread (and a scan in progress) to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        try:
            changes = watch(
                *self.roots,
                watch_filter=_SlideFilter(),
                debounce=self.debounce_ms,
                step=self.step_ms,
                stop_event=self._stop,
                yield_on_timeout=True,
                rust_timeout=1000,
                raise_interrupt=False,
            )
            for batch in changes:
                self.ready.set()
                if self._stop.is_set():
                    break
                if not batch:
                    continue
                log.info("watch: %d file changes; scanning", len(batch))
                try:
                    self.on_change()
                    self.scans += 1
                except Exception:
                    log.exception("watch: scan after file changes failed")
        except Exception:
            log.exception("watch: watching the slide roots failed; new slides need a re-index")
        finally:
            self.ready.set()
