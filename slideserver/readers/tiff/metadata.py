"""What a TIFF says about its slide: pyramid levels, associated images, MPP and properties.

Levels come from the largest series (SubIFD or multi-series OME pyramids, or a plain TIFF's
top-level pages of decreasing size); microns per pixel and objective power from OME-XML, an
Aperio ImageDescription or the resolution tags; raw tags become ``tiff.*`` properties.
"""

from __future__ import annotations

import contextlib
import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from slideserver.errors import SlideTruncated, SlideUnreadable
from slideserver.readers.tiff.segments import ImageLayout, image_layout

ASSOCIATED_NAMES: Mapping[str, str] = {
    "label": "label",
    "macro": "macro",
    "overview": "macro",
    "thumbnail": "thumbnail",
}
"""Series names (lower case) that are associated images, and the name we publish them under."""

MAX_ASSOCIATED_PIXELS = 100_000_000
"""Associated images are decoded whole; anything larger is not a label or macro."""

_LENGTH_UNITS_UM: Mapping[str, float] = {
    "pm": 1e-6,
    "Å": 1e-4,
    "nm": 1e-3,
    "µm": 1.0,
    "um": 1.0,
    "μm": 1.0,  # Greek mu, as some writers spell it
    "micron": 1.0,
    "mm": 1e3,
    "cm": 1e4,
    "m": 1e6,
}
_RESOLUTION_UNIT_UM = {2: 25_400.0, 3: 10_000.0}  # TIFF ResolutionUnit: inch, centimetre
_PROPERTY_TAGS = (
    "ImageDescription",
    "Make",
    "Model",
    "Software",
    "DateTime",
    "Artist",
    "HostComputer",
    "Copyright",
    "DocumentName",
    "XResolution",
    "YResolution",
    "ResolutionUnit",
)


@dataclass(frozen=True)
class TiffStructure:
    """What TiffReader learns at open."""

    format: str
    vendor: str | None
    levels: tuple[ImageLayout, ...]
    associated: Mapping[str, ImageLayout]
    mpp: tuple[float | None, float | None]
    objective_power: float | None
    properties: Mapping[str, str]


def _ome_root(tif: tifffile.TiffFile) -> ET.Element | None:
    xml = tif.ome_metadata
    if not xml:
        return None
    try:
        return ET.fromstring(xml)
    except ET.ParseError:
        return None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _ome_image(root: ET.Element, name: str) -> ET.Element | None:
    images = [e for e in root if _local(e.tag) == "Image"]
    for image in images:
        if image.get("Name", "") == name:
            return image
    return images[0] if images else None


def _ome_optics(
    root: ET.Element | None, image_name: str
) -> tuple[float | None, float | None, float | None, dict[str, str]]:
    """Return (mpp_x, mpp_y, objective power, properties) from OME-XML."""
    props: dict[str, str] = {}
    if root is None:
        return None, None, None, props
    image = _ome_image(root, image_name)
    mpp: list[float | None] = [None, None]
    objective_power: float | None = None
    if image is not None:
        props["ome.Image.Name"] = image.get("Name", "")
        pixels = next((e for e in image if _local(e.tag) == "Pixels"), None)
        if pixels is not None:
            for i, axis in enumerate("XY"):
                value = pixels.get(f"PhysicalSize{axis}")
                unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
                if value is None:
                    continue
                props[f"ome.PhysicalSize{axis}"] = value
                props[f"ome.PhysicalSize{axis}Unit"] = unit
                try:
                    um = float(value) * _LENGTH_UNITS_UM[unit]
                except (KeyError, ValueError):
                    continue
                mpp[i] = um if um > 0 and math.isfinite(um) else None
        settings = next((e for e in image if _local(e.tag) == "ObjectiveSettings"), None)
        wanted = settings.get("ID") if settings is not None else None
        for objective in root.iter():
            if _local(objective.tag) != "Objective":
                continue
            if wanted is not None and objective.get("ID") != wanted:
                continue
            magnification = objective.get("NominalMagnification")
            if magnification:
                props["ome.Objective.NominalMagnification"] = magnification
                with contextlib.suppress(ValueError):
                    objective_power = float(magnification)
                break
    return mpp[0], mpp[1], objective_power, props


def _svs_optics(description: str) -> tuple[float | None, float | None, dict[str, str]]:
    """Return (mpp, objective power, properties) from an Aperio ImageDescription."""
    try:
        meta = tifffile.tifffile.svs_description_metadata(description)
    except Exception:
        return None, None, {}
    props = {f"aperio.{k}": str(v) for k, v in meta.items() if k != "Header"}
    mpp, app_mag = meta.get("MPP"), meta.get("AppMag")
    return (
        float(mpp) if isinstance(mpp, int | float) and mpp > 0 else None,
        float(app_mag) if isinstance(app_mag, int | float) and app_mag > 0 else None,
        props,
    )


def _tag_mpp(page: Any) -> tuple[float | None, float | None]:
    """Microns per pixel from the TIFF resolution tags, when they are in physical units."""
    unit_um = _RESOLUTION_UNIT_UM.get(int(page.tags.valueof(296, 2)))
    if unit_um is None:
        return None, None
    result: list[float | None] = []
    for code in (282, 283):
        value = page.tags.valueof(code)
        try:
            num, den = value
            per_unit = num / den
        except (TypeError, ValueError, ZeroDivisionError):
            result.append(None)
            continue
        mpp = unit_um / per_unit if per_unit > 0 else 0.0
        result.append(mpp if 0 < mpp < 50 else None)  # 72 dpi screenshots are no slides
    return result[0], result[1]


def _tag_properties(page: Any) -> dict[str, str]:
    props: dict[str, str] = {}
    for name in _PROPERTY_TAGS:
        tag = page.tags.get(name)
        if tag is None:
            continue
        value = tag.value
        if isinstance(value, tuple) and len(value) == 2 and name.endswith("Resolution"):
            num, den = value
            value = num / den if den else 0
        elif isinstance(value, bytes):
            value = value.decode("latin-1")
        elif hasattr(value, "value"):
            value = value.value  # enums
        props[f"tiff.{name}"] = str(value).replace("\x00", "")
    return props


def _series_pages(series: Any) -> list[Any]:
    """First page of every level of a series, largest first."""
    pages = [lvl.pages[0] for lvl in series.levels if lvl.pages and lvl.pages[0] is not None]
    return sorted(pages, key=lambda p: -int(p.keyframe.imagewidth))


def _pyramid_from_top_pages(tif: tifffile.TiffFile) -> list[Any]:
    """Tiled top-level pages of decreasing size with page 0's aspect: a plain TIFF pyramid."""
    first: Any = tif.pages.first
    pages: list[Any] = [first]
    w0, h0 = int(first.imagewidth), int(first.imagelength)
    for page in list(tif.pages)[1:]:
        key: Any = page.keyframe
        w, h = int(key.imagewidth), int(key.imagelength)
        if not key.is_tiled or w >= int(pages[-1].keyframe.imagewidth):
            continue
        if abs(w0 / w - h0 / h) / (w0 / w) > 0.02:
            continue
        if key.samplesperpixel != first.samplesperpixel or key.dtype != first.dtype:
            continue
        pages.append(page)
    return pages


def read_structure(tif: tifffile.TiffFile, path: Path) -> TiffStructure:
    """Map a TIFF's series to pyramid levels and associated images."""
    is_ome = bool(tif.is_ome)
    series = list(tif.series)
    if not series:
        raise SlideUnreadable(f"{path.name!r} holds no images")
    assoc_series = {
        ASSOCIATED_NAMES[s.name.strip().lower()]: s
        for s in reversed(series)
        if (s.name or "").strip().lower() in ASSOCIATED_NAMES
    }
    main_candidates = [s for s in series if s not in assoc_series.values()]
    if not main_candidates:
        raise SlideUnreadable(f"{path.name!r} holds only associated images")
    main = max(main_candidates, key=lambda s: int(np.prod(s.levels[0].shape[:2])))
    pages = _series_pages(main)
    if len(pages) == 1 and not is_ome and main is series[0]:
        pages = _pyramid_from_top_pages(tif)
    levels = tuple(image_layout(p) for p in pages)
    associated: dict[str, ImageLayout] = {}
    for name, s in assoc_series.items():
        try:
            layout = image_layout(_series_pages(s)[-1 if name == "thumbnail" else 0])
        except (SlideUnreadable, IndexError):
            continue
        if layout.width * layout.height <= MAX_ASSOCIATED_PIXELS:
            associated[name] = layout

    first = pages[0].keyframe
    props = _tag_properties(first)
    mpp_x, mpp_y = _tag_mpp(first)
    objective: float | None = None
    if is_ome:
        o_x, o_y, objective, ome_props = _ome_optics(_ome_root(tif), main.name or "")
        props.update(ome_props)
        mpp_x, mpp_y = o_x or mpp_x, o_y or mpp_y
    if tif.is_svs:
        svs_mpp, objective, svs_props = _svs_optics(first.description)
        props.update(svs_props)
        mpp_x = mpp_y = svs_mpp or mpp_x
    fmt = "ome-tiff" if is_ome else ("aperio" if tif.is_svs else "generic-tiff")
    vendor = "aperio" if tif.is_svs else props.get("tiff.Make") or None
    props["slideserver.reader"] = "tiff"
    return TiffStructure(
        format=fmt,
        vendor=vendor,
        levels=levels,
        associated=associated,
        mpp=(mpp_x, mpp_y),
        objective_power=objective,
        properties=props,
    )


def all_pages(tif: tifffile.TiffFile) -> list[Any]:
    """Top-level pages, then the pages of every series level (SubIFDs included)."""
    pages: list[Any] = list(tif.pages)
    for series in tif.series:
        for level in series.levels:
            if level.pages:
                pages.append(level.pages[0])
    return [p for p in pages if p is not None]


def check_complete(path: Path, layouts: Sequence[ImageLayout]) -> None:
    """Refuse a truncated file at open: every level's data must lie inside the file.

    tifffile opens a truncated pyramid happily (it drops the IFDs it cannot reach), which would
    serve a slide missing its lower levels and failing on most tiles.
    """
    size = path.stat().st_size
    for index, layout in enumerate(layouts):
        ends = [o + b for o, b in zip(layout.offsets, layout.bytecounts, strict=False) if b]
        if ends and max(ends) > size:
            raise SlideTruncated(
                f"{path.name!r} is truncated: level {index} runs past the end of the file"
            )
