"""Catalog benchmark: index 10,000 slide files, then re-scan them unchanged.

Run with ``python -m bench.catalog [--count N] [--database-url URL] [--keep DIR]``. The files are
tiny real tiled TIFFs (one template, a unique tag patched into each, so every content hash
differs) named like lab slides, so the filename rules run too. Targets: first index < 60 s,
unchanged re-scan < 5 s.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from slideserver.catalog.sql import SqlCatalog
from slideserver.readers.registry import default_registry

FIRST_TARGET_S = 60.0
RESCAN_TARGET_S = 5.0
_TAG = b"@" * 48


def write_slides(root: Path, count: int) -> None:
    """Write ``count`` distinct small slides in folders of 500."""
    template = root / "template.tif"
    pixels = np.full((512, 512, 3), 210, np.uint8)
    tifffile.imwrite(
        template,
        pixels,
        tile=(256, 256),
        compression="jpeg",
        metadata=None,
        description=_TAG.decode(),
    )
    data = template.read_bytes()
    template.unlink()
    at = data.index(_TAG)
    for i in range(count):
        accession = f"S24-{i // 4:05d}"
        name = f"{accession}_A{i % 4 + 1}_HE.tif"
        folder = root / f"batch-{i // 500:03d}"
        folder.mkdir(exist_ok=True)
        tag = f"bench slide {i}".encode().ljust(len(_TAG))
        (folder / name).write_bytes(data[:at] + tag + data[at + len(_TAG) :])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--database-url", default="", help="default: SQLite in the temp folder")
    parser.add_argument("--keep", type=Path, help="write the slides here and keep them")
    args = parser.parse_args(argv)

    folder = args.keep or Path(tempfile.mkdtemp(prefix="slideserver-bench-catalog-"))
    root = folder / "slides"
    try:
        if not root.exists():
            root.mkdir(parents=True)
            started = time.perf_counter()
            write_slides(root, args.count)
            print(f"wrote {args.count} slide files in {time.perf_counter() - started:.1f} s")
        url = args.database_url or f"sqlite:///{folder / 'catalog.db'}"
        catalog = SqlCatalog(url, [root], default_registry())
        try:
            first = catalog.scan()
            again = catalog.scan()
        finally:
            catalog.close()
        backend = url.split(":", 1)[0]
        print(f"catalog ({backend}): {first.found} slides")
        print(
            f"  first index   {first.seconds:7.2f} s  ({first.added} added, "
            f"{first.unreadable} unreadable; target < {FIRST_TARGET_S:.0f} s)"
        )
        print(
            f"  re-scan       {again.seconds:7.2f} s  ({again.unchanged} unchanged, "
            f"{again.touched} touched; target < {RESCAN_TARGET_S:.0f} s)"
        )
        ok = (
            first.added == args.count
            and first.seconds < FIRST_TARGET_S
            and again.seconds < RESCAN_TARGET_S
            and again.touched == 0
        )
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
