"""Instances in, slides out: check, store, show when whole, index at once.

One :class:`DicomIntake` per server, opened in the app's lifespan when ``dicom_store_dir`` is
set; STOW-RS (``api/routes/dicomweb_store.py``) and the C-STORE SCP (:mod:`slideserver.dicom.scp`)
both hand it Part 10 bytes. It knows the catalog only as ``index``, a callable that scans the slide
roots (``Catalog.refresh``): linking to cases by AccessionNumber and PatientID is the scan's own
late binding (:mod:`slideserver.catalog.late_binding`), as for any DICOM slide on disk.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import anyio
from anyio.to_thread import run_sync

from slideserver.dicom.ingest import DicomStore, Stored
from slideserver.dicom.instance import read_instance
from slideserver.settings import Settings

log = logging.getLogger("slideserver.dicom.intake")

Index = Callable[[], object]
"""Scan the slide roots into the catalog (``Catalog.refresh``)."""

POLL_SECONDS = 1.0
"""How often staged slides are looked at for the quiet period (arrivals are looked at at once)."""


class DicomIntake:
    """The DICOM store and what showing a slide takes."""

    def __init__(self, store: DicomStore, index: Index, poll_seconds: float = POLL_SECONDS) -> None:
        self.store = store
        self.index = index
        self.poll_seconds = poll_seconds
        self._index_owed = False
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, index: Index) -> DicomIntake:
        """The intake ``settings`` ask for (``dicom_store_dir`` must be set); folders created."""
        store = DicomStore(Path(settings.dicom_store_dir), settings.dicom_quiet_seconds)
        store.open()
        store.recover()
        return cls(store, index, min(POLL_SECONDS, max(0.05, settings.dicom_quiet_seconds / 4)))

    def accept(self, data: bytes, study_uid: str | None = None) -> Stored:
        """Check and store one Part 10 file; raise ``InstanceRefused`` with the reason."""
        return self.store.store(read_instance(data, study_uid))

    def settle(self) -> list[str]:
        """Show the staged slides that are ready and index them; return their folders.

        Blocking (file moves, a catalog scan): call it in a worker thread. When indexing fails
        (the database is down, say) it is owed, and retried at the next call.
        """
        shown = self.store.publish()
        with self._lock:
            owed = self._index_owed or bool(shown)
            self._index_owed = False
        if owed:
            try:
                self.index()
            except Exception:
                with self._lock:
                    self._index_owed = True
                log.exception("the catalog could not index newly stored DICOM slides; will retry")
        return shown

    async def run(self) -> None:
        """Settle every ``poll_seconds`` until cancelled (the lifespan's task group)."""
        while True:
            await anyio.sleep(self.poll_seconds)
            try:
                await run_sync(self.settle)
            except Exception:  # a full disk, say: keep trying, never stop the server
                log.exception("staged DICOM slides could not be shown")


__all__ = ["DicomIntake", "Index"]
