"""What a report is: its body (diagnosis, description, synoptic fields, figures) and versions.

A report belongs to a case. Its first version is a ``draft`` (editable); signing turns it into
``final`` (signer and time, never changed again); an amendment adds a version ``amended`` or
``corrected`` and keeps every earlier one. The JSON shapes here are the API's (issue 14).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from slideserver.annotations.validate import ID_PATTERN
from slideserver.errors import BadRequest

DRAFT = "draft"
FINAL = "final"
AMENDED = "amended"
CORRECTED = "corrected"
SIGNED = frozenset({FINAL, AMENDED, CORRECTED})
"""Statuses of a signed version: it never changes again."""
AMENDMENTS = (AMENDED, CORRECTED)

MAX_TEXT = 20_000
"""Longest diagnosis or microscopic description, in characters."""
MAX_SYNOPTIC = 100
"""Most synoptic fields in one report."""
MAX_FIGURES = 12
"""Most figures in one report."""
MAX_SHORT = 200
"""Longest synoptic key or value, caption or slide ID."""
MAX_REGION = 1 << 24
"""Largest figure region side, in level-0 pixels."""
MAX_FIGURE_LAYERS = 50
"""Most annotation layers one figure may name."""


class InvalidReport(BadRequest):
    """A report body that does not have the documented shape."""

    code = "invalid_report"


@dataclass(frozen=True)
class Region:
    """A rectangle of a slide in level-0 pixels."""

    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class Figure:
    """A picture of a slide region with its caption."""

    slide_id: str
    region: Region
    caption: str = ""
    layers: tuple[str, ...] | None = None
    """The annotation layers drawn on the figure (those visible in the viewer when it was
    captured); ``None``: the slide's case layers and the author's own; empty: none."""

    def to_json(self) -> dict[str, Any]:
        r = self.region
        data: dict[str, Any] = {
            "slide_id": self.slide_id,
            "region": {"x": r.x, "y": r.y, "width": r.width, "height": r.height},
            "caption": self.caption,
        }
        if self.layers is not None:
            data["layers"] = list(self.layers)
        return data


@dataclass(frozen=True)
class ReportBody:
    """What the pathologist writes."""

    diagnosis: str = ""
    microscopic: str = ""
    synoptic: tuple[tuple[str, str], ...] = ()
    """Key/value pairs in the order given."""
    figures: tuple[Figure, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "diagnosis": self.diagnosis,
            "microscopic": self.microscopic,
            "synoptic": dict(self.synoptic),
            "figures": [f.to_json() for f in self.figures],
        }


@dataclass(frozen=True)
class Delivery:
    """Where one version went: a target, its state and why (no PHI in ``detail``)."""

    target: str
    state: str
    detail: str = ""
    attempts: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "state": self.state,
            "detail": self.detail,
            "attempts": self.attempts,
        }


@dataclass(frozen=True)
class ReportVersion:
    """One version of a report."""

    report_id: str
    accession: str
    version: int
    status: str
    body: ReportBody
    revision: int
    """Edits of a draft (its ETag); a signed version keeps the revision it was signed at."""
    author: str
    created_at: datetime
    signer: str | None = None
    signed_at: datetime | None = None
    reason: str = ""
    """Why an amendment was made (empty otherwise)."""
    deliveries: tuple[Delivery, ...] = ()
    versions: tuple[tuple[int, str], ...] = field(default=())
    """Every version of the report with its status, oldest first."""

    @property
    def etag(self) -> str:
        """The ETag of this version's current text (``If-Match`` on PUT)."""
        return f'"{self.report_id}.{self.version}.{self.revision}"'

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.report_id,
            "accession": self.accession,
            "version": self.version,
            "status": self.status,
            "revision": self.revision,
            **self.body.to_json(),
            "author": self.author,
            "created_at": self.created_at.isoformat(),
            "signer": self.signer,
            "signed_at": self.signed_at.isoformat() if self.signed_at else None,
            "reason": self.reason,
            "deliveries": [d.to_json() for d in self.deliveries],
            "versions": [{"version": v, "status": s} for v, s in self.versions],
        }


def _text(data: dict[str, Any], name: str, limit: int) -> str:
    value = data.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidReport(f"{name} must be a string")
    if len(value) > limit:
        raise InvalidReport(f"{name} is longer than {limit} characters")
    if "\x00" in value:
        raise InvalidReport(f"{name} holds a NUL character")
    return value


def _int(data: Any, name: str) -> int:
    value = data.get(name) if isinstance(data, dict) else None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidReport(f"region.{name} must be an integer")
    return value


def parse_region(data: Any) -> Region:
    """Parse a ``{"x", "y", "width", "height"}`` rectangle in level-0 pixels."""
    if not isinstance(data, dict):
        raise InvalidReport("region must be an object with x, y, width and height")
    region = Region(_int(data, "x"), _int(data, "y"), _int(data, "width"), _int(data, "height"))
    if region.x < 0 or region.y < 0:
        raise InvalidReport("region x and y must not be negative")
    if not (0 < region.width <= MAX_REGION and 0 < region.height <= MAX_REGION):
        raise InvalidReport(f"region width and height must be 1 to {MAX_REGION}")
    return region


def parse_layers(data: Any) -> tuple[str, ...] | None:
    """Parse a figure's ``layers``: a list of annotation layer IDs, or null (the default)."""
    if data is None:
        return None
    if not isinstance(data, list) or len(data) > MAX_FIGURE_LAYERS:
        raise InvalidReport(f"figure layers must be a list of at most {MAX_FIGURE_LAYERS} IDs")
    for layer in data:
        if not isinstance(layer, str) or not ID_PATTERN.fullmatch(layer):
            raise InvalidReport("figure layers must be annotation layer IDs")
    return tuple(dict.fromkeys(data))


def parse_figure(data: Any) -> Figure:
    """Parse one figure: ``{"slide_id", "region", "caption", "layers"}``."""
    if not isinstance(data, dict):
        raise InvalidReport("each figure must be an object")
    slide_id = _text(data, "slide_id", MAX_SHORT)
    if not slide_id:
        raise InvalidReport("each figure needs a slide_id")
    return Figure(
        slide_id,
        parse_region(data.get("region")),
        _text(data, "caption", MAX_SHORT),
        parse_layers(data.get("layers")),
    )


def parse_body(data: Any, base: ReportBody | None = None) -> ReportBody:
    """Parse a report body; fields left out keep their value in ``base`` (or are empty)."""
    if not isinstance(data, dict):
        raise InvalidReport("a report body must be a JSON object")
    base = base or ReportBody()
    synoptic = base.synoptic
    if "synoptic" in data and data["synoptic"] is not None:
        raw = data["synoptic"]
        if not isinstance(raw, dict) or len(raw) > MAX_SYNOPTIC:
            raise InvalidReport(f"synoptic must be an object of at most {MAX_SYNOPTIC} strings")
        pairs = []
        for key, value in raw.items():
            if not isinstance(value, str) or not key or len(key) > MAX_SHORT:
                raise InvalidReport("synoptic keys and values must be non-empty keys and strings")
            if len(value) > MAX_SHORT * 10:
                raise InvalidReport(f"synoptic values are at most {MAX_SHORT * 10} characters")
            pairs.append((key, value))
        synoptic = tuple(pairs)
    figures = base.figures
    if "figures" in data and data["figures"] is not None:
        raw_figures = data["figures"]
        if not isinstance(raw_figures, list) or len(raw_figures) > MAX_FIGURES:
            raise InvalidReport(f"figures must be a list of at most {MAX_FIGURES}")
        figures = tuple(parse_figure(f) for f in raw_figures)
    return ReportBody(
        diagnosis=_text(data, "diagnosis", MAX_TEXT) if "diagnosis" in data else base.diagnosis,
        microscopic=(
            _text(data, "microscopic", MAX_TEXT) if "microscopic" in data else base.microscopic
        ),
        synoptic=synoptic,
        figures=figures,
    )


def body_from_json(data: dict[str, Any]) -> ReportBody:
    """Rebuild a stored body (written by :meth:`ReportBody.to_json`)."""
    return parse_body(data)


__all__ = [
    "AMENDED",
    "AMENDMENTS",
    "CORRECTED",
    "DRAFT",
    "FINAL",
    "SIGNED",
    "Delivery",
    "Figure",
    "InvalidReport",
    "Region",
    "ReportBody",
    "ReportVersion",
    "body_from_json",
    "parse_body",
]
