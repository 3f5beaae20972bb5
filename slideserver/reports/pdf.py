"""The report as a PDF, laid out by reportlab's platypus.

Patient and case header, specimens and blocks, diagnosis, microscopic description, synoptic
table, figures (each slide region at print resolution with a scale bar in µm and its caption),
signature block and ``Page N of M`` on every page. All text is real text (extractable); the
figures are handed in already rendered (:class:`RenderedFigure`), so this module reads no slide.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from PIL import Image
from reportlab import rl_config
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    Flowable,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from slideserver.catalog.cases import CaseView
from slideserver.reports.model import DRAFT, FINAL, ReportVersion

PRINT_DPI = 300
"""Figures are rendered for this resolution at their printed size."""
FIGURE_WIDTH = 16 * cm
"""Printed width of a figure (points)."""
FIGURE_MAX_HEIGHT = 11 * cm


# reportlab without its optional C accelerator (rl_accel) writes image streams as ASCII85 in
# pure Python: one full-size figure took 12 s to embed, 0.8 s as the binary Flate stream PDF has
# allowed since 1.2. Reports are this process's only PDFs, so the setting is ours to choose.
rl_config.useA85 = 0


def figure_pixels(width: int, height: int) -> tuple[int, int]:
    """The pixel size a region of ``width`` x ``height`` is rendered at for print."""
    scale = min(FIGURE_WIDTH / width, FIGURE_MAX_HEIGHT / height)
    points = (width * scale, height * scale)
    return (
        max(1, round(points[0] / 72 * PRINT_DPI)),
        max(1, round(points[1] / 72 * PRINT_DPI)),
    )


@dataclass(frozen=True)
class RenderedFigure:
    """One figure's pixels and what is known of their scale."""

    image: Image.Image
    um_per_pixel: float | None
    """Micrometres per pixel of ``image`` (slide MPP times the downsample); None: unknown."""
    caption: str
    source: str
    """Which slide and region, for the legend (no path)."""
    note: str = ""
    """What the legend adds (annotations left out of a dense region)."""


def nice_length(maximum: float) -> float:
    """The largest 1, 2 or 5 times a power of ten not above ``maximum`` (µm)."""
    if maximum <= 0:
        return 0.0
    power = 10 ** math.floor(math.log10(maximum))
    for step in (5, 2, 1):
        if step * power <= maximum:
            return float(step * power)
    return float(power)


def _um_label(um: float) -> str:
    return f"{um / 1000:g} mm" if um >= 1000 else f"{um:g} µm"


class FigureImage(Flowable):  # type: ignore[misc]
    """A slide region with a scale bar drawn over its lower left corner."""

    def __init__(self, figure: RenderedFigure) -> None:
        super().__init__()
        self.figure = figure
        width, height = figure.image.size
        scale = min(FIGURE_WIDTH / width, FIGURE_MAX_HEIGHT / height)
        self.width = width * scale
        self.height = height * scale
        self.points_per_pixel = scale

    def wrap(self, avail_width: float, avail_height: float) -> tuple[float, float]:
        return self.width, self.height

    def draw(self) -> None:
        canvas: Canvas = self.canv
        canvas.drawImage(ImageReader(self.figure.image), 0, 0, self.width, self.height)
        um = self.figure.um_per_pixel
        if not um:
            return
        um_per_point = um / self.points_per_pixel
        length_um = nice_length(self.width * 0.25 * um_per_point)
        if length_um <= 0:
            return
        bar = length_um / um_per_point
        label = _um_label(length_um)
        canvas.setFillColor(colors.white)
        canvas.rect(4, 4, bar + 12, 22, stroke=0, fill=1)
        canvas.setFillColor(colors.black)
        canvas.rect(10, 9, bar, 4, stroke=0, fill=1)
        canvas.setFont("Helvetica", 8)
        canvas.drawString(10, 16, label)


class NumberedCanvas(Canvas):  # type: ignore[misc]
    """A canvas that writes ``Page N of M`` once it knows M (reportlab's two-pass recipe)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pages: list[dict[str, Any]] = []
        self.footer = ""

    def showPage(self) -> None:
        self._pages.append(dict(self.__dict__))
        self._startPage()

    def save(self) -> None:
        total = len(self._pages)
        for page in self._pages:
            self.__dict__.update(page)
            self.setFont("Helvetica", 8)
            self.drawRightString(A4[0] - 2 * cm, 1.2 * cm, f"Page {self._pageNumber} of {total}")
            self.drawString(2 * cm, 1.2 * cm, self.footer)
            super().showPage()
        super().save()


def _p(text: str, style: ParagraphStyle) -> Paragraph:
    return Paragraph(escape(text).replace("\n", "<br/>"), style)


def _table(rows: list[list[Any]], widths: Sequence[float]) -> Table:
    table = Table(rows, colWidths=list(widths), hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), "Helvetica", 9),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
                ("BACKGROUND", (0, 0), (0, -1), colors.whitesmoke),
            ]
        )
    )
    return table


def build_pdf(
    version: ReportVersion, case: CaseView | None, figures: Sequence[RenderedFigure]
) -> bytes:
    """Lay out one version of a report; return the PDF's bytes."""
    styles = getSampleStyleSheet()
    body = styles["BodyText"]
    heading = styles["Heading2"]
    out = io.BytesIO()
    title = f"Surgical pathology report {version.accession}"
    doc = SimpleDocTemplate(
        out,
        pagesize=A4,
        leftMargin=2 * cm,
        rightMargin=2 * cm,
        topMargin=2 * cm,
        bottomMargin=2 * cm,
        title=title,
        author=version.signer or version.author,
        subject=f"version {version.version} ({version.status})",
    )
    story: list[Flowable] = [Paragraph(escape(title), styles["Title"])]
    patient = case.patient if case is not None else None
    header = [
        ["Patient", (patient.name or "").replace("^", ", ") if patient else "not known"],
        ["MRN", patient.identifier if patient else ""],
        ["Birth date", (patient.birth_date or "") if patient else ""],
        ["Sex", (patient.sex or "") if patient else ""],
        ["Accession", version.accession],
        ["Report", f"{version.report_id}, version {version.version} ({version.status})"],
    ]
    story.append(_table([[k, _p(v, body)] for k, v in header], (4 * cm, 13 * cm)))
    if version.status == DRAFT:
        story.append(Spacer(1, 6))
        story.append(_p("DRAFT - not signed, not for clinical use", styles["Heading3"]))
    if version.reason:
        story.append(_p(f"Reason for {version.status} report: {version.reason}", body))
    if case is not None and case.specimens:
        story.append(_p("Specimens and blocks", heading))
        rows = [
            [
                s.id,
                _p(
                    (s.description or "")
                    + ("\nBlocks: " + ", ".join(b.id for b in s.blocks) if s.blocks else ""),
                    body,
                ),
            ]
            for s in case.specimens
        ]
        story.append(_table(rows, (2 * cm, 15 * cm)))
    story.append(_p("Diagnosis", heading))
    story.append(_p(version.body.diagnosis or "(none)", body))
    story.append(_p("Microscopic description", heading))
    story.append(_p(version.body.microscopic or "(none)", body))
    if version.body.synoptic:
        story.append(_p("Synoptic report", heading))
        rows = [[_p(k, body), _p(v, body)] for k, v in version.body.synoptic]
        story.append(_table(rows, (6 * cm, 11 * cm)))
    if figures:
        story.append(_p("Figures", heading))
        for number, figure in enumerate(figures, start=1):
            legend = f"Figure {number}. {figure.caption}".strip() + f" ({figure.source})"
            if figure.note:
                legend += f" {figure.note}"
            story.append(KeepTogether([FigureImage(figure), Spacer(1, 3), _p(legend, body)]))
            story.append(Spacer(1, 8))
    story.append(_p("Signature", heading))
    if version.signed_at is not None and version.signer:
        signed = version.signed_at.strftime("%Y-%m-%d %H:%M UTC")
        word = "Electronically signed" if version.status == FINAL else f"{version.status.title()}"
        story.append(_p(f"{word} by {version.signer} on {signed}", body))
    else:
        story.append(_p("Not signed.", body))
    footer = f"{version.accession} - report {version.report_id} v{version.version}"

    def canvas(*args: Any, **kwargs: Any) -> NumberedCanvas:
        made = NumberedCanvas(*args, **kwargs)
        made.footer = footer
        return made

    doc.build(story, canvasmaker=canvas)
    return out.getvalue()


__all__ = ["FIGURE_WIDTH", "RenderedFigure", "build_pdf", "figure_pixels", "nice_length"]
