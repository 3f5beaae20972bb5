"""The report service: what the report routes call, over the report store, cases and tiles.

It checks that the case exists and that figures show slides of that case, renders the figures
for the PDF through the tile service (the slide region at print resolution, its scale from the
slide's MPP, and the annotations in view drawn over it: the layers the figure names, or the case
layers and the author's own, only those the report's author may read, at most
``MAX_FIGURE_ANNOTATIONS``), signs and amends (the PDF is made first, then stored with the signed
version and its outbox rows in one transaction), and runs the outbox worker that delivers signed
versions to the configured targets. Every store call blocks, so it runs in a worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from anyio.to_thread import run_sync

from slideserver.annotations.access import Caller, can_read
from slideserver.annotations.model import CASE, PERSONAL, Layer
from slideserver.annotations.store import AnnotationStore
from slideserver.catalog.cases import CaseView
from slideserver.db.engine import now
from slideserver.errors import NotFound
from slideserver.imaging.regions import read_scaled_region
from slideserver.reports.figure_annotations import (
    MAX_FIGURE_ANNOTATIONS,
    NO_ANNOTATIONS,
    FigureAnnotations,
    draw_annotations,
)
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
        annotations: AnnotationStore | None = None,
    ) -> None:
        self.store = store
        self.links = links
        self.tiles = tiles
        self.annotations = annotations
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
        await self._check_layers(body, author)
        return await run_sync(self.store.create, case.accession, body, author, identifier)

    async def update(self, report_id: str, data: Any, etag: str) -> ReportVersion:
        """Replace a draft's fields given in ``data`` (the others are kept)."""
        current = await self.get(report_id)
        if current.status != DRAFT:
            raise ReportSigned(f"report {report_id} is {current.status}: amend it instead")
        body = parse_body(data, current.body)
        self._check_figures(await self.case(current.accession), body)
        await self._check_layers(body, await self.author_of(current))
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
        await self._check_layers(body, await self.author_of(current))
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
        author = await self.author_of(version) if version.body.figures else version.author
        figures = [await self._render(figure, author) for figure in version.body.figures]
        return await run_sync(build_pdf, version, case, figures)

    async def _render(self, figure: Figure, author: str) -> RenderedFigure:
        """The figure's slide region at print resolution, with its µm per pixel and the
        annotations in view that ``author`` (the version's author) may read."""
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
        marks = await run_sync(self.figure_annotations, figure, author)
        if marks.annotations:
            image = await run_sync(draw_annotations, image, region, marks.annotations)
        mpp = info.mpp_x
        um_per_pixel = mpp * region.width / width if mpp else None
        source = (
            f"slide {view.record.name}, x {region.x}, y {region.y}, "
            f"{region.width} x {region.height} px"
        )
        return RenderedFigure(image, um_per_pixel, figure.caption, source, marks.note)

    # -- annotations on figures --

    def figure_layers(self, figure: Figure, author: str) -> list[Layer]:
        """The layers drawn on a figure: those it names, or the slide's case layers and the
        author's own; only those the author may read (blocking)."""
        if self.annotations is None or figure.layers == ():
            return []
        caller = Caller(subject=author, clinical=True)  # reports are written by pathologists
        readable = [la for la in self.annotations.layers(figure.slide_id) if can_read(la, caller)]
        if figure.layers is None:
            return [
                la
                for la in readable
                if la.kind == CASE or (la.kind == PERSONAL and la.owner == author)
            ]
        named = set(figure.layers)
        return [la for la in readable if la.id in named]

    def figure_annotations(self, figure: Figure, author: str) -> FigureAnnotations:
        """The annotations in the figure's region (one bounded viewport query, blocking).

        Read under the report request's own audit row, which names the case and its patient
        (a figure shows a slide of the report's case)."""
        layers = self.figure_layers(figure, author)
        if not layers or self.annotations is None:
            return NO_ANNOTATIONS
        r = figure.region
        bbox = (float(r.x), float(r.y), float(r.x + r.width), float(r.y + r.height))
        found, more = self.annotations.query(
            figure.slide_id, [la.id for la in layers], bbox, limit=MAX_FIGURE_ANNOTATIONS
        )
        if more is not None:
            return FigureAnnotations(too_many=True)
        return FigureAnnotations(tuple(found))

    async def author_of(self, version: ReportVersion) -> str:
        """The report's author: who wrote its first version (an amendment's signer is not:
        whoever amends, the figures keep drawing what the author chose and may read)."""
        if version.version == 1:
            return version.author
        return (await self.get(version.report_id, 1)).author

    async def _check_layers(self, body: ReportBody, author: str) -> None:
        """Every layer a figure names must be one of its slide's that the author may read."""
        for figure in body.figures:
            if not figure.layers:
                continue
            readable = {la.id for la in await run_sync(self.figure_layers, figure, author)}
            for layer in figure.layers:
                if layer not in readable:
                    raise InvalidReport(
                        f"figure layer {layer!r} is not an annotation layer of its slide "
                        "that the report's author may read"
                    )

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
    annotations: AnnotationStore | None = None,
) -> ReportService | None:
    """The report service over the catalog's database; ``None`` when the catalog has none.
    ``annotations``: the store whose shapes figures draw (none drawn without it)."""
    engine = getattr(catalog, "engine", None)
    if engine is None or not links.available:
        return None
    return ReportService(ReportStore(engine), links, tiles, targets, settings, annotations)


__all__ = ["ReportCaseNotFound", "ReportService", "open_reports"]
