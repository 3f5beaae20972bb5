"""De-identified views for roles that may not see PHI (researchers), by allow-list.

Everything not explicitly allowed is dropped, so fields added to the slide JSON later stay hidden
from researchers until someone decides they are safe. Researchers get: the slide ID (also as its
name), geometry, optics, vendor and format, the tile links, and only the properties below. No
file name or path (they carry accession numbers), no case or patient block, no scan dates, no
label or macro image.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from slideserver.security.principals import Principal

SUMMARY_KEYS = frozenset(
    {
        "id",
        "format",
        "vendor",
        "width",
        "height",
        "mpp_x",
        "mpp_y",
        "objective_power",
        "status",
        "links",
        "levels",
        "associated",
        "properties",
    }
)
LINK_KEYS = frozenset({"dzi", "thumbnail", "iiif", "viewer"})
ASSOCIATED_ALLOWED = frozenset({"thumbnail"})
"""Associated images a researcher may see: the overview only, never label or macro."""
PROPERTY_KEYS = frozenset(
    {
        "openslide.level-count",
        "openslide.mpp-x",
        "openslide.mpp-y",
        "openslide.objective-power",
        "openslide.vendor",
        "openslide.bounds-x",
        "openslide.bounds-y",
        "openslide.bounds-width",
        "openslide.bounds-height",
        "aperio.AppMag",
        "aperio.MPP",
        "tiff.XResolution",
        "tiff.YResolution",
        "tiff.ResolutionUnit",
        "ome.PhysicalSizeX",
        "ome.PhysicalSizeY",
        "ome.PhysicalSizeXUnit",
        "ome.PhysicalSizeYUnit",
        "dicom.ObjectiveLensPower",
        "dicom.Manufacturer",
        "dicom.ManufacturerModelName",
        "dicom.PhotometricInterpretation",
        "dicom.TransferSyntaxUID",
        "dicom.ImagedVolumeWidth",
        "dicom.ImagedVolumeHeight",
    }
)
PROPERTY_PATTERNS = (
    re.compile(r"openslide\.level\[\d+\]\.(width|height|downsample|tile-width|tile-height)"),
)
IDENTIFYING_SEARCH = ("q", "patient", "accession", "specimen", "scanned_from", "scanned_to")
"""Search parameters that reach names, cases, patients or dates: a researcher's search with any
of them finds nothing."""


def allowed_property(key: str) -> bool:
    """Tell whether a slide property may be shown de-identified."""
    return key in PROPERTY_KEYS or any(p.fullmatch(key) for p in PROPERTY_PATTERNS)


def deidentify_slide(data: Mapping[str, Any]) -> dict[str, Any]:
    """Return a slide summary or detail with only the allowed fields."""
    out = {k: v for k, v in data.items() if k in SUMMARY_KEYS}
    out["name"] = str(data.get("id", ""))
    if isinstance(out.get("links"), Mapping):
        out["links"] = {k: v for k, v in out["links"].items() if k in LINK_KEYS}
    if "associated" in out:
        out["associated"] = [n for n in out["associated"] if n in ASSOCIATED_ALLOWED]
    if isinstance(out.get("properties"), Mapping):
        out["properties"] = {k: v for k, v in out["properties"].items() if allowed_property(str(k))}
    return out


def for_principal(data: dict[str, Any], principal: Principal | None) -> dict[str, Any]:
    """Return ``data`` as ``principal`` may see it (``None``: trusted internal caller)."""
    if principal is None or principal.sees_phi:
        return data
    return deidentify_slide(data)


def associated_allowed(principal: Principal | None, name: str) -> bool:
    """Tell whether ``principal`` may see the associated image ``name``."""
    return principal is None or principal.sees_phi or name in ASSOCIATED_ALLOWED


def identifying_search(principal: Principal | None, params: Mapping[str, str]) -> bool:
    """Tell whether a de-identified caller's search names patients, cases, names or dates."""
    if principal is None or principal.sees_phi:
        return False
    return any(params.get(name, "").strip() for name in IDENTIFYING_SEARCH)
