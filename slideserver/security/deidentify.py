"""De-identified views for roles that may not see PHI (researchers), by allow-list.

Everything not explicitly allowed is dropped, so fields added to the slide JSON later stay hidden
from researchers until someone decides they are safe. Researchers get: the slide ID (also as its
name), geometry, optics, vendor and format, the tile links, and only the properties below. No
file name or path (they carry accession numbers), no case or patient block, no scan dates, no
label or macro image.
"""

from __future__ import annotations

import hashlib
import hmac
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


def pseudonym(subject: str, key: bytes) -> str:
    """Return a stable stand-in for a user (``user-`` and 12 hex digits) that cannot be turned
    back into the user without ``key`` (a keyed hash: guessing names and hashing them fails)."""
    return "user-" + hmac.new(key, subject.encode("utf-8"), hashlib.sha256).hexdigest()[:12]


# -- error details -----------------------------------------------------------------------------
# A slide file's name carries its accession number, and its path the folders of a case; backend
# messages (tifffile, OpenSlide, the operating system) name both. Lower layers strip the names
# they know; the API passes every error detail through :func:`error_detail` once more.

FILE_ERROR_CODES = frozenset(
    {"slide_unreadable", "tile_unreadable", "slide_gone", "slide_changed", "internal_error"}
)
"""Error codes whose details are made from a slide file or a backend's message."""
GENERIC_DETAILS = {
    "slide_unreadable": "the slide's file cannot be read",
    "tile_unreadable": "this part of the slide cannot be read",
    "slide_gone": "the slide is no longer available",
    "slide_changed": "the slide's file changed; it will be listed again under a new id",
    "internal_error": "the server could not complete this request",
}
"""What a caller who may not see PHI is told instead, per error code."""
GENERIC_DETAIL = "the request could not be answered"

ABSOLUTE_PATH = re.compile(
    r"""'(?:[A-Za-z]:)?[\\/][^']*'"""  # quoted: may hold spaces
    r'|"(?:[A-Za-z]:)?[\\/][^"]*"'
    r"""|(?<![\w.~/\\])(?:[A-Za-z]:)?[\\/](?:[^\s'"\\/]+[\\/])*[^\s'",;:)]*"""
)
"""An absolute POSIX or Windows path (``/srv/slides/x.svs``, ``C:\\scans\\x.svs``)."""
FILE_NAME = re.compile(
    r"[^\s'\"/\\]+\.(?:svs|tiff?|ndpi|vms|vmu|scn|mrxs|bif|svslide|dcm|isyntax|czi|jpe?g|png)\b",
    re.IGNORECASE,
)
"""A slide (or image) file name: the accession and block usually lead it."""
ACCESSION_LIKE = re.compile(r"\b[A-Za-z]{1,4}\d{2}-\d{3,}(?:[-_][A-Za-z0-9]+)*\b")
"""``S24-07777``, ``SP24-123``, with block and stain suffixes: the default file-name rules'
accession form."""
MRN_LIKE = re.compile(r"\bMRN[-_:]?\s*\w+", re.IGNORECASE)


def scrub_detail(detail: str) -> str:
    """Return ``detail`` without absolute paths, file names, accession- or MRN-like tokens."""
    for pattern, replacement in (
        (ABSOLUTE_PATH, "the file"),
        (FILE_NAME, "the file"),
        (ACCESSION_LIKE, "[redacted]"),
        (MRN_LIKE, "[redacted]"),
    ):
        detail = pattern.sub(replacement, detail)
    return detail


def without_paths(detail: str) -> str:
    """Return ``detail`` without absolute paths (what every caller gets)."""
    return ABSOLUTE_PATH.sub("the file", detail)


def error_detail(code: str, detail: str, principal: Principal | None) -> str:
    """Return the detail of an error answer as ``principal`` may read it.

    Nobody gets an absolute path. Callers who may not see PHI (researchers, and callers not
    authenticated) get a fixed text for errors made from slide files or backends, and every
    other detail without file names or accession- and MRN-like tokens.
    """
    if principal is not None and principal.sees_phi:
        return without_paths(detail)
    if code in FILE_ERROR_CODES:
        return GENERIC_DETAILS.get(code, GENERIC_DETAIL)
    return scrub_detail(detail)
