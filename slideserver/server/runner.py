"""Serving the app with uvicorn: what may be served where, and the uvicorn call itself.

The CLI parses flags into :class:`Settings`; this module decides whether those settings are safe
to serve (open mode, plain HTTP, MLLP and the DICOM SCP off loopback are refused unless stated;
listeners and PACS listing in several worker processes are refused), says how
clients reach the server, and hands the settings to uvicorn's worker processes through the
environment (each worker builds its app with ``slideserver.api.asgi:app_from_env``).
"""

from __future__ import annotations

import ipaddress
import os
import signal
from dataclasses import fields
from pathlib import Path

from slideserver.settings import ENV_PREFIX, Settings


def is_loopback(host: str) -> bool:
    """Tell whether ``host`` is reachable from this machine only (localhost, 127/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def export_env(settings: Settings) -> None:
    """Hand the settings to uvicorn's worker processes through the environment."""
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if f.name == "roots":
            value = os.pathsep.join(str(Path(p).absolute()) for p in value)
        elif isinstance(value, bool):
            value = "1" if value else "0"
        os.environ[ENV_PREFIX + f.name.upper()] = str(value)


def refusal(settings: Settings) -> str | None:
    """Return why ``serve`` must not start with ``settings``, or ``None``."""
    return (
        auth_refusal(settings)
        or transport_refusal(settings)
        or mllp_refusal(settings)
        or dicom_refusal(settings)
        or workers_refusal(settings)
        or cors_refusal(settings)
    )


def statements(settings: Settings) -> list[str]:
    """What the operator is told at start-up: how clients reach the server, and open mode."""
    lines = [transport_statement(settings)]
    if settings.auth == "open":
        lines.append(
            "OPEN MODE - no authentication; every visitor sees every slide and all "
            "patient data. For a local demo only."
        )
    return lines


def run(settings: Settings) -> None:
    """Serve until stopped: uvicorn with the coalescing protocol, workers from the settings."""
    import uvicorn

    from slideserver.server.protocol import CoalescingHttpToolsProtocol

    export_env(settings)
    # uvicorn re-raises SIGTERM after its graceful shutdown: a stop asked for ends with status 0.
    signal.signal(signal.SIGTERM, stopped_as_asked)
    uvicorn.run(
        "slideserver.api.asgi:app_from_env",
        factory=True,
        http=CoalescingHttpToolsProtocol,
        host=settings.host,
        port=settings.port,
        workers=settings.workers if settings.workers > 1 else None,
        log_level=settings.log_level,
        access_log=False,
        ssl_certfile=settings.ssl_certfile or None,
        ssl_keyfile=settings.ssl_keyfile or None,
        forwarded_allow_ips=settings.forwarded_allow_ips or None,
    )


def stopped_as_asked(sig: int, frame: object) -> None:
    """End the process with status 0: it was told to stop, and stopped cleanly."""
    raise SystemExit(0)


def transport_refusal(settings: Settings) -> str | None:
    """Return why ``serve`` must not listen as configured (plain HTTP off loopback...)."""
    cert, key = settings.ssl_certfile, settings.ssl_keyfile
    if bool(cert) != bool(key):
        return "--ssl-certfile and --ssl-keyfile go together: give both, or neither"
    if cert:
        for flag, name in (("--ssl-certfile", cert), ("--ssl-keyfile", key)):
            if not os.access(name, os.R_OK) or not Path(name).is_file():
                return f"{flag}: cannot read {Path(name).name!r}"
        return None
    if is_loopback(settings.host) or settings.behind_tls_proxy or settings.forwarded_allow_ips:
        return None
    return (
        f"refusing plain HTTP on {settings.host}: tokens, session cookies and patient data would "
        "cross the network unencrypted. Give --ssl-certfile and --ssl-keyfile; or, with a TLS "
        "proxy in front, say so with --forwarded-allow-ips ADDRESSES (the proxy's) or "
        "--behind-tls-proxy; or bind 127.0.0.1."
    )


def transport_statement(settings: Settings) -> str:
    """Say how clients reach this server: TLS here, a TLS proxy in front, or loopback only."""
    where = f"{settings.host}:{settings.port}"
    if settings.ssl_certfile:
        return f"TLS on {where} (certificate {Path(settings.ssl_certfile).name})"
    proxy = settings.behind_tls_proxy or settings.forwarded_allow_ips
    trusted = settings.forwarded_allow_ips or "127.0.0.1"
    if proxy:
        return (
            f"plain HTTP on {where} for a TLS proxy in front (X-Forwarded-* trusted from {trusted})"
        )
    return f"plain HTTP on {where}, loopback only"


def auth_refusal(settings: Settings) -> str | None:
    """Return why ``serve`` must not start with these auth settings, or ``None``."""
    if settings.auth not in ("open", "tokens", "oidc"):
        return f"--auth must be open, tokens or oidc, not {settings.auth!r}"
    if settings.auth == "oidc" and not (settings.oidc_issuer and settings.oidc_audience):
        return "auth=oidc needs SLIDESERVER_OIDC_ISSUER and SLIDESERVER_OIDC_AUDIENCE"
    if (
        settings.auth == "open"
        and not is_loopback(settings.host)
        and not settings.allow_open_non_loopback
    ):
        return (
            f"refusing auth=open on {settings.host}: everyone who can reach it would see all "
            "patient data. Use --auth tokens (see `slideserver token create`) or oidc, bind "
            "127.0.0.1, or pass --allow-open-non-loopback for a demo on a trusted network."
        )
    return None


def mllp_refusal(settings: Settings) -> str | None:
    """Return why ``serve`` must not start with these MLLP settings, or ``None``."""
    if not settings.mllp_port:
        return None
    from slideserver.lis.mllp import listener_refusal

    return listener_refusal(
        settings.mllp_host,
        settings.mllp_allow,
        settings.mllp_tls_certfile,
        settings.mllp_tls_keyfile,
        settings.mllp_tls_client_ca,
    )


def dicom_refusal(settings: Settings) -> str | None:
    """Return why ``serve`` must not start the DICOM SCP as configured (off loopback without
    allowed calling AE titles, nowhere to store), or ``None``."""
    if not settings.dicom_port:
        return None
    from slideserver.dicom.scp import scp_refusal

    return scp_refusal(settings)


def workers_refusal(settings: Settings) -> str | None:
    """Return why ``--workers N`` cannot serve these settings, or ``None``.

    Every worker process runs the app's lifespan: each would bind the MLLP and DICOM ports (the
    second fails, or the kernel spreads peers over processes), list the PACS sources and move the
    same staged DICOM files, coordinated by locks that hold within one process only.
    """
    if settings.workers <= 1:
        return None
    single = [
        name
        for name, on in (
            ("--mllp-port", settings.mllp_port),
            ("--dicom-port", settings.dicom_port),
            ("--dicom-store-dir", settings.dicom_store_dir),
            ("SLIDESERVER_DICOMWEB_SOURCES", settings.dicomweb_sources),
        )
        if on
    ]
    if not single:
        return None
    return (
        f"refusing --workers {settings.workers} with {', '.join(single)}: each worker process "
        "would bind the same listener ports, list the same archives and move the same stored "
        "files. Run them in an instance of their own with --workers 1 (its own --port, the same "
        "--database-url); a multi-worker instance for viewers, without them, can serve the DICOM "
        "store's folder as one of its slide folders."
    )


def cors_refusal(settings: Settings) -> str | None:
    """Return why ``--cors-origins`` cannot be used, or ``None``."""
    from slideserver.api.cors import CorsConfigError, parse_origins

    try:
        parse_origins(settings.cors_origins, settings.auth)
    except CorsConfigError as exc:
        return f"--cors-origins: {exc}"
    return None
