"""The report service: what the report routes call, over the report store, cases and tiles.

It checks that the case exists and that figures show slides of that case, renders the figures
for the PDF through the tile service (the slide region at print resolution, its scale from the
slide's MPP), signs and amends (the PDF is made first, then stored with the signed version and
its outbox rows in one transaction), and runs the outbox worker that delivers signed versions
to the configured targets. Every store call blocks, so it runs in a worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from anyio.to_thread import run_sync

from slideserver.catalog.cases import CaseView
from slideserver.db.engine import now
from slideserver.errors import NotFound
from slideserver.imaging.regions import read_scaled_region
from slideserver.reports.model import (
    AMENDMENTS,
    DRAFT,
    FINAL,
    Figure,
    InvalidReport,
    ReportBody,
    ReportVersion,
    parse_body,
)
from slideserver.reports.outbox import Claim, Outbox, OutboxWorker, Outgoing, Target
from slideserver.reports.pdf import RenderedFigure, build_pdf, figure_pixels
from slideserver.reports.store import ReportNotSigned, ReportSigned, ReportStore
from slideserver.services.links import LinkService
from slideserver.services.tiles import TileService
from slideserver.settings import Settings

log = logging.getLogger("slideserver.reports")

MAX_REASON = 1000


class ReportCaseNotFound(NotFound):
    """No case with that accession number to write a report for."""

    code = "case_not_found"


class ReportService:
    """Reports of cases: drafts, signing, amendments, PDFs and their delivery."""

    def __init__(
        self,
        store: ReportStore,
        links: LinkService,
        tiles: TileService,
        targets: Sequence[Target],
        settings: Settings,
    ) -> None:
        self.store = store
        self.links = links
        self.tiles = tiles
        self.targets = list(targets)
        self.outbox = Outbox(store.engine, store.writer)
        self.worker = OutboxWorker(
            self.outbox,
            self.targets,
            self._load,
            retry_base=settings.reports_retry_seconds,
            max_attempts=settings.reports_max_attempts,
            send_timeout=settings.reports_send_timeout,
        )

    # -- reading --

    async def case(self, accession: str) -> CaseView:
        """The case a report is about; 404 when the catalog knows none."""
        case = await self.links.case(accession)
        if case is None:
            raise ReportCaseNotFound(f"no case with accession {accession!r}")
        return case

    async def case_of(self, version: ReportVersion) -> CaseView | None:
        """The case of a report as the catalog knows it now (None when it was removed)."""
        return await self.links.case(version.accession)

    async def get(self, report_id: str, version: int | None = None) -> ReportVersion:
        return await run_sync(self.store.get, report_id, version)

    async def list_case(self, accession: str) -> list[ReportVersion]:
        await self.case(accession)
        return await run_sync(self.store.list_case, accession)

    # -- drafts --

    async def create(
        self, accession: str, data: Any, author: str, identifier: str | None
    ) -> tuple[ReportVersion, bool]:
        """Create a report with a draft (a repeat with the same identifier returns the first)."""
        case = await self.case(accession)
        body = parse_body(data)
        self._check_figures(case, body)
        return await run_sync(self.store.create, case.accession, body, author, identifier)

    async def update(self, report_id: str, data: Any, etag: str) -> ReportVersion:
        """Replace a draft's fields given in ``data`` (the others are kept)."""
        current = await self.get(report_id)
        if current.status != DRAFT:
            raise ReportSigned(f"report {report_id} is {current.status}: amend it instead")
        body = parse_body(data, current.body)
        self._check_figures(await self.case(current.accession), body)
        return await run_sync(self.store.update_draft, report_id, body, etag)

    # -- signing --

    async def sign(self, report_id: str, signer: str, etag: str | None) -> ReportVersion:
        """Sign the draft as it is now (or as ``etag`` names it); queue its deliveries."""
        current = await self.get(report_id)
        if current.status != DRAFT:
            raise ReportSigned(f"report {report_id} version {current.version} is signed")
        if etag is not None:
            self.store.check_draft(current, etag)
        signed_at = now()
        signed = replace(current, status=FINAL, signer=signer, signed_at=signed_at)
        pdf = await self.render_pdf(signed)
        version = await run_sync(
            lambda: self.store.sign(
                report_id, current.revision, signer, signed_at, pdf, self.target_names
            )
        )
        self.worker.wake()
        return version

    async def amend(self, report_id: str, data: Any, signer: str) -> ReportVersion:
        """Add a signed ``amended`` or ``corrected`` version; queue its deliveries."""
        current = await self.get(report_id)
        if current.status == DRAFT:
            raise ReportNotSigned("only a signed report can be amended; edit and sign the draft")
        if not isinstance(data, dict):
            raise InvalidReport("an amendment must be a JSON object")
        status = data.get("status", "amended")
        if status not in AMENDMENTS:
            raise InvalidReport("status must be amended or corrected")
        reason = data.get("reason", "")
        if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
            raise InvalidReport(f"an amendment needs a reason (1 to {MAX_REASON} characters)")
        fields = {k: v for k, v in data.items() if k not in ("status", "reason")}
        body = parse_body(fields, current.body)
        self._check_figures(await self.case(current.accession), body)
        signed_at = now()
        amended = replace(
            current,
            version=current.version + 1,
            status=status,
            body=body,
            reason=reason,
            signer=signer,
            signed_at=signed_at,
            deliveries=(),
        )
        pdf = await self.render_pdf(amended)
        version = await run_sync(
            lambda: self.store.amend(
                report_id,
                current.version,
                status,
                body,
                reason,
                signer,
                signed_at,
                pdf,
                self.target_names,
            )
        )
        self.worker.wake()
        return version

    async def retry(self, report_id: str) -> int:
        """Make a report's failing and given-up deliveries due now; return how many."""
        await self.get(report_id)
        count = await run_sync(self.outbox.retry, report_id)
        self.worker.wake()
        return count

    @property
    def target_names(self) -> list[str]:
        return [t.name for t in self.targets]

    # -- the PDF --

    async def pdf(self, report_id: str, version: int | None = None) -> tuple[ReportVersion, bytes]:
        """The signed PDF of a version, exactly as delivered; a draft's preview, made now."""
        found = await self.get(report_id, version)
        if found.status != DRAFT:
            stored = await run_sync(self.store.pdf, report_id, found.version)
            if stored is not None:
                return found, stored
        return found, await self.render_pdf(found)

    async def render_pdf(self, version: ReportVersion) -> bytes:
        case = await self.case_of(version)
        figures = [await self._render(figure) for figure in version.body.figures]
        return await run_sync(build_pdf, version, case, figures)

    async def _render(self, figure: Figure) -> RenderedFigure:
        """The figure's slide region at print resolution, with its µm per pixel."""
        view = await self.tiles.view(figure.slide_id)
        region = figure.region
        info = view.info
        if region.x >= info.width or region.y >= info.height:
            raise InvalidReport(f"a figure's region lies outside slide {figure.slide_id}")
        width, height = figure_pixels(region.width, region.height)
        # Never upsample past the slide's own resolution: a tiny region prints smaller.
        if width > region.width:
            width, height = region.width, region.height
        image = await self.tiles.with_reader(
            view,
            lambda reader: read_scaled_region(
                reader, region.x, region.y, region.width, region.height, width, height
            ),
        )
        mpp = info.mpp_x
        um_per_pixel = mpp * region.width / width if mpp else None
        source = (
            f"slide {view.record.name}, x {region.x}, y {region.y}, "
            f"{region.width} x {region.height} px"
        )
        return RenderedFigure(image, um_per_pixel, figure.caption, source)

    @staticmethod
    def _check_figures(case: CaseView, body: ReportBody) -> None:
        slides = {s.id for s in case.slides}
        for figure in body.figures:
            if figure.slide_id not in slides:
                raise InvalidReport(f"figure slide {figure.slide_id[:64]!r} is not of this case")

    # -- delivery --

    def _load(self, claim: Claim) -> Outgoing:
        """What the outbox worker sends for a claimed row (blocking)."""
        version = self.store.get(claim.report_id, claim.version)
        pdf = self.store.pdf(claim.report_id, claim.version) or b""
        case = self.links.store().get_case(version.accession)
        return Outgoing(version, pdf, case, f"{claim.report_id}.{claim.version}")


def open_reports(
    settings: Settings,
    catalog: Any,
    links: LinkService,
    tiles: TileService,
    targets: Sequence[Target],
) -> ReportService | None:
    """The report service over the catalog's database; ``None`` when the catalog has none."""
    engine = getattr(catalog, "engine", None)
    if engine is None or not links.available:
        return None
    return ReportService(ReportStore(engine), links, tiles, targets, settings)


__all__ = ["ReportCaseNotFound", "ReportService", "open_reports"]
