"""The EHR pull: poll the EHR for changed patients and orders, apply them as pushed orders are.

Every ``ehr_poll_seconds`` one process of the deployment (the holder of a lease in the catalog
database) asks the EHR what changed since its cursors: Patients first (corrections and merges,
so that an order moved to the survivor of a merge finds its case's patient already merged),
then ServiceRequests with their Patients, Specimens and Encounters. Each page is applied through
the same :class:`LinkService` as pushed orders (patient, case, specimens, late binding; conflicts
to ``/api/reconcile``), and only then does the cursor move past it. A request that fails is
retried with backoff; a poll that still fails leaves the cursors where they are, says why on
``/readyz`` and in the metrics, and is tried again at the next interval.

``lookup`` asks for one accession at once (``POST /api/ehr/lookup``, or the scanner finding a
slide of an accession the catalog does not know), without touching the cursors.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

from anyio import sleep
from anyio.to_thread import run_sync
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.servicerequest import ServiceRequest

from slideserver.catalog.base import Catalog
from slideserver.catalog.cases import EhrStateStore
from slideserver.errors import BackendUnavailable, NotFound, SlideServerError
from slideserver.lis.ehr.poll import (
    ORDER_INCLUDES,
    Included,
    matches,
    order_of,
    page_cursor,
    patient_change,
    search_params,
)
from slideserver.lis.ehr.source import EhrUnavailable, FhirSource, Params, next_link
from slideserver.metrics import Metrics
from slideserver.services.links import LinkService
from slideserver.settings import Settings

log = logging.getLogger("slideserver.ehr")

SOURCE = "ehr"
BACKOFF = (0.5, 1.0, 2.0)
"""Seconds waited before each retry of a failed request to the EHR."""
LOOKUP_WAKE = 1.0
"""Seconds at most between looks at the queue of accessions the scanner asked about."""

T = TypeVar("T")


class LeaseLost(Exception):
    """Another process took the poll lease over while this one was polling."""


class EhrPullUnavailable(BackendUnavailable):
    """The catalog keeps no pull state (the in-memory catalog): the pull cannot run."""

    code = "ehr_pull_unavailable"


class EhrNotConfigured(NotFound):
    """No EHR is configured: there is nothing to look an accession up in."""

    code = "ehr_not_configured"


@dataclass(frozen=True)
class PageReport:
    """What one applied page did (counts only: no PHI)."""

    orders: int = 0
    rejected: int = 0
    linked_slides: int = 0
    conflicts: int = 0
    patients: int = 0


@dataclass(frozen=True)
class LookupResult:
    """What a lookup of one accession found and applied."""

    accession: str
    found: bool
    report: PageReport


class EhrPull:
    """Poll one EHR and apply what it says through the link service."""

    def __init__(
        self,
        client: FhirSource,
        links: LinkService,
        state: EhrStateStore,
        metrics: Metrics,
        *,
        poll_seconds: float = 60.0,
        page_size: int = 50,
        backoff: tuple[float, ...] = BACKOFF,
        owner: str | None = None,
        includes: tuple[str, ...] = ORDER_INCLUDES,
    ) -> None:
        self.client = client
        self.links = links
        self.state = state
        self.metrics = metrics
        self.poll_seconds = poll_seconds
        self.page_size = page_size
        self.backoff = backoff
        self.includes = includes
        """What orders are asked with (``_include``); whatever is not included is read."""
        self.owner = owner or f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.failure = ""
        """Why the last poll failed (no PHI); empty when it succeeded."""
        self.last_success: datetime | None = None
        self._asked: queue.SimpleQueue[str] = queue.SimpleQueue()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        client: FhirSource,
        links: LinkService,
        catalog: Catalog,
        metrics: Metrics,
    ) -> EhrPull:
        """The pull the settings ask for; EhrPullUnavailable when the catalog keeps no state."""
        if not isinstance(catalog, EhrStateStore) or not links.available:
            raise EhrPullUnavailable("the EHR pull needs the SQL catalog (it keeps the cursors)")
        return cls(
            client,
            links,
            catalog,
            metrics,
            poll_seconds=settings.ehr_poll_seconds,
            page_size=settings.ehr_page_size,
        )

    def close(self) -> None:
        try:
            self.state.release_ehr_lease(self.owner)
        except Exception as exc:  # shutting down: the lease expires by itself
            log.warning("EHR poll lease not released (%s)", type(exc).__name__)
        self.client.close()

    # -- health --

    def check(self) -> str:
        """The ``/readyz`` check: ``ok`` or ``failing: <reason>``."""
        return f"failing: {self.failure}" if self.failure else "ok"

    # -- the schedule --

    async def run(self) -> None:
        """Poll every ``poll_seconds`` and look asked accessions up in between (a lifespan task)."""
        while True:
            await self.poll_once()
            waited = 0.0
            while waited < self.poll_seconds:
                await self.lookup_asked()
                step = min(LOOKUP_WAKE, self.poll_seconds - waited)
                await sleep(step)
                waited += step

    def ask(self, accession: str) -> None:
        """Queue a lookup of ``accession`` (thread-safe: the scanner calls it from its threads)."""
        self._asked.put(accession)

    async def lookup_asked(self) -> None:
        """Look up the accessions asked about since the last time (each once; known ones not)."""
        seen: set[str] = set()
        while not self._asked.empty():
            accession = self._asked.get_nowait()
            if accession in seen:
                continue
            seen.add(accession)
            try:
                if not await run_sync(self.links.store().has_case, accession):
                    await self.lookup(accession)
            except SlideServerError as exc:  # the EHR or the catalog: the next poll catches up
                log.warning("EHR lookup asked by the scanner failed: %s", exc.detail)
            except Exception:  # never let a lookup take the server down
                log.exception("EHR lookup asked by the scanner failed")

    async def poll_once(self) -> bool:
        """One poll (Patients, then ServiceRequests); False when another process holds the lease
        or the poll failed (the reason is in :attr:`failure`)."""
        try:
            if not await run_sync(self.state.take_ehr_lease, self.owner, self._lease_seconds):
                log.debug("another process polls the EHR")
                self.failure = ""  # the poller's /readyz speaks for the EHR, not ours
                return False
            await self._pull("Patient", (), self._apply_patients)
            await self._pull("ServiceRequest", self.includes, self._apply_orders)
        except LeaseLost:
            log.warning("EHR poll lease lost to another process; this poll stops")
            return False
        except SlideServerError as exc:
            self._failed(exc.detail)
            return False
        except Exception as exc:  # never let the pull take the server down; say what it was
            log.exception("EHR poll failed")
            self._failed(f"unexpected error ({type(exc).__name__})")
            return False
        self.failure = ""
        self.last_success = datetime.now(UTC)
        return True

    @property
    def _lease_seconds(self) -> float:
        """How long the lease outlives a silent holder: two intervals and a minute."""
        return self.poll_seconds * 2 + 60

    def _failed(self, reason: str) -> None:
        self.failure = reason
        self.metrics.observe_ehr("poll_failed")
        log.warning("EHR poll failed; cursors unmoved: %s", reason)

    async def _pull(
        self,
        rtype: str,
        includes: tuple[str, ...],
        apply: Callable[[Bundle], Awaitable[PageReport]],
    ) -> None:
        """Follow the pages of ``rtype`` changed since its cursor; move it after each page."""
        cursor = await run_sync(self.state.ehr_cursor, rtype)
        params = search_params(cursor, self.page_size, includes)
        async for bundle in self._pages(self.client.url(rtype), params):
            await apply(bundle)
            self.metrics.observe_ehr("page")
            newest = page_cursor(matches(bundle, rtype), cursor)
            if newest and newest != cursor:
                await run_sync(self.state.set_ehr_cursor, rtype, newest)
                cursor = newest
            if not await run_sync(self.state.take_ehr_lease, self.owner, self._lease_seconds):
                raise LeaseLost  # another process took over (ours expired): it goes on from here

    async def _pages(self, url: str, params: Params) -> AsyncIterator[Bundle]:
        """The pages of a search, along ``Bundle.link[next]`` (a link seen before ends it as a
        fault: a server sending us in circles would otherwise hold the poll forever)."""
        seen: set[str] = set()
        query: Params | None = params
        next_url: str | None = url
        while next_url is not None:
            bundle = await self._retrying(partial(self.client.search, next_url, query))
            yield bundle
            seen.add(next_url)
            next_url, query = next_link(bundle), None
            if next_url in seen:
                raise EhrUnavailable("the EHR's next page links back to a page already read")

    async def _retrying(self, call: Callable[[], T]) -> T:
        """Call the EHR (in a worker thread), retrying with backoff; the last failure raises."""
        for delay in (*self.backoff, None):
            try:
                return await run_sync(call)
            except EhrUnavailable as exc:
                self.metrics.observe_ehr("request_failed")
                if delay is None:
                    raise
                log.info("EHR request failed (%s); retrying in %.1f s", exc.detail, delay)
                await sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _apply_orders(self, bundle: Bundle) -> PageReport:
        """Apply every ServiceRequest of a page: merges first, then the order (or its refusal)."""
        included = Included.of(bundle, self.client)
        store = self.links.store()
        orders = rejected = linked = conflicts = 0
        for request in matches(bundle, "ServiceRequest"):
            assert isinstance(request, ServiceRequest)
            pulled = await self._retrying(partial(order_of, request, included))
            for survivor, merged in pulled.merges:
                if await run_sync(store.merge_patients, survivor, merged, SOURCE):
                    self.metrics.observe_ehr("patient_merged")
            if pulled.order is None:
                await self.links.reject(SOURCE, pulled.raw, f"{pulled.reference}: {pulled.error}")
                self.metrics.observe_ehr("order_rejected")
                rejected += 1
                continue
            result = await self.links.apply_order(pulled.order, pulled.raw)
            self.metrics.observe_ehr("order_applied")
            orders += 1
            linked += len(result.linked_slides)
            conflicts += len(result.conflicts)
        return PageReport(orders, rejected, linked, conflicts)

    async def _apply_patients(self, bundle: Bundle) -> PageReport:
        """Apply every changed Patient of a page: a merge, else corrected demographics."""
        included = Included.of(bundle, self.client)
        store = self.links.store()
        count = 0
        for resource in matches(bundle, "Patient"):
            assert isinstance(resource, Patient)
            change = await self._retrying(partial(patient_change, resource, included))
            if change.patient is None:
                await self.links.reject(SOURCE, change.raw, f"{change.reference}: {change.error}")
                continue
            if change.survivor is not None:
                known = await run_sync(
                    store.merge_patients, change.survivor, change.patient.identifier, SOURCE
                )
                outcome = "patient_merged"
            else:
                known = await run_sync(store.update_patient, change.patient, SOURCE)
                outcome = "patient_updated"
            if known:  # a patient we never had an order for is none of our business
                await run_sync(store.record_message, SOURCE, change.raw, "accepted", outcome)
                self.metrics.observe_ehr(outcome)
                count += 1
        return PageReport(patients=count)

    # -- on demand --

    async def lookup(self, accession: str) -> LookupResult:
        """Ask the EHR for the order of ``accession`` now and apply it; cursors untouched."""
        self.metrics.observe_ehr("lookup")
        params = [("identifier", accession), *(("_include", i) for i in self.includes)]
        found = False
        total = PageReport()
        async for bundle in self._pages(self.client.url("ServiceRequest"), params):
            found |= bool(matches(bundle, "ServiceRequest"))
            page = await self._apply_orders(bundle)
            total = PageReport(
                total.orders + page.orders,
                total.rejected + page.rejected,
                total.linked_slides + page.linked_slides,
                total.conflicts + page.conflicts,
            )
        return LookupResult(accession, found, total)


__all__ = ["EhrNotConfigured", "EhrPull", "EhrPullUnavailable", "LookupResult", "PageReport"]
