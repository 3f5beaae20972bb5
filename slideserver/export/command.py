"""``slideserver export``: flags to an export run (the logic is in :mod:`.run`)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

USAGE = (
    "slideserver export --out DIR [--size 256] [--mpp 0.5] [--format webdataset|zarr] "
    "[--scheduler ADDRESS] [--server URL] [--token TOKEN] [--root DIR ...] "
    "(--query TEXT | --collection NAME | ID ...)"
)


def add_export_command(sub: Any) -> None:
    """Add ``export`` to the command parser."""
    p = sub.add_parser(
        "export", help="write tissue patches of slides as training shards", usage=USAGE
    )
    p.add_argument("ids", nargs="*", help="slide IDs")
    p.add_argument("--out", type=Path, required=True, help="output folder (resumable)")
    p.add_argument("--size", type=int, default=256, help="patch side in pixels (256)")
    p.add_argument(
        "--mpp",
        type=float,
        default=0.5,
        help="µm per pixel of the patches (0.5; 0: full resolution)",
    )
    p.add_argument("--format", choices=["webdataset", "zarr"], default="webdataset")
    p.add_argument("--query", help="slides found by this search")
    p.add_argument("--collection", help="slides of this collection (root folder or path prefix)")
    p.add_argument("--classes", help="only patches inside annotations of these classes (a,b)")
    p.add_argument("--min-tissue", type=float, default=0.5, help="tissue fraction per patch")
    p.add_argument("--shard-size", type=int, default=1000, help="patches per shard")
    p.add_argument("--scheduler", help="a Dask scheduler, tcp://host:8786 (default: this machine)")
    p.add_argument(
        "--workers", type=int, help="local worker processes (default: every core; 0: this process)"
    )
    p.add_argument("--server", help="read through this slideserver's API instead of the files")
    p.add_argument("--token", help="API token ($SLIDESERVER_TOKEN): whose rights the export has")
    p.add_argument("--root", dest="roots", action="append", type=Path, help="folder of slides")
    p.add_argument("--database-url", help="catalog: sqlite:///PATH or postgresql://...")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from slideserver.errors import SlideServerError
    from slideserver.export.plan import ExportOptions
    from slideserver.export.run import run_export
    from slideserver.export.select import ApiCatalog, LocalCatalog, Selection, SlideCatalog
    from slideserver.export.sources import Origin
    from slideserver.settings import Settings

    token = args.token or os.environ.get("SLIDESERVER_TOKEN") or None
    try:
        classes = tuple(c.strip() for c in (args.classes or "").split(",") if c.strip())
        options = ExportOptions(
            size=args.size,
            mpp=args.mpp if args.mpp > 0 else None,
            format=args.format,
            min_tissue=args.min_tissue,
            shard_size=args.shard_size,
            classes=classes,
        )
        selection = Selection(tuple(args.ids), args.query, args.collection)
        if classes and not args.server:
            raise ValueError("--classes reads annotations through the server: add --server URL")
        catalog: SlideCatalog
        if args.server:
            catalog = ApiCatalog(args.server, token)
        else:
            settings = Settings.from_env(roots=args.roots, database_url=args.database_url)
            if not settings.roots:
                raise ValueError("give the folders of slides (--root DIR) or --server URL")
            catalog = LocalCatalog(settings, token)
    except (ValueError, SlideServerError) as exc:
        print(
            f"slideserver export: {getattr(exc, 'detail', exc)} (usage: {USAGE})", file=sys.stderr
        )
        return 2
    origin = Origin(args.server or "", (token or "") if args.server else "")
    try:
        summary = run_export(
            args.out, options, selection, catalog, origin,
            scheduler=args.scheduler, workers=args.workers,
        )  # fmt: skip
    except SlideServerError as exc:
        print(f"slideserver export: {exc.detail}", file=sys.stderr)
        return 1
    finally:
        catalog.close()
    print(
        f"exported {summary.patches} patches of {summary.slides - len(summary.skipped)} slides: "
        f"{summary.shards_written} shards written, {summary.shards_already_done} already done"
    )
    for slide_id, reason in sorted(summary.skipped.items()):
        print(f"skipped {slide_id}: {reason}", file=sys.stderr)
    for slide_id in summary.missing:
        print(f"not found: {slide_id}", file=sys.stderr)
    return 1 if summary.skipped or summary.missing else 0
