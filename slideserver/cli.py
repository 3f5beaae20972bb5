"""The ``slideserver`` command: serve, index, info, sample, tokens, audit, backup, restore."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from slideserver import __version__
from slideserver.readers.base import quiet_backend_logs
from slideserver.server.logs import configure_logging
from slideserver.settings import ENV_PREFIX, Settings


def _settings_from_args(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for f in fields(Settings):
        value = getattr(args, f.name, None)
        if value is not None and value != []:
            overrides[f.name] = value
    return Settings.from_env(**overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    from slideserver.server import runner

    settings = _settings_from_args(args)
    if not settings.roots:
        print("slideserver serve: give at least one folder of slides", file=sys.stderr)
        return 2
    refusal = runner.refusal(settings)
    if refusal:
        print(f"slideserver serve: {refusal}", file=sys.stderr)
        return 2
    for line in runner.statements(settings):
        print(f"slideserver: {line}", file=sys.stderr)
    runner.run(settings)
    return 0


class CliRefusal(Exception):
    """The command cannot run as asked; the message says why (exit status 2)."""


def _check_roots(args: argparse.Namespace, usage: str) -> None:
    """Refuse ROOT arguments that are not folders (the name in ROOT's place, typically)."""
    for root in getattr(args, "roots", None) or ():
        if not Path(root).is_dir():
            raise CliRefusal(f"{str(root)!r} is not a folder of slides (usage: {usage})")


def _existing_database(settings: Settings, holding: str) -> None:
    """Refuse to go on unless the catalog database exists and holds the security tables.

    Reading or revoking must never create a database (or tables) as a side effect.
    """
    from sqlalchemy import inspect
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from slideserver.db.engine import default_database_url, make_engine
    from slideserver.errors import BackendUnavailable
    from slideserver.security.migrations import VERSION_TABLE

    url = default_database_url(settings)
    parsed = make_url(url)
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite and not (parsed.database and Path(parsed.database).is_file()):
        where = "at --database-url" if settings.database_url else "for these ROOT folders"
        raise CliRefusal(
            f"no catalog database {where}: give the ROOT folders (or --database-url) "
            "that `slideserver serve` uses"
        )
    engine = make_engine(url)
    try:
        present = inspect(engine).has_table(VERSION_TABLE)
    except (SQLAlchemyError, BackendUnavailable) as exc:
        raise CliRefusal(f"cannot open the catalog database: {type(exc).__name__}") from None
    finally:
        engine.dispose()
    if not present:
        raise CliRefusal(f"this catalog database holds no {holding} yet")


def _security(args: argparse.Namespace, create: bool = False, holding: str = "tokens") -> Any:
    """Open the security tables of the catalog database the arguments name.

    Only ``create`` may create the database; every other command needs it to exist.
    """
    from slideserver.security import Security

    settings = _settings_from_args(args)
    if not create:
        _existing_database(settings, holding)
    security = Security(replace(settings, auth="open"))
    security.open()
    return security


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC" if value is not None else "never"


TOKEN_USAGE = {
    "create": "slideserver token create [ROOT ...] --role ROLE --name NAME [--expires 90d]",
    "list": "slideserver token list [ROOT ...]",
    "revoke": "slideserver token revoke NAME [ROOT ...]",
    "rotate": "slideserver token rotate NAME [ROOT ...] [--overlap 1d] [--expires 90d]",
}


def cmd_token(args: argparse.Namespace) -> int:
    command = args.token_command
    try:
        _check_roots(args, TOKEN_USAGE[command])
        security = _security(args, create=command == "create")
    except CliRefusal as exc:
        print(f"slideserver token {command}: {exc}", file=sys.stderr)
        return 2
    try:
        return _token_command(security.tokens, args)
    finally:
        security.close()


def _token_command(tokens: Any, args: argparse.Namespace) -> int:
    from slideserver.security.tokens import TokenError, parse_duration

    command = args.token_command
    try:
        if command == "create":
            lifetime = parse_duration(args.expires, allow_never=True)
            info, token = tokens.create(args.name, args.role, args.collections or "", lifetime)
            scope = ", ".join(info.collections) or "all slides"
            print(
                f"created token {info.name!r} (role {info.role}, {scope}, prefix {info.prefix}, "
                f"expires {_when(info.expires_at)})"
            )
            print("store it now: it is shown only once. Send it as Authorization: Bearer TOKEN")
            print(token)
        elif command == "rotate":
            overlap = parse_duration(args.overlap)
            assert overlap is not None
            lifetime = parse_duration(args.expires, allow_never=True)
            info, token, old_until = tokens.rotate(args.name, overlap, lifetime)
            old = f"until {_when(old_until)}" if old_until else "no longer (it had expired)"
            print(
                f"rotated token {info.name!r}: new secret (prefix {info.prefix}, expires "
                f"{_when(info.expires_at)}); the old secret works {old}"
            )
            print("store it now: it is shown only once. Send it as Authorization: Bearer TOKEN")
            print(token)
        elif command == "list":
            _print_tokens(tokens.list())
        else:
            count = tokens.revoke(args.name)
            if not count:
                print(f"slideserver token revoke: no active token {args.name!r}", file=sys.stderr)
                return 1
            print(f"revoked {count} token(s); their sessions end too")
    except TokenError as exc:
        print(f"slideserver token {command}: {exc}", file=sys.stderr)
        return 2
    return 0


def _print_tokens(infos: Sequence[Any]) -> None:
    """Print the tokens as aligned columns (never the tokens themselves)."""
    rows = [("PREFIX", "NAME", "ROLE", "COLLECTIONS", "CREATED", "EXPIRES", "STATE")]
    for t in infos:
        state = t.state()
        if state == "revoked":
            state = f"revoked {t.revoked_at:%Y-%m-%d}"
        rows.append(
            (
                t.prefix,
                t.name,
                t.role,
                ",".join(t.collections) or "-",
                f"{t.created_at:%Y-%m-%d}",
                _when(t.expires_at),
                state,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def cmd_audit(args: argparse.Namespace) -> int:
    import csv

    from slideserver.security.audit import AuditEvent, AuditQuery

    try:
        _check_roots(args, "slideserver audit export [ROOT ...] [--since ...]")
        security = _security(args, holding="audit trail")
    except CliRefusal as exc:
        print(f"slideserver audit export: {exc}", file=sys.stderr)
        return 2
    try:
        audit = security.audit
        assert audit is not None
        try:
            since = datetime.fromisoformat(args.since) if args.since else None
            until = datetime.fromisoformat(args.until) if args.until else None
        except ValueError:
            print("slideserver audit export: --since and --until take ISO dates", file=sys.stderr)
            return 2
        query = AuditQuery(
            subject=args.subject or "",
            slide_id=args.slide or "",
            patient_id=args.patient or "",
            since=since,
            until=until,
        )
        writer = None
        for event in audit.export(query):
            row = event.to_json()
            if args.format == "csv":
                if writer is None:
                    writer = csv.DictWriter(sys.stdout, fieldnames=list(row))
                    writer.writeheader()
                writer.writerow(row)
            else:
                print(json.dumps(row))
        if writer is None and args.format == "csv":
            names = [f.name for f in fields(AuditEvent)]
            csv.DictWriter(sys.stdout, fieldnames=names).writeheader()
    finally:
        security.close()
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from slideserver.catalog.sql import open_catalog
    from slideserver.readers.registry import default_registry

    settings = _settings_from_args(args)
    if not settings.roots:
        print("slideserver index: give at least one folder of slides", file=sys.stderr)
        return 2
    catalog = open_catalog(settings, default_registry())
    try:
        scan = getattr(catalog, "scan", None)
        if scan is None:
            changed = catalog.refresh()
            print(f"indexed: {changed} slides added or changed")
            return 0
        from tqdm import tqdm

        with tqdm(desc="indexing", unit="slide", disable=None) as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.n = done
                bar.refresh()

            report = scan(progress)
        print(
            f"indexed: {report.found} slides found, {report.added} added, {report.changed} "
            f"changed, {report.moved} moved, {report.missing} missing, {report.unreadable} "
            f"unreadable, {report.linked} linked, {len(report.conflicts)} conflicts "
            f"in {report.seconds:.1f} s"
        )
        if settings.watch:
            import time

            print("watching for new and changed slides; Ctrl-C stops", file=sys.stderr)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    finally:
        catalog.close()
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from slideserver.catalog.discovery import discover
    from slideserver.errors import SlideServerError
    from slideserver.models import SlideSource
    from slideserver.readers.registry import default_registry

    path = Path(args.file)
    if not path.exists():
        print(f"slideserver info: {path} does not exist", file=sys.stderr)
        return 2
    registry = default_registry()
    if path.is_dir():
        sources = [f.source for f in discover([path], registry) if f.source.path == path]
        source = sources[0] if sources else SlideSource(path)
    else:
        source = SlideSource(path)
    try:
        with registry.open(source) as reader:
            info = reader.info
            out = {
                "reader": reader.name,
                "format": info.format,
                "vendor": info.vendor,
                "width": info.width,
                "height": info.height,
                "levels": [
                    {
                        "width": lv.width,
                        "height": lv.height,
                        "downsample": round(lv.downsample, 4),
                        "tile": [lv.tile_width, lv.tile_height],
                    }
                    for lv in info.levels
                ],
                "mpp": [info.mpp_x, info.mpp_y],
                "objective_power": info.objective_power,
                "associated": list(info.associated),
                "properties": dict(info.properties),
            }
    except SlideServerError as exc:
        print(f"slideserver info: {exc.code}: {exc.detail}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2))
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    try:
        import skimage  # noqa: F401  (the tissue texture comes from its sample data)
    except ImportError:
        print(
            "slideserver sample needs the samples extra: pip install 'slideserver[samples]'",
            file=sys.stderr,
        )
        return 2
    from slideserver.samples import write_samples

    written = write_samples(Path(args.out), large=args.large)
    for name, path in sorted(written.items()):
        print(f"{name}: {path}")
    return 0


# --- backup and restore (slideserver.ops) ---

BACKUP_USAGE = "slideserver backup DEST [ROOT ...] [--database-url URL]"
RESTORE_USAGE = "slideserver restore SRC [ROOT ...] [--database-url URL]"


def _ops_database_url(args: argparse.Namespace, usage: str) -> str:
    """The catalog URL ``serve`` would use for these arguments (refusing none at all)."""
    from slideserver.db.engine import default_database_url

    logging.getLogger("alembic").setLevel(logging.WARNING)  # its import-time plugin notes
    _check_roots(args, usage)
    settings = _settings_from_args(args)
    if not settings.roots and not settings.database_url:
        raise CliRefusal(f"give the ROOT folders or --database-url that serve uses ({usage})")
    return default_database_url(settings)


def cmd_backup(args: argparse.Namespace) -> int:
    try:
        url = _ops_database_url(args, BACKUP_USAGE)
    except CliRefusal as exc:
        print(f"slideserver backup: {exc}", file=sys.stderr)
        return 2
    from slideserver.ops.backup import create_backup
    from slideserver.ops.errors import BackupError

    try:
        info = create_backup(url, Path(args.dest))
    except BackupError as exc:
        print(f"slideserver backup: {exc}", file=sys.stderr)
        return 1
    manifest = info.manifest
    print(
        f"backup written: {Path(args.dest) / info.path.name} ({manifest.source}, "
        f"{len(manifest.tables)} tables, {sum(manifest.tables.values())} rows, "
        f"{manifest.total_bytes} bytes, {info.seconds:.1f} s)"
    )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    try:
        url = _ops_database_url(args, RESTORE_USAGE)
        if not Path(args.src).is_dir():
            raise CliRefusal(f"{str(args.src)!r} is not a backup folder (usage: {RESTORE_USAGE})")
    except CliRefusal as exc:
        print(f"slideserver restore: {exc}", file=sys.stderr)
        return 2
    from slideserver.ops.backup import restore_backup
    from slideserver.ops.errors import BackupError, CorruptBackup, DatabaseNotEmpty

    source = Path(args.src)
    try:
        restored = restore_backup(source, url)
    except (CorruptBackup, DatabaseNotEmpty) as exc:
        print(f"slideserver restore: {exc}; nothing was restored", file=sys.stderr)
        return 2
    except BackupError as exc:
        print(f"slideserver restore: {exc}", file=sys.stderr)
        return 1
    print(
        f"restored {sum(restored.tables.values())} rows in {len(restored.tables)} tables; "
        "every count matches the manifest"
    )
    return 0


def add_ops_commands(sub: Any, common: Any) -> None:
    """Add ``backup`` and ``restore`` to the command parser."""
    backup = sub.add_parser(
        "backup",
        help="copy the catalog database (catalog, links, LIS messages, tokens, audit trail)",
        usage=BACKUP_USAGE,
    )
    backup.add_argument("dest", type=Path, help="folder the backup folder is written into")
    common(backup)
    backup.set_defaults(func=cmd_backup)
    restore = sub.add_parser(
        "restore",
        help="restore a backup folder into an empty catalog database, checking every count",
        usage=RESTORE_USAGE,
    )
    restore.add_argument("src", type=Path, help="a backup folder written by slideserver backup")
    common(restore)
    restore.set_defaults(func=cmd_restore)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser; every option also has a SLIDESERVER_ variable."""
    parser = argparse.ArgumentParser(prog="slideserver", description=__doc__)
    parser.add_argument("--version", action="version", version=f"slideserver {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("roots", nargs="*", type=Path, help="folders of slides ($SLIDESERVER_ROOTS)")
        p.add_argument("--database-url", help="catalog: sqlite:///PATH or postgresql://...")
        p.add_argument("--filename-pattern", help="regex with named groups for slide names")
        p.add_argument("--log-level", help="debug, info, warning, error")

    serve = sub.add_parser("serve", help="serve slides over HTTP")
    common(serve)
    serve.add_argument("--host", help="address to bind ($SLIDESERVER_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port ($SLIDESERVER_PORT, default 8000)")
    serve.add_argument("--workers", type=int, help="server processes ($SLIDESERVER_WORKERS)")
    serve.add_argument("--redis-url", help="shared tile cache ($SLIDESERVER_REDIS_URL)")
    serve.add_argument("--memory-cache-bytes", type=int, help="in-process cache size")
    serve.add_argument("--threads", type=int, help="threads decoding and encoding tiles")
    serve.add_argument("--public-url", help="base URL used in links given to other systems")
    serve.add_argument("--auth", help="open, tokens or oidc ($SLIDESERVER_AUTH)")
    serve.add_argument(
        "--cors-origins",
        help="origins whose pages may use the image APIs: comma list of scheme://host[:port], "
        "* or none ($SLIDESERVER_CORS_ORIGINS; default * with auth=open, none otherwise)",
    )
    serve.add_argument(
        "--allow-open-non-loopback",
        action="store_true",
        default=None,
        help="allow auth=open on a non-loopback address (everyone sees all patient data)",
    )
    serve.add_argument("--watch", action="store_true", default=None, help="pick up new slides")
    serve.add_argument("--mllp-port", type=int, help="HL7 v2 MLLP listener port (0: none)")
    serve.add_argument(
        "--ssl-certfile", help="TLS certificate chain, PEM ($SLIDESERVER_SSL_CERTFILE)"
    )
    serve.add_argument("--ssl-keyfile", help="TLS private key, PEM ($SLIDESERVER_SSL_KEYFILE)")
    serve.add_argument(
        "--forwarded-allow-ips",
        help="TLS proxy addresses whose X-Forwarded-* headers are trusted "
        "($SLIDESERVER_FORWARDED_ALLOW_IPS)",
    )
    serve.add_argument(
        "--behind-tls-proxy",
        action="store_true",
        default=None,
        help="a TLS proxy is in front: allow plain HTTP on a non-loopback address "
        "($SLIDESERVER_BEHIND_TLS_PROXY)",
    )
    serve.add_argument(
        "--mllp-host", help="address the MLLP listener binds (default 127.0.0.1, not --host)"
    )
    serve.add_argument(
        "--mllp-allow", help="peers that may send MLLP: addresses/networks, e.g. 10.1.2.0/24"
    )
    serve.add_argument("--mllp-tls-certfile", help="MLLP over TLS: certificate (PEM)")
    serve.add_argument("--mllp-tls-keyfile", help="MLLP over TLS: private key (PEM)")
    serve.add_argument(
        "--mllp-tls-client-ca", help="MLLP over TLS: CA whose client certificates are required"
    )
    # issue 13: DICOM storage (STOW-RS, the C-STORE/C-ECHO SCP)
    serve.add_argument("--dicom-store-dir", help="folder STOW-RS and C-STORE store instances in")
    serve.add_argument("--dicom-port", type=int, help="DICOM C-STORE/C-ECHO SCP port (0: none)")
    serve.add_argument("--dicom-host", help="address the DICOM SCP binds (default 127.0.0.1)")
    serve.add_argument("--dicom-ae-title", help="AE title of the SCP (default SLIDESERVER)")
    serve.add_argument("--dicom-allowed-aes", help="calling AE titles that may store, comma list")
    serve.add_argument("--dicom-quiet-seconds", type=float, help="show unfinished slides after")
    serve.set_defaults(func=cmd_serve)

    index = sub.add_parser("index", help="build or refresh the catalog without serving")
    common(index)
    index.add_argument(
        "--watch", action="store_true", default=None, help="keep indexing changes until Ctrl-C"
    )
    index.set_defaults(func=cmd_index)

    token = sub.add_parser("token", help="create, list, rotate and revoke API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    lifetime_help = "how long it is valid: a number with s, m, h or d, or never (default 90d)"
    create = token_sub.add_parser(
        "create", help="create a token; it is printed as the last line", usage=TOKEN_USAGE["create"]
    )
    common(create)
    create.add_argument("--role", required=True, help="admin, pathologist, researcher or lis")
    create.add_argument("--name", required=True, help="unique name (who or what uses it)")
    create.add_argument(
        "--collections", help="comma-separated root folders or path prefixes (researchers)"
    )
    create.add_argument("--expires", default="90d", help=lifetime_help)
    listing = token_sub.add_parser(
        "list", help="list tokens (never the tokens themselves)", usage=TOKEN_USAGE["list"]
    )
    common(listing)
    revoke = token_sub.add_parser(
        "revoke",
        help="revoke a token by name (every secret) or prefix; its sessions end too",
        usage=TOKEN_USAGE["revoke"],
    )
    revoke.add_argument("name", help="the token's name or prefix")
    common(revoke)
    rotate = token_sub.add_parser(
        "rotate",
        help="give a token a new secret; the old one works until the overlap ends",
        usage=TOKEN_USAGE["rotate"],
    )
    rotate.add_argument("name", help="the token's name")
    common(rotate)
    rotate.add_argument(
        "--overlap", default="1d", help="how long the old secret keeps working (default 1d)"
    )
    rotate.add_argument("--expires", default="90d", help="how long the new secret is valid")
    for p in (create, listing, revoke, rotate):
        p.set_defaults(func=cmd_token)

    audit = sub.add_parser("audit", help="the audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    export = audit_sub.add_parser("export", help="write the audit trail, oldest first")
    common(export)
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    export.add_argument("--since", help="ISO date or date-time")
    export.add_argument("--until", help="ISO date or date-time")
    export.add_argument("--subject", help="only this subject (token:NAME, oidc:SUB)")
    export.add_argument("--slide", help="only this slide ID")
    export.add_argument("--patient", help="only this patient ID")
    export.set_defaults(func=cmd_audit)

    info = sub.add_parser("info", help="show what the readers see in one slide")
    info.add_argument("file", help="a slide file, or a folder of DICOM files")
    info.set_defaults(func=cmd_info)

    sample = sub.add_parser("sample", help="write the sample slides")
    sample.add_argument("out", type=Path, help="output folder")
    sample.add_argument("--large", action="store_true", help="also write the 40,000 px slide")
    sample.set_defaults(func=cmd_sample)

    add_ops_commands(sub, common)
    from slideserver.export.command import add_export_command  # issue 17: export

    add_export_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line."""
    args = build_parser().parse_args(argv)
    settings_level = getattr(args, "log_level", None) or os.environ.get(
        ENV_PREFIX + "LOG_LEVEL", "info"
    )
    configure_logging(settings_level)
    quiet_backend_logs()
    result: int = args.func(args)
    return result
