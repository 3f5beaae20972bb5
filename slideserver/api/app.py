"""The application factory: settings in, ASGI app out. Nothing is built at import time."""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
from anyio.to_thread import run_sync
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from slideserver.api.auth import AuthenticationMiddleware
from slideserver.api.cors import CorsMiddleware, cors_policy
from slideserver.api.drain import Drain
from slideserver.api.errors import EXCEPTION_HANDLERS
from slideserver.api.frames_lane import FramesLane
from slideserver.api.middleware import RejectNulBytesMiddleware, RequestContextMiddleware
from slideserver.api.policy import secure_routes
from slideserver.api.routes import annotations as annotation_routes  # issue 16
from slideserver.api.routes import (
    audit,
    cases,
    deepzoom,
    dicomweb,  # issue 13
    ehr,  # issue 14
    health,
    iiif,
    lis,
    session,
    slides,
)
from slideserver.api.routes import openapi as openapi_routes  # issue 17
from slideserver.api.routes.dicomweb_store import routes as stow_routes
from slideserver.api.routes.reports import routes as report_routes
from slideserver.api.state import AppState
from slideserver.api.tile_lane import TileLane
from slideserver.cache.base import TileCache
from slideserver.cache.memory import MemoryCache
from slideserver.catalog.base import Catalog
from slideserver.dicom.ingest import dicom_roots
from slideserver.dicom.scp import start_dicom
from slideserver.dicom.sources import PacsSources
from slideserver.handles import HandlePool
from slideserver.lis.mllp import MllpServer, allowed_networks, listener_refusal, tls_context
from slideserver.metrics import Metrics
from slideserver.ops.schedule import backup_schedule
from slideserver.readers.base import quiet_backend_logs
from slideserver.readers.registry import ReaderRegistry, default_registry
from slideserver.reports.targets import delivery_targets
from slideserver.security import Security
from slideserver.services.iiif import IIIFService
from slideserver.services.links import LinkService, accession_policy
from slideserver.services.mllp_intake import MllpIntake
from slideserver.services.reports import open_reports
from slideserver.services.single_flight import SingleFlight
from slideserver.services.tiles import TileService
from slideserver.settings import Settings

log = logging.getLogger("slideserver")

STATIC_DIR = Path(__file__).resolve().parent.parent / "static" / "viewer"

CatalogFactory = Callable[[Settings, ReaderRegistry], Catalog]


def default_catalog(settings: Settings, registry: ReaderRegistry) -> Catalog:
    """Return the SQL catalog the settings ask for (SQLite in the first root by default)."""
    from slideserver.catalog.sql import open_catalog

    return open_catalog(settings, registry)


def slide_location(catalog: Catalog, slide_id: str) -> tuple[str, str] | None:
    """Where a slide lies for collection rules: its root folder's name and its relative path."""
    record = catalog.get(slide_id)
    return (record.root.name, record.relpath) if record is not None else None


def slide_subjects(catalog: Catalog, slide_id: str) -> tuple[str | None, str | None] | None:
    """The case (accession) and patient (MRN) a slide is linked to now, for audit rows."""
    record = catalog.get(slide_id)
    case = record.extra.get("case") if record is not None and record.extra else None
    if not isinstance(case, dict):
        return None
    patient = case.get("patient")
    mrn = patient.get("id") if isinstance(patient, dict) else None
    accession = case.get("accession")
    return (str(accession) if accession else None, str(mrn) if mrn else None)


def build_cache(settings: Settings) -> TileCache:
    """Return the tile cache the settings ask for: memory only, or memory in front of Redis."""
    local = MemoryCache(settings.memory_cache_bytes)
    if not settings.redis_url:
        return local
    from slideserver.cache.redis import RedisCache
    from slideserver.cache.tiered import TieredCache

    remote = RedisCache(settings.redis_url, timeout=settings.redis_timeout, ttl=settings.redis_ttl)
    return TieredCache(local, remote)


def freeze_startup_objects() -> None:
    """Exempt everything built at start-up from the cyclic garbage collector.

    The libraries loaded by then (SQLAlchemy, pydantic's FHIR models, pydicom's dictionaries,
    numpy) hold some 200,000 objects; each full collection walked them all, an 80 ms pause every
    few thousand requests that set the 99th percentile latency. Frozen objects are still freed
    by reference counting; only cycles among them are never collected, and start-up leaves none
    worth collecting (they were collected just before).
    """
    gc.collect()
    gc.freeze()


async def start_mllp(
    settings: Settings, links: LinkService, security: Security, metrics: Metrics
) -> MllpServer:
    """Start the HL7 v2 MLLP listener on ``mllp_host:mllp_port``; the lifespan stops it.

    Refuses (ValueError) what ``serve`` refuses: a non-loopback bind without an allow-list or
    client certificates. Each message from an admitted peer goes through :class:`MllpIntake`:
    applied by :meth:`LinkService.handle_hl7v2`, as ``POST /api/lis/hl7v2`` does, and audited.
    """
    refusal = listener_refusal(
        settings.mllp_host,
        settings.mllp_allow,
        settings.mllp_tls_certfile,
        settings.mllp_tls_keyfile,
        settings.mllp_tls_client_ca,
    )
    if refusal:
        raise ValueError(refusal)
    assert security.audit is not None, "the security stores open before the listener starts"
    tls = None
    if settings.mllp_tls_certfile:
        tls = tls_context(
            settings.mllp_tls_certfile, settings.mllp_tls_keyfile, settings.mllp_tls_client_ca
        )
    server = MllpServer(
        MllpIntake(links, security.audit),
        settings.mllp_host,
        settings.mllp_port,
        allow=allowed_networks(settings.mllp_allow, settings.mllp_tls_client_ca),
        tls=tls,
        observe=metrics.observe_mllp,
    )
    await server.start()
    return server


def viewer_routes() -> list[BaseRoute]:
    """Return the viewer's page and asset routes, when the viewer module is present."""
    try:
        from slideserver.api.routes.viewer import viewer_routes as make
    except ImportError:
        return []
    return list(make(STATIC_DIR))


class SlideServerApp(Starlette):
    """Starlette, with Deep Zoom tile URLs answered by the :class:`TileLane` before routing
    (and DICOMweb frames by the :class:`FramesLane`, asked after it).

    Without a lane (``None``) its URLs take the routed endpoint.
    """

    def __init__(
        self, tile_lane: TileLane | None, frames_lane: FramesLane | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.tile_lane = tile_lane
        self.frames_lane = frames_lane  # issue 13

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.tile_lane is not None and self.tile_lane.match(scope):
            scope["app"] = self
            await self.tile_lane(scope, receive, send)
            return
        if self.frames_lane is not None and self.frames_lane.match(scope):  # issue 13
            scope["app"] = self
            await self.frames_lane(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    catalog_factory: CatalogFactory = default_catalog,
    registry: ReaderRegistry | None = None,
    tile_lane: bool = True,
) -> Starlette:
    """Build the ASGI app for ``settings``; shared resources open in the lifespan.

    ``tile_lane=False`` sends tile URLs (and DICOMweb frames) through the router and middleware
    like every other URL: the reference path the tests compare the lanes with (both must answer
    alike).
    """
    quiet_backend_logs()
    settings = dicom_roots(settings)  # issue 13: the DICOM store and PACS listing are roots
    registry = registry or default_registry()
    pacs = PacsSources.from_settings(settings)  # issue 13: slides held in a PACS
    registry = pacs.readers(registry) if pacs is not None else registry
    metrics = Metrics()
    security = Security(settings)
    policy = accession_policy(settings)  # a malformed LIS setting fails here, not per message
    cors = cors_policy(settings)
    report_targets = delivery_targets(settings)  # issue 14: a malformed target fails here
    backups = backup_schedule(settings, metrics)  # None unless SLIDESERVER_BACKUP_DIR is set
    drain = Drain()
    if settings.auth == "open":
        log.warning("OPEN MODE: no authentication, every visitor sees all patient data (demo only)")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        catalog = catalog_factory(settings, registry)
        count = await run_sync(catalog.refresh)
        log.info("catalog ready: %d slides indexed or changed", count)
        security.locate = functools.partial(slide_location, catalog)
        security.subjects_of = functools.partial(slide_subjects, catalog)
        security.coalesce = SingleFlight().run  # issue 15: one session/slide check at a time
        handles = HandlePool(registry, settings.roots, settings.handle_pool_size)
        cache = build_cache(settings)
        service = TileService(settings, catalog, handles, cache)
        links = LinkService(catalog, policy)
        app.state.ehr_pull = ehr_pull = ehr.ehr_pull(settings, links, catalog, metrics)  # issue 14
        app.state.slideserver = AppState(
            settings, catalog, handles, cache, service, metrics, IIIFService(service), links
        )
        await run_sync(security.open)
        # --- issue 16: annotations (the store shares the catalog database) ---
        app.state.annotations = await run_sync(annotation_routes.open_store, settings)
        reports = await run_sync(
            open_reports, settings, catalog, links, service, report_targets, app.state.annotations
        )
        app.state.reports = reports  # issue 14
        mllp = await start_mllp(settings, links, security, metrics) if settings.mllp_port else None
        dicom = await start_dicom(settings, catalog.refresh, security)  # issue 13: store, SCP
        app.state.dicom_intake = dicom.intake if dicom is not None else None
        freeze_startup_objects()
        stop_draining_hook = drain.install(settings.drain_seconds)
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(security.run_flusher)
                if backups is not None:
                    tasks.start_soon(backups.run)
                if ehr_pull is not None:  # issue 14: poll the EHR
                    tasks.start_soon(ehr_pull.run)
                if dicom is not None:
                    tasks.start_soon(dicom.intake.run)
                if pacs is not None:
                    tasks.start_soon(pacs.run, catalog.refresh)
                if reports is not None:  # issue 14: report delivery
                    tasks.start_soon(reports.worker.run)
                try:
                    yield
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            stop_draining_hook()
            if ehr_pull is not None:  # issue 14
                await run_sync(ehr_pull.close)
            if dicom is not None:
                await run_sync(dicom.stop)
            await run_sync(security.close)
            await run_sync(app.state.annotations.close)  # issue 16
            if mllp is not None:
                await mllp.stop()
            await cache.close()
            handles.close()
            catalog.close()

    routes: list[BaseRoute] = [
        *health.routes(),
        *slides.routes(),
        *deepzoom.routes(),
        *iiif.routes(),
        *cases.routes(),
        *lis.routes(),
        *viewer_routes(),
        *audit.routes(),
        *session.routes(),
        # --- issue 13: DICOMweb ---
        *dicomweb.routes(),
        *stow_routes(),
        # --- issue 14: EHR lookup, reports ---
        *ehr.routes(),
        *report_routes(),
        # --- issue 16: annotations ---
        *annotation_routes.routes(),
        # --- issue 17: OpenAPI, API reference ---
        *openapi_routes.routes(STATIC_DIR),
    ]
    # Every route must have a row in the policy table: a new route without one fails here.
    routes = secure_routes(routes, security)
    app = SlideServerApp(
        TileLane(security, metrics, cors) if tile_lane else None,
        FramesLane(security, metrics) if tile_lane else None,  # issue 13
        routes=routes,
        middleware=[
            Middleware(CorsMiddleware, policy=cors),
            Middleware(RequestContextMiddleware, metrics=metrics),
            Middleware(RejectNulBytesMiddleware),
            Middleware(AuthenticationMiddleware, security=security),
        ],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=lifespan,
    )
    app.state.security = security
    app.state.backups = backups
    app.state.drain = drain
    app.state.dicomweb_sources = pacs  # issue 13
    return app
