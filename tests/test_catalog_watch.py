"""``serve --watch``: new, changed and removed slides are picked up within seconds."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from slideserver.catalog.base import SlideQuery
from slideserver.catalog.sql import SqlCatalog
from slideserver.readers.registry import default_registry


def wait_for(condition: Any, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_watch_picks_up_new_and_removed_slides(tiny_slides: Any, tmp_path: Path) -> None:
    tiny_slides("first.tif")
    catalog = SqlCatalog(f"sqlite:///{tmp_path / 'c.db'}", [tiny_slides.root], default_registry())
    try:
        catalog.refresh()
        catalog.watch(debounce_ms=100)
        assert catalog.watcher is not None and catalog.watcher.ready.wait(10)
        started = time.monotonic()
        path = tiny_slides("S24-00001_A1_HE.tif")

        def names() -> set[str]:
            return {r.name for r in catalog.search(SlideQuery(status="ok")).items}

        assert wait_for(lambda: "S24-00001_A1_HE.tif" in names())
        assert time.monotonic() - started < 10
        path.unlink()
        assert wait_for(lambda: "S24-00001_A1_HE.tif" not in names())
    finally:
        catalog.close()
    assert catalog.watcher is None
