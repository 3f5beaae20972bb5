"""The link service: LIS orders in, cases and patients out, over the catalog's LinkStore.

Routes and the MLLP listener call it; the routes only translate HTTP. Every store call blocks
(one database transaction), so it runs in a worker thread here. A catalog that keeps no case
links (the in-memory one) is found out once, when the service is made: every call then raises
:class:`LinksUnavailable`, the one answer to "this server stores no case links".
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from anyio.to_thread import run_sync

from slideserver.catalog.base import Catalog, SlideQuery, SlideRecord
from slideserver.catalog.cases import (
    ApplyResult,
    CaseOrder,
    CaseView,
    Conflict,
    LinkStore,
    PatientIn,
)
from slideserver.errors import BackendUnavailable
from slideserver.lis.fhir.outbound import specimens_with_container
from slideserver.lis.hl7v2.ack import ERROR, build_ack
from slideserver.lis.hl7v2.apply import Hl7Reply, handle_message, summarize
from slideserver.lis.hl7v2.parse import read_header
from slideserver.lis.parse_threads import run_parse
from slideserver.lis.policy import AccessionPolicy
from slideserver.settings import Settings

log = logging.getLogger("slideserver.lis")

NO_LINKS = "this server's catalog keeps no case links (it has no database)"


class LinksUnavailable(BackendUnavailable):
    """The catalog keeps no case links, so no LIS message can be applied and no case read."""

    code = "links_unavailable"


@dataclass(frozen=True)
class CaseSlides:
    """A case with the catalog records of its slides."""

    case: CaseView
    records: list[SlideRecord]
    linked: bool
    """The LIS sent the case; otherwise only the slides' own evidence names it."""


def accession_candidates(container_id: str) -> list[str]:
    """Accessions a container ID may start with: LIS barcodes are mostly ``{accession}-...``.

    ``S24-01234-A1-1`` -> ``S24-01234-A1``, ``S24-01234``: the longest first, at most three.
    """
    cuts = [m.start() for m in re.finditer(r"(?<=[^-_ ])[-_ ](?=[^-_ ])", container_id)]
    return [container_id[:cut] for cut in reversed(cuts[1:])][:3]


def accession_policy(settings: Settings) -> AccessionPolicy:
    """The accession policy the settings describe; ValueError when one is malformed."""
    return AccessionPolicy.parse(settings.lis_accession_source, settings.lis_missing_accession)


class LinkService:
    """Apply LIS messages and read cases through the catalog's :class:`LinkStore`."""

    def __init__(self, catalog: Catalog, policy: AccessionPolicy | None = None) -> None:
        self.catalog = catalog
        self.policy = policy or AccessionPolicy()
        """Which HL7 v2 order number is the accession, per sender."""
        self._store: LinkStore | None = catalog if isinstance(catalog, LinkStore) else None

    @property
    def available(self) -> bool:
        """Whether the catalog keeps case links."""
        return self._store is not None

    def require(self) -> LinkService:
        """Return this service; raise :class:`LinksUnavailable` when the catalog keeps no links.

        Routes call it first, so that a server without links answers the same whatever the body.
        """
        self.store()
        return self

    def store(self) -> LinkStore:
        """Return the link store; raise :class:`LinksUnavailable` when the catalog is not one."""
        if self._store is None:
            raise LinksUnavailable(NO_LINKS)
        return self._store

    # -- inbound --

    async def apply_order(self, order: CaseOrder, raw: str) -> ApplyResult:
        """Apply a parsed order (JSON or FHIR) and keep its raw message as accepted."""
        store = self.store()
        result = await run_sync(store.apply_order, order)
        await self._record(order.source, raw, "accepted", summarize(result))
        return result

    async def reject(self, source: str, raw: str, detail: str) -> None:
        """Keep a message that could not be parsed, with why (no PHI in ``detail``)."""
        await self._record(source, raw, "rejected", detail)

    async def handle_hl7v2(self, raw: str) -> Hl7Reply:
        """Parse, apply, record and acknowledge one ER7 message."""
        store = self.store()
        return await run_parse(handle_message, raw, store, self.policy)

    async def hl7v2_ack(self, raw: str) -> str:
        """Answer one ER7 message with its ACK (the MLLP listener's handler); AE without links."""
        try:
            reply = await self.handle_hl7v2(raw)
        except LinksUnavailable as exc:
            return build_ack(read_header(raw), ERROR, exc.detail, error_code=207)
        return reply.ack

    async def _record(self, source: str, raw: str, status: str, detail: str) -> None:
        """Keep the raw message; a failure to record is logged, never answered."""
        store = self.store()
        try:
            await run_sync(store.record_message, source, raw, status, detail)
        except Exception as exc:
            log.warning("%s message not recorded: %s", source, type(exc).__name__)

    # -- cases and patients --

    async def case(self, accession: str) -> CaseView | None:
        """Return the case with that accession number, or ``None``."""
        return await run_sync(self.store().get_case, accession)

    async def case_with_slides(self, accession: str) -> CaseSlides | None:
        """Return the case with its slides' records and whether the LIS sent it."""
        found = await run_sync(self.store().case_with_slides, accession)
        return None if found is None else CaseSlides(*found)

    async def cases_of_patient(self, identifier: str) -> list[CaseView]:
        """Return every case of the patient with that MRN."""
        return await run_sync(self.store().cases_of_patient, identifier)

    async def patient(self, identifier: str) -> PatientIn | None:
        """Return the patient with that MRN as the LIS last described them, or ``None``."""
        cases = await self.cases_of_patient(identifier)
        return next(
            (c.patient for c in cases if c.patient and c.patient.identifier == identifier), None
        )

    async def case_of_container(self, container_id: str) -> CaseView | None:
        """Return the case holding a block or slide with that container identifier.

        The accessions the ID starts with are tried first, then the scanned slides whose name or
        path mention the ID are searched for their case link.
        """
        store = self.store()
        accessions = accession_candidates(container_id)
        for accession in accessions:
            case = await run_sync(store.get_case, accession)
            if case is not None and specimens_with_container(case, container_id):
                return case
        page = await run_sync(self.catalog.search, SlideQuery(q=container_id, limit=20))
        for record in page.items:
            link = (record.extra or {}).get("case")
            linked = link.get("accession") if isinstance(link, dict) else None
            if isinstance(linked, str) and linked and linked not in accessions:
                accessions.append(linked)
                case = await run_sync(store.get_case, linked)
                if case is not None and specimens_with_container(case, container_id):
                    return case
        return None

    async def slide(self, slide_id: str) -> SlideRecord | None:
        """Return the catalog record of one slide (for its Endpoints)."""
        self.store()
        return await run_sync(self.catalog.get, slide_id)

    async def conflicts(self, status: str, limit: int, after: int) -> list[Conflict]:
        """Return flagged conflicts (``status`` empty: all), oldest first, IDs above ``after``."""
        store = self.store()
        return await run_sync(lambda: store.conflicts(status, limit, after))


__all__ = [
    "NO_LINKS",
    "CaseSlides",
    "LinkService",
    "LinksUnavailable",
    "accession_candidates",
    "accession_policy",
]
