"""What a TIFF says about its slide: pyramid levels, channels, associated images, MPP, properties.

Levels come from the largest series (SubIFD or multi-series OME pyramids, a PerkinElmer QPI
pyramid in the main IFD chain, or a plain TIFF's top-level pages of decreasing size); microns per
pixel and objective power from OME-XML, an Aperio ImageDescription or the resolution tags; raw
tags become ``tiff.*`` properties. An image whose channels are separate pages (OME-TIFF, QPI) or
more than two grey samples, or whose samples are not 8/16-bit unsigned, is described as
fluorescence channels (names and colours from OME-XML or the QPI XML when they say them).
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
from slideserver.readers.tiff.render import Channel, Colour, default_colour
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
    channel_pages: tuple[tuple[ImageLayout, ...], ...]
    """Per level, the images of its other channels (empty unless channels are separate pages)."""
    channels: tuple[Channel, ...]
    """The fluorescence channels, in sample order; empty for photographs (RGB, grey, palette).
    Windows are the full 8-bit range here: the reader sets them from the pixels."""
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


def _plane_area(series: Any) -> int:
    """Pixels in one plane of a series' largest level."""
    key = series.keyframe
    return int(key.imagewidth) * int(key.imagelength) if key is not None else 0


def _series_pages(series: Any) -> list[Any]:
    """First page of every level of a series, largest first."""
    pages = [lvl.pages[0] for lvl in series.levels if lvl.pages and lvl.pages[0] is not None]
    return sorted(pages, key=lambda p: -int(p.keyframe.imagewidth))


def _channel_pages(level: Any) -> list[Any]:
    """The pages of one series level's channels (C axis), the first plane of Z, T and others.

    One page when the level has no C axis over pages (its channels, if any, are samples).
    """
    pages = list(level.pages)
    dims = [(a, int(n)) for a, n in zip(level.axes, level.shape, strict=False) if a not in "YXS"]
    if not pages or pages[0] is None:
        return pages[:1]
    axes = [a for a, _ in dims]
    counts = [n for _, n in dims]
    if "C" not in axes or int(np.prod(counts)) != len(pages):
        return pages[:1]
    c_axis = axes.index("C")
    chosen = []
    for c in range(counts[c_axis]):
        index = [0] * len(counts)
        index[c_axis] = c
        chosen.append(pages[int(np.ravel_multi_index(index, counts))])
    return chosen if all(p is not None for p in chosen) else pages[:1]


def _series_levels(series: Any) -> list[list[Any]]:
    """Every level of a series as its channel pages, largest first."""
    levels = [_channel_pages(lvl) for lvl in series.levels]
    levels = [lvl for lvl in levels if lvl and lvl[0] is not None]
    return sorted(levels, key=lambda pages: -int(pages[0].keyframe.imagewidth))


def _ome_channels(root: ET.Element | None, image_name: str) -> list[tuple[str, Colour | None]]:
    """(name, colour) of each OME Channel of the image, in order."""
    image = _ome_image(root, image_name) if root is not None else None
    pixels = next((e for e in image if _local(e.tag) == "Pixels"), None) if image else None
    if pixels is None:
        return []
    result: list[tuple[str, Colour | None]] = []
    for channel in (e for e in pixels if _local(e.tag) == "Channel"):
        colour: Colour | None = None
        with contextlib.suppress(ValueError, TypeError):
            rgba = int(channel.get("Color", "")) & 0xFFFFFFFF  # signed 32-bit RGBA
            colour = ((rgba >> 24) & 255, (rgba >> 16) & 255, (rgba >> 8) & 255)
        result.append((channel.get("Name") or channel.get("Fluor") or "", colour))
    return result


def _qpi_channel(page: Any) -> tuple[str, Colour | None]:
    """(name, colour) from a QPI page's PerkinElmer XML (``<Name>``, ``<Color>r,g,b</Color>``)."""
    try:
        root = ET.fromstring(page.description)
    except (ET.ParseError, TypeError, ValueError):
        return "", None
    name = (root.findtext("Name") or "").strip()
    colour: Colour | None = None
    with contextlib.suppress(ValueError, TypeError):
        r, g, b = (int(v) for v in (root.findtext("Color") or "").split(","))
        colour = (r & 255, g & 255, b & 255)
    return name, colour


def _channels(
    layouts: Sequence[ImageLayout], named: Sequence[tuple[str, Colour | None]]
) -> tuple[Channel, ...]:
    """The channels of a level's images; empty when the single image is a photograph."""
    first = layouts[0]
    photo_dtype = first.dtype in (np.dtype(np.uint8), np.dtype(np.uint16))
    photo = first.photometric not in (0, 1) or first.samples - len(first.extrasamples) < 3
    if len(layouts) == 1 and photo_dtype and photo:
        return ()  # RGB, YCbCr, palette, grey, grey with alpha or an extra sample
    luts = [lay.colormap for lay in layouts for _ in range(lay.samples)]
    count = len(luts)
    channels: list[Channel] = []
    for index, lut in enumerate(luts):
        name, colour = named[index] if index < len(named) else ("", None)
        channels.append(
            Channel(
                name=name or f"channel {index}",
                colour=colour or default_colour(index, count),
                lut=lut,
            )
        )
    return tuple(channels)


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
    main = max(main_candidates, key=_plane_area)
    level_pages = _series_levels(main)
    if len(level_pages) == 1 and len(level_pages[0]) == 1 and not is_ome and main is series[0]:
        level_pages = [[p] for p in _pyramid_from_top_pages(tif)]
    level_layouts = [tuple(image_layout(p) for p in pages) for pages in level_pages]
    widths = {len(lays) for lays in level_layouts}
    if len(widths) != 1:  # a level missing channels: keep the complete ones
        level_layouts = [lays for lays in level_layouts if len(lays) == len(level_layouts[0])]
    levels = tuple(lays[0] for lays in level_layouts)
    pages = [pages[0] for pages in level_pages]
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
    is_qpi = bool(first.is_qpi)
    named: list[tuple[str, Colour | None]] = []
    if is_ome:
        named = _ome_channels(_ome_root(tif), main.name or "")
    elif is_qpi:
        named = [_qpi_channel(p) for p in level_pages[0]]
    channels = _channels(level_layouts[0], named)
    for index, channel in enumerate(channels):
        props[f"slideserver.channel[{index}].name"] = channel.name
    fmt = "ome-tiff" if is_ome else ("aperio" if tif.is_svs else "generic-tiff")
    vendor = "aperio" if tif.is_svs else props.get("tiff.Make") or None
    if is_qpi:
        fmt, vendor = "qptiff", "perkinelmer"
    props["slideserver.reader"] = "tiff"
    return TiffStructure(
        format=fmt,
        vendor=vendor,
        levels=levels,
        channel_pages=tuple(lays[1:] for lays in level_layouts),
        channels=channels,
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
