"""Typed, frozen server settings; read once by the CLI or ``create_app`` and passed down.

Every field can be set from the environment as ``SLIDESERVER_<FIELD>`` (upper case); lists are
separated by the OS path separator (``:``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_type_hints

ENV_PREFIX = "SLIDESERVER_"


@dataclass(frozen=True)
class Settings:
    """Everything the server can be told."""

    roots: tuple[Path, ...] = ()
    """Folders of slides. Nothing outside them is ever opened."""
    host: str = "127.0.0.1"
    """Address to bind."""
    port: int = 8000
    """Port to bind."""
    workers: int = 1
    """Server processes (uvicorn workers)."""
    database_url: str = ""
    """Catalog database: ``sqlite:///PATH`` or ``postgresql://...``; default ``.slideserver.db``
    in the first root (or the working folder when no root is writable)."""
    redis_url: str = ""
    """Shared tile cache, e.g. ``redis://127.0.0.1:6379/0``; empty means in-process only."""
    redis_timeout: float = 0.25
    """Seconds a Redis operation may take before the cache is bypassed for that request."""
    redis_ttl: int = 7 * 24 * 3600
    """Seconds a tile stays in Redis."""
    memory_cache_bytes: int = 256 * 1024 * 1024
    """Size of the in-process tile cache, in bytes."""
    fingerprint_ttl: float = 1.0
    """Seconds a slide's catalog record and on-disk fingerprint (a stat) are trusted before they
    are looked up again: a file replaced under the same name is noticed within this time. 0 looks
    them up on every request (a thread hop each: as costly as sending a stored tile)."""
    catalog_record_ttl: float = 10.0
    """Seconds a slide's catalog record is trusted while its file is unchanged: between look-ups
    only the file is checked (every ``fingerprint_ttl``); a changed or vanished file asks the
    catalog at once. A slide removed from the catalog stops serving within this time."""
    catalog_outage_grace: float = 300.0
    """Seconds tiles of an already-open slide keep flowing from its last good catalog lookup
    while the catalog database is unreachable (the file is still checked by its fingerprint);
    0: tiles stop with the catalog. Slides not looked up before the outage answer 503. Tokens and
    sessions checked valid within this time stay valid meanwhile (nobody can revoke them then)."""
    read_timeout: float = 10.0
    """Seconds one read of a slide file (opening it, a tile, a region) may take before the
    request answers 504 ``slide_storage_timeout``: a hung network mount answers in bounded time."""
    slide_read_threads: int = 8
    """Worker threads the reads of one slide may hold at once, hung ones included: a slide whose
    storage hangs holds at most this many, and the other slides keep the rest of the pool."""
    database_min_free_bytes: int = 64 * 1024 * 1024
    """Free space the folder of a SQLite catalog must have for ``/readyz`` to report its writes
    as ok (below it: ``disk_full``, before SQLite itself fails)."""
    handle_pool_size: int = 64
    """How many slides stay open at once."""
    threads: int = 0
    """Worker threads decoding and encoding tiles; 0 means 4 per usable core, at least 8. Under
    load a job's round trip through the event loop takes milliseconds while the work takes less
    than one, so more threads than cores keep the cores busy (decoders release the GIL)."""
    io_threads: int = 32
    """Worker threads reading stored tiles that are not in the page cache (waiting on a disk or
    a network file system, not on a CPU), so such reads do not queue behind rendering."""
    jpeg_quality: int = 85
    """Quality of JPEG and WebP tiles we encode ourselves."""
    iiif_max_width: int = 10000
    """Largest IIIF output width."""
    iiif_max_height: int = 10000
    """Largest IIIF output height."""
    iiif_max_area: int = 40_000_000
    """Largest IIIF output area (width x height)."""
    thumbnail_max: int = 2048
    """Largest thumbnail edge a client may ask for."""
    cors_origins: str = ""
    """Origins whose pages may use the image APIs (info.json, IIIF images, ``.dzi``, Deep Zoom
    tiles) with a bearer token: a comma-separated list of ``scheme://host[:port]``, ``*`` (any)
    or ``none``. Empty: ``*`` with ``auth=open``, none otherwise. Cookies never count
    cross-origin."""
    public_url: str = ""
    """Base URL that links handed to other systems use (FHIR, launch links); empty: from request."""
    watch: bool = False
    """Pick up new and changed slides while serving."""
    filename_pattern: str = ""
    """Regex with named groups (accession, part, block, stain) read from slide file names; empty
    means the built-in default."""
    mllp_port: int = 0
    """Port of the HL7 v2 MLLP listener (bound on ``mllp_host``) for LIS orders and ADT; 0: none."""
    mllp_host: str = "127.0.0.1"
    """Address the MLLP listener binds; never follows ``host``. A non-loopback address needs
    ``mllp_allow`` or ``mllp_tls_client_ca`` (MLLP itself has no authentication)."""
    mllp_allow: str = ""
    """Comma-separated peer addresses or networks that may send MLLP messages, e.g.
    ``10.1.2.0/24,127.0.0.1``; empty: loopback only (any address when client certificates are
    required: the certificate decides)."""
    mllp_tls_certfile: str = ""
    """PEM certificate of the MLLP listener; with ``mllp_tls_keyfile``, MLLP runs over TLS."""
    mllp_tls_keyfile: str = ""
    """PEM private key of ``mllp_tls_certfile``."""
    mllp_tls_client_ca: str = ""
    """PEM CA bundle; when set, MLLP peers must present a client certificate it signed."""
    lis_accession_source: str = "filler"
    """Which HL7 v2 order number is a case's accession: ``filler`` (ORC-3, the laboratory's
    number) or ``placer`` (ORC-2), then per-sender overrides by MSH-3 or MSH-4, comma-separated:
    ``filler,COPATH=placer`` (an anatomic-pathology LIS that numbers its own cases in ORC-2)."""
    lis_missing_accession: str = "pending"
    """An order without that number: ``pending`` (kept, matched by its other number when a later
    message of the order brings the accession) or ``refuse`` (answered AE)."""
    auth: str = "open"
    """``open`` (local demo only: an anonymous pathologist-equivalent, everything audited),
    ``tokens`` (API tokens from ``slideserver token create``) or ``oidc`` (bearer JWTs from
    ``oidc_issuer``, plus API tokens)."""
    allow_open_non_loopback: bool = False
    """Let ``serve`` run ``auth=open`` on a non-loopback address (everyone on the network then
    sees all patient data). Off: ``serve`` refuses."""
    ssl_certfile: str = ""
    """TLS certificate chain (PEM) ``serve`` answers HTTPS with; needs ``ssl_keyfile``."""
    ssl_keyfile: str = ""
    """Private key (PEM) of ``ssl_certfile``."""
    forwarded_allow_ips: str = ""
    """Comma-separated proxy addresses whose ``X-Forwarded-*`` headers are trusted (``*``:
    any). Setting it states that a TLS proxy is in front; empty: uvicorn's default, 127.0.0.1."""
    behind_tls_proxy: bool = False
    """State that a TLS-terminating proxy is in front, so ``serve`` may listen in plain HTTP on
    a non-loopback address; session cookies are then always ``Secure``. Off, and without
    certificate or ``forwarded_allow_ips``, ``serve`` refuses a non-loopback address."""
    oidc_issuer: str = ""
    """OIDC issuer URL; tokens must carry exactly this ``iss``. Required with ``auth=oidc``."""
    oidc_audience: str = ""
    """Expected ``aud`` of bearer JWTs (the client ID registered for slideserver). Required with
    ``auth=oidc``."""
    oidc_jwks_url: str = ""
    """Where the issuer's signing keys are; empty: ``jwks_uri`` of
    ``{oidc_issuer}/.well-known/openid-configuration``."""
    oidc_algorithms: str = "RS256"
    """Comma-separated JWT algorithms accepted (pinned here, never read from the token)."""
    oidc_role_claim: str = "slideserver_role"
    """Claim holding the role (a string or a list; dotted paths such as ``realm_access.roles``
    reach nested claims). Tokens without a known role are refused."""
    oidc_collections_claim: str = ""
    """Optional claim listing the collections a researcher may see; empty: all."""
    session_secret: str = ""
    """Key signing the viewer's session cookie; share it between workers and machines. Empty: a
    random key per process (sessions end at restart and do not cross workers)."""
    session_max_age: int = 8 * 3600
    """Seconds a viewer session lasts."""
    session_check_ttl: float = 10.0
    """Seconds a process trusts its last check of a session cookie before asking the database
    again. Logging out ends the session at once in the process that answered the logout, and
    within this time in every other process (a revoked token's sessions too; bearer tokens are
    trusted for ``token_cache_ttl``, 30 s). 0: every cookie request asks the database. At 2 s
    the checks were a fifth of the database work of a shift change's peak."""
    token_cache_ttl: float = 30.0
    """Seconds a verified API token is trusted before the database is asked again (a revoked
    token stops working within this time)."""
    audit_tile_window: int = 300
    """Seconds of tile reads summarized into one audit row per principal and slide."""
    log_level: str = "info"
    """Application log level."""
    backup_dir: str = ""
    """Folder the server backs the catalog database up into (tokens, sessions and the audit
    trail included; not the slide files); empty: no scheduled backups. See ``slideserver
    backup``."""
    backup_interval: int = 86400
    """Seconds between scheduled backups."""
    backup_keep: int = 7
    """How many scheduled backups to keep (the oldest beyond that are deleted)."""
    drain_seconds: float = 0.0
    """Seconds a process keeps serving after SIGTERM while ``/readyz`` answers 503 ``draining``,
    so a load balancer takes it out of rotation before it stops accepting connections."""

    # --- DICOM: DICOMweb, STOW, DIMSE, PACS sources (issue 13) ---
    dicom_store_dir: str = ""
    """Folder STOW-RS and C-STORE store DICOM WSI instances in (one folder per slide scan,
    indexed as a slide root); empty: storing is off (STOW-RS answers 404, no C-STORE SCP)."""
    dicom_stow_max_bytes: int = 512 * 1024 * 1024
    """Largest STOW-RS request body, in bytes. The body is held in memory while it is split and
    stored (a few times its size at the peak): send larger instances one request each."""
    dicom_quiet_seconds: float = 60.0
    """Seconds after its last instance arrived that a slide whose pyramid does not reach a
    one-tile level is shown anyway (a level missing frames is never shown)."""
    dicom_port: int = 0
    """Port of the DICOM C-STORE/C-ECHO SCP (bound on ``dicom_host``); 0: none. Needs
    ``dicom_store_dir``."""
    dicom_host: str = "127.0.0.1"
    """Address the DICOM SCP binds; never follows ``host``. A non-loopback address needs
    ``dicom_allowed_aes`` (DICOM itself has no authentication)."""
    dicom_ae_title: str = "SLIDESERVER"
    """AE title of the SCP; associations calling another title are rejected."""
    dicom_allowed_aes: str = ""
    """Comma-separated calling AE titles that may associate (scanners, PACS); empty: any
    calling AE, allowed only while the SCP listens on loopback."""
    dicomweb_sources: str = ""
    """DICOMweb archives (PACS) whose slides are served too: comma-separated roots, each
    ``https://user:password@host/dicom-web`` (basic) or ``https://host/dicom-web;bearer=TOKEN``."""
    dicomweb_sources_dir: str = ""
    """Folder listing the PACS slides (one small pointer file per slide; a slide root). Required
    with ``dicomweb_sources``."""
    dicomweb_sources_interval: float = 300.0
    """Seconds between listings of the DICOMweb archives (new slides appear, gone ones go)."""

    # --- EHR pull, reports and their delivery (issue 14) ---
    ehr_fhir_url: str = ""
    """The EHR's FHIR R4 base URL to pull orders and patients from; empty: no pull."""
    ehr_auth: str = "none"
    """How the pull authenticates to the EHR: ``none``, ``bearer`` (``ehr_token``) or ``smart``
    (SMART Backend Services: ``ehr_client_id``, ``ehr_token_url``, ``ehr_private_key_file``)."""
    ehr_token: str = ""
    """The static bearer token sent to the EHR (``ehr_auth=bearer``)."""
    ehr_client_id: str = ""
    """The SMART Backend Services client ID registered at the EHR (``ehr_auth=smart``)."""
    ehr_token_url: str = ""
    """The EHR's OAuth token endpoint (``ehr_auth=smart``)."""
    ehr_private_key_file: str = ""
    """PEM file of the private key (RS384) that signs the client assertion (``ehr_auth=smart``)."""
    ehr_scope: str = "system/ServiceRequest.read system/Patient.read system/Specimen.read"
    """The scopes asked for with SMART Backend Services."""
    ehr_poll_seconds: float = 60.0
    """Seconds between polls of the EHR for changed orders and patients."""
    ehr_page_size: int = 50
    """Resources asked for per page of a poll (``_count``)."""
    ehr_timeout: float = 30.0
    """Seconds one request to the EHR may take before it counts as a failure."""
    reports_fhir_url: str = ""
    """FHIR base URL signed reports are sent to as DiagnosticReports (the EHR); empty: none."""
    reports_fhir_token: str = ""
    """Static bearer token for ``reports_fhir_url``; empty: no Authorization header."""
    reports_document_reference: bool = False
    """Also send each signed version as a DocumentReference (the PDF) to ``reports_fhir_url``."""
    reports_identifier_system: str = "urn:slideserver:report"
    """System of the report identifier, by which deliveries update rather than duplicate."""
    lis_mllp_url: str = ""
    """``mllp://HOST:PORT`` of the LIS that receives signed reports as ORU^R01; empty: none."""
    reports_retry_seconds: float = 5.0
    """First wait before a failed delivery is tried again (doubled each time, at most 1 h)."""
    reports_max_attempts: int = 20
    """Attempts before a delivery is given up (an admin can retry it afterwards)."""
    reports_send_timeout: float = 30.0
    """Seconds a delivery may take (connect, send, answer) before it counts as failed."""

    # --- annotations (issue 16) ---
    annotation_classes: str = ""
    """The lab's own annotation classes, comma-separated (``tumour,stroma,...``); empty: the
    built-in list (tumour, stroma, necrosis, mitosis, margin and QuPath's default classes).
    An annotation's class must be one of them (compared without case)."""
    annotation_max_body: int = 128 * 1024 * 1024
    """Largest annotation upload or import, in bytes (100,000 features fit); larger: 413."""

    # --- researchers: OpenAPI, export (issue 17) ---

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``SLIDESERVER_*`` variables, then apply explicit overrides."""
        environ = os.environ if environ is None else environ
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(hints[f.name], raw)
        settings = cls(**values)
        clean = {k: v for k, v in overrides.items() if v is not None}
        if "roots" in clean:
            clean["roots"] = tuple(Path(p) for p in clean["roots"])
        return replace(settings, **clean)

    @property
    def thread_count(self) -> int:
        return self.threads or max(8, 4 * usable_cores())


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity: ``taskset``, containers' cpusets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _parse(kind: Any, raw: str) -> Any:
    if kind is bool:
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if kind is int:
        return int(raw)
    if kind is float:
        return float(raw)
    if kind == tuple[Path, ...]:
        return tuple(Path(p) for p in raw.split(os.pathsep) if p)
    return raw


def field_docs() -> dict[str, str]:
    """Return each field's environment variable name with its default, for the CLI's help."""
    return {f.name: ENV_PREFIX + f.name.upper() for f in fields(Settings)}


__all__ = ["ENV_PREFIX", "Settings", "field", "field_docs"]
