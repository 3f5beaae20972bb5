"""Liveness, readiness and metrics."""

from __future__ import annotations

import logging

import anyio
from anyio.to_thread import run_sync
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from slideserver import __version__
from slideserver.api.openapi import Reply, json_reply, operation
from slideserver.api.state import state_of
from slideserver.catalog.base import Catalog
from slideserver.db.errors import DatabaseReadOnly
from slideserver.errors import InsufficientStorage
from slideserver.ops.schedule import BackupSchedule
from slideserver.reports.outbox import Outbox

log = logging.getLogger(__name__)

CATALOG_TIMEOUT = 2.0
"""Seconds the catalog has to answer a readiness probe before it counts as unavailable."""


READINESS = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"enum": ["ok", "degraded", "unavailable", "draining"]},
        "checks": {"type": "object", "additionalProperties": {"type": "string"}},
        "details": {"type": "object"},
    },
}


@operation(
    "Liveness: the process answers",
    tag="health",
    replies={
        200: json_reply(
            "Alive",
            {
                "type": "object",
                "required": ["status", "version"],
                "properties": {"status": {"const": "ok"}, "version": {"type": "string"}},
            },
        )
    },
)
async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok", "version": __version__})


async def catalog_answers(catalog: Catalog, timeout: float = CATALOG_TIMEOUT) -> bool:
    """Ask the catalog, in a worker thread, to answer within ``timeout`` seconds.

    A hung database leaves its thread behind (abandoned, not killed) while the probe answers
    in time; the connection pool's own timeouts end that thread.
    """
    try:
        with anyio.fail_after(timeout):
            await run_sync(catalog.ping, abandon_on_cancel=True)
    except TimeoutError:
        log.warning("catalog did not answer the readiness probe within %.1fs", timeout)
        return False
    except Exception as exc:  # any failure to answer is "not ready", never a 500
        log.warning("catalog unavailable for the readiness probe (%s)", type(exc).__name__)
        return False
    return True


async def catalog_writes(
    catalog: Catalog, min_free_bytes: int, timeout: float = CATALOG_TIMEOUT
) -> str:
    """Tell whether catalog writes would succeed now: ``ok``, ``read_only`` or ``disk_full``.

    Catalogs without a database (no ``check_writable``) always answer ``ok``.
    """
    check = getattr(catalog, "check_writable", None)
    if check is None:
        return "ok"
    try:
        with anyio.fail_after(timeout):
            await run_sync(check, min_free_bytes, abandon_on_cancel=True)
    except InsufficientStorage:
        log.warning("catalog writes fail: the database's disk is full")
        return "disk_full"
    except TimeoutError:
        log.warning("catalog write probe did not answer within %.1fs", timeout)
        return "unavailable"
    except DatabaseReadOnly:
        log.warning("catalog writes fail: the database is read-only")
        return "read_only"
    except Exception as exc:  # any failure to answer is "not writable", never a 500
        log.warning("catalog write probe failed (%s)", type(exc).__name__)
        return "unavailable"
    return "ok"


async def report_deliveries(outbox: Outbox, timeout: float = CATALOG_TIMEOUT) -> str:
    """The report outbox's check (:meth:`Outbox.check`), ``unavailable`` if it cannot say."""
    try:
        with anyio.fail_after(timeout):
            return await run_sync(outbox.check, abandon_on_cancel=True)
    except Exception as exc:  # TimeoutError too: a readiness probe never answers 500
        log.warning("report outbox probe failed (%s)", type(exc).__name__)
        return "unavailable"


@operation(
    "Readiness: the catalog answers (cache, writes, backups, EHR, report deliveries reported)",
    tag="health",
    replies={
        200: json_reply("Ready (status ok or degraded)", READINESS),
        503: json_reply("Not ready: the catalog does not answer, or draining", READINESS),
    },
)
async def readyz(request: Request) -> Response:
    """Take this process out of rotation (503) when it cannot find slides or is stopping."""
    if request.app.state.drain.draining:
        # SIGTERM received: still answering, but take this process out of rotation.
        return JSONResponse({"status": "draining"}, status_code=503)
    state = state_of(request)
    catalog_ok = await catalog_answers(state.catalog)
    cache_ok = await state.cache.healthy()
    checks = {
        "catalog": "ok" if catalog_ok else "unavailable",
        "cache": "ok" if cache_ok else "degraded",
    }
    body: dict[str, object] = {"checks": checks}
    backups: BackupSchedule | None = getattr(request.app.state, "backups", None)
    if backups is not None:
        checks["backup"] = backups.check()
        last = backups.last
        body["details"] = {"backup": last.to_json() if last is not None else None}
    ehr_pull = getattr(request.app.state, "ehr_pull", None)  # issue 14: the EHR pull
    if ehr_pull is not None:
        checks["ehr"] = ehr_pull.check()
    reports = getattr(request.app.state, "reports", None)  # issue 14: signed-report deliveries
    if reports is not None and reports.targets and catalog_ok:  # no targets: nothing to send
        checks["reports"] = await report_deliveries(reports.outbox)
    if not catalog_ok:
        # Without the catalog no slide can be found: take this process out of rotation.
        return JSONResponse({"status": "unavailable", **body}, status_code=503)
    writes = await catalog_writes(state.catalog, state.settings.database_min_free_bytes)
    if writes != "ok":
        checks["catalog_writes"] = writes
    # Ready, but say so: a degraded cache still serves tiles from the source; a catalog that
    # cannot be written still serves reads and tiles (writes and audited requests answer
    # 503/507); a failing backup loses nothing yet; an EHR that cannot be polled delays orders;
    # a given-up report delivery waits for an admin's retry.
    failing = [k for k in ("backup", "ehr", "reports") if checks.get(k, "ok").startswith("failing")]
    degraded = not cache_ok or writes != "ok" or bool(failing)
    return JSONResponse({"status": "degraded" if degraded else "ok", **body}, status_code=200)


@operation(
    "Prometheus metrics",
    tag="health",
    replies={200: Reply("Prometheus text format 0.0.4", {"text/plain": {"type": "string"}})},
)
async def metrics(request: Request) -> Response:
    state = state_of(request)
    stats = state.cache.stats()
    extra: dict[str, float] = {
        "slideserver_open_slides": float(len(state.handles)),
        "slideserver_memory_cache_bytes": float(stats.memory_bytes),
        "slideserver_memory_cache_hits": float(stats.memory_hits),
        "slideserver_memory_cache_misses": float(stats.memory_misses),
    }
    return PlainTextResponse(
        state.metrics.render(extra), media_type="text/plain; version=0.0.4; charset=utf-8"
    )


def routes() -> list[Route]:
    """Return the health and metrics routes."""
    return [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
