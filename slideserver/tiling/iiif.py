"""IIIF Image API 3.0: parse request parameters, resolve them to level-0 geometry, describe images.

Pure functions, no I/O: every check (syntax, region bounds, upscaling, server limits) happens here,
so a request that cannot be served is refused before a single pixel is read. The pixel pipeline
that executes an :class:`IIIFPlan` is :mod:`slideserver.imaging.iiif_transform`.

Choices where the specification leaves room (https://iiif.io/api/image/3.0/):

- Every refusal is a 400 (:class:`~slideserver.errors.InvalidIIIFParameter`), including sizes beyond
  ``maxWidth``/``maxHeight``/``maxArea``: section 4.2 says such requests "are errors that SHOULD
  result in a 400 (Bad Request)". Unsupported formats are
  :class:`~slideserver.errors.UnsupportedTileFormat` (also 400, as section 4.5 asks).
- ``max``, ``^max``, ``!w,h`` and ``^!w,h`` are *fitted* to the limits (section 4.2 and the
  implementation notes, section 4); the other size forms name an exact size, which is refused
  when it exceeds a limit.
- ``!w,h`` without ``^`` is never refused for being larger than the region: section 4.2 says the
  returned image "MUST be as large as possible but not larger than the extracted region, w or h,
  or server-imposed limits", so a 16 x 16 image asked for at ``!128,128`` is returned at 16 x 16
  (canonical ``max``). The official validator's ``size_noup`` check also sends ``!2000,3000`` to a
  1000 x 1000 image and expects an error; the specification's text wins over that check.
- Every other size form follows section 4.2 for small regions: ``max`` is the region's size
  (within the limits), ``w,``/``,h``/``w,h`` larger than the region and ``pct:n`` above 100 are
  400 without ``^``, and with ``^`` they upscale; ``^max`` and ``^!w,h`` upscale up to the limits.
- Percent regions are resolved edge by edge, rounding half up, so that the specification's
  examples hold: ``pct:41.6,7.5,40,70`` of a 300 x 200 image is ``125,15,120,140``.
- Rotations are multiples of 90 (compliance level 2); other angles are refused with 400.
- Numbers are ASCII digits only (no sign, exponent, ``nan``, ``inf``, whitespace or ``_``), at most
  nine digits before and after the point; arithmetic on percentages is exact (``Fraction``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

from slideserver.errors import InvalidIIIFParameter, UnsupportedTileFormat

CONTEXT = "http://iiif.io/api/image/3/context.json"
PROTOCOL = "http://iiif.io/api/image"
PROFILE = "level2"

FORMATS: dict[str, str] = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
"""IIIF format extensions we serve, with their media types."""
IIIF_ONLY_FORMATS = frozenset({"tif", "gif", "jp2", "pdf"})
"""Formats the specification names that we do not encode."""
EXTRA_FORMATS = ["png", "webp"]
EXTRA_QUALITIES = ["color", "gray", "bitonal"]
EXTRA_FEATURES = [
    "mirroring",
    "regionByPct",
    "regionByPx",
    "regionSquare",
    "rotationBy90s",
    "sizeByConfinedWh",
    "sizeByH",
    "sizeByPct",
    "sizeByW",
    "sizeByWh",
    "sizeUpscaling",
]
"""Image-request features this module implements; HTTP features are the route's to add."""
SIZES_MAX_DIMENSION = 4096
"""``sizes`` in info.json lists full-image sizes up to this many pixels on the longer side."""

_MAX_PARAM_LENGTH = 64
_INT = r"[0-9]{1,9}"
_FLOAT = r"(?=[0-9.]*[0-9])[0-9]{0,9}(?:\.[0-9]{0,9})?"
_REGION_PX = re.compile(rf"({_INT}),({_INT}),({_INT}),({_INT})", re.ASCII)
_REGION_PCT = re.compile(rf"pct:({_FLOAT}),({_FLOAT}),({_FLOAT}),({_FLOAT})", re.ASCII)
_SIZE_PCT = re.compile(rf"pct:({_FLOAT})", re.ASCII)
_SIZE_WH = re.compile(rf"(!?)({_INT})?,({_INT})?", re.ASCII)
_ROTATION = re.compile(rf"(!?)({_FLOAT})", re.ASCII)

RegionKind = Literal["full", "square", "px", "pct"]
SizeKind = Literal["max", "w", "h", "pct", "wh", "confined"]
Quality = Literal["default", "color", "gray", "bitonal"]
QUALITIES: dict[str, Quality] = {
    "default": "default",
    "color": "color",
    "gray": "gray",
    "bitonal": "bitonal",
}


@dataclass(frozen=True)
class IIIFLimits:
    """Server-imposed output limits, published in info.json as maxWidth/maxHeight/maxArea."""

    max_width: int
    max_height: int
    max_area: int


@dataclass(frozen=True)
class RegionParam:
    """A parsed region: ``full``, ``square``, pixels, or percentages (``values`` is x, y, w, h)."""

    kind: RegionKind
    values: tuple[Fraction, Fraction, Fraction, Fraction] | None = None


@dataclass(frozen=True)
class SizeParam:
    """A parsed size; ``width``/``height``/``percent`` are set as the form requires."""

    kind: SizeKind
    upscale: bool = False
    width: int | None = None
    height: int | None = None
    percent: Fraction | None = None


@dataclass(frozen=True)
class IIIFRequest:
    """The five image-request parameters, syntactically valid but not yet resolved."""

    region: RegionParam
    size: SizeParam
    rotation: int
    """Clockwise degrees: 0, 90, 180 or 270."""
    mirror: bool
    quality: Quality
    format: str
    """IIIF extension: ``jpg``, ``png`` or ``webp``."""


@dataclass(frozen=True)
class IIIFPlan:
    """What to render: a level-0 rectangle inside the image, scaled, mirrored, rotated, recoloured.

    ``width`` x ``height`` is the scaled region *before* rotation (the spec's order of
    operations); :attr:`output_size` is the size of the returned image.
    """

    l0_x: int
    l0_y: int
    l0_width: int
    l0_height: int
    width: int
    height: int
    rotation: int
    mirror: bool
    quality: Quality
    format: str
    canonical: str
    """Canonical ``{region}/{size}/{rotation}/{quality}.{format}`` (spec section 4.8): use it for
    cache keys and the ``Link: <...>;rel="canonical"`` header."""

    @property
    def output_size(self) -> tuple[int, int]:
        """Return the returned image's size: rotation by 90 or 270 swaps width and height."""
        if self.rotation in (90, 270):
            return self.height, self.width
        return self.width, self.height

    @property
    def media_type(self) -> str:
        """Return the Content-Type of the encoded image."""
        return FORMATS[self.format]


def _show(value: str) -> str:
    """Quote a client-supplied value for an error message, truncated so logs stay small."""
    if len(value) > 40:
        value = value[:40] + "..."
    return repr(value)


def _bad(param: str, value: str, why: str) -> InvalidIIIFParameter:
    return InvalidIIIFParameter(f"invalid IIIF {param} {_show(value)}: {why}")


def _round(value: Fraction) -> int:
    """Round half up; Python's ``round`` rounds half to even, which the spec examples do not."""
    return math.floor(value + Fraction(1, 2))


# --------------------------------------------------------------------------------------------
# Parsing


def parse_image_request(
    region: str, size: str, rotation: str, quality: str, fmt: str
) -> IIIFRequest:
    """Parse the five path segments of an image request, strictly; raise 400 errors naming them."""
    region_param = parse_region(region)
    size_param = parse_size(size)
    degrees, mirror = parse_rotation(rotation)
    return IIIFRequest(
        region=region_param,
        size=size_param,
        rotation=degrees,
        mirror=mirror,
        quality=parse_quality(quality),
        format=parse_format(fmt),
    )


def _check_length(param: str, value: str) -> None:
    if not value:
        raise _bad(param, value, "empty")
    if len(value) > _MAX_PARAM_LENGTH:
        raise _bad(param, value, "too long")


def parse_region(value: str) -> RegionParam:
    """Parse ``full``, ``square``, ``x,y,w,h`` or ``pct:x,y,w,h``."""
    _check_length("region", value)
    if value == "full":
        return RegionParam("full")
    if value == "square":
        return RegionParam("square")
    kind: RegionKind
    if match := _REGION_PX.fullmatch(value):
        kind = "px"
    elif match := _REGION_PCT.fullmatch(value):
        kind = "pct"
    else:
        raise _bad("region", value, "use full, square, x,y,w,h or pct:x,y,w,h")
    x, y, w, h = (Fraction(group) for group in match.groups())
    if w == 0 or h == 0:
        raise _bad("region", value, "width and height must be greater than 0")
    return RegionParam(kind, (x, y, w, h))


def parse_size(value: str) -> SizeParam:
    """Parse ``max``, ``w,``, ``,h``, ``pct:n``, ``w,h``, ``!w,h``, each optionally after ``^``."""
    _check_length("size", value)
    upscale = value.startswith("^")
    body = value[1:] if upscale else value
    if body == "max":
        return SizeParam("max", upscale)
    if match := _SIZE_PCT.fullmatch(body):
        percent = Fraction(match.group(1))
        if percent == 0:
            raise _bad("size", value, "percentage must be greater than 0")
        if percent > 100 and not upscale:
            raise _bad("size", value, "percentages above 100 need the ^ prefix")
        return SizeParam("pct", upscale, percent=percent)
    match = _SIZE_WH.fullmatch(body)
    if match is None:
        raise _bad("size", value, "use max, w,, ,h, pct:n, w,h or !w,h, optionally after ^")
    bang, w_text, h_text = match.groups()
    width = int(w_text) if w_text is not None else None
    height = int(h_text) if h_text is not None else None
    if width == 0 or height == 0:
        raise _bad("size", value, "width and height must be greater than 0")
    if bang and (width is None or height is None):
        raise _bad("size", value, "!w,h needs both a width and a height")
    if width is None and height is None:
        raise _bad("size", value, "give a width, a height or both")
    kind: SizeKind
    if bang:
        kind = "confined"
    elif width is not None and height is not None:
        kind = "wh"
    elif width is not None:
        kind = "w"
    else:
        kind = "h"
    return SizeParam(kind, upscale, width=width, height=height)


def parse_rotation(value: str) -> tuple[int, bool]:
    """Parse ``n`` or ``!n`` into (clockwise degrees in 0/90/180/270, mirror first)."""
    _check_length("rotation", value)
    match = _ROTATION.fullmatch(value)
    if match is None:
        raise _bad("rotation", value, "use 0, 90, 180 or 270, optionally after ! to mirror")
    degrees = Fraction(match.group(2))
    if degrees > 360:
        raise _bad("rotation", value, "degrees must be between 0 and 360")
    if degrees.denominator != 1 or degrees % 90:
        raise _bad("rotation", value, "only multiples of 90 degrees are supported")
    return int(degrees) % 360, bool(match.group(1))


def parse_quality(value: str) -> Quality:
    """Parse ``default``, ``color``, ``gray`` or ``bitonal``."""
    quality = QUALITIES.get(value)
    if quality is None:
        raise _bad("quality", value, "use default, color, gray or bitonal")
    return quality


def parse_format(value: str) -> str:
    """Parse ``jpg``, ``png`` or ``webp``; other formats are 400 UnsupportedTileFormat."""
    if value in FORMATS:
        return value
    what = "is not served here" if value in IIIF_ONLY_FORMATS else "is not a IIIF format"
    raise UnsupportedTileFormat(
        f"unsupported IIIF format {_show(value)} {what}; use one of jpg, png, webp"
    )


# --------------------------------------------------------------------------------------------
# Planning


def plan_image(request: IIIFRequest, width: int, height: int, limits: IIIFLimits) -> IIIFPlan:
    """Resolve ``request`` against a ``width`` x ``height`` image; refuse what cannot be served."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    l0_x, l0_y, l0_w, l0_h = resolve_region(request.region, width, height)
    out_w, out_h = resolve_size(request.size, l0_w, l0_h, limits)
    full = (l0_x, l0_y, l0_w, l0_h) == (0, 0, width, height)
    region_text = "full" if full else f"{l0_x},{l0_y},{l0_w},{l0_h}"
    size_text = _canonical_size(out_w, out_h, l0_w, l0_h, limits)
    rotation_text = ("!" if request.mirror else "") + str(request.rotation)
    canonical = f"{region_text}/{size_text}/{rotation_text}/{request.quality}.{request.format}"
    return IIIFPlan(
        l0_x=l0_x,
        l0_y=l0_y,
        l0_width=l0_w,
        l0_height=l0_h,
        width=out_w,
        height=out_h,
        rotation=request.rotation,
        mirror=request.mirror,
        quality=request.quality,
        format=request.format,
        canonical=canonical,
    )


def resolve_region(region: RegionParam, width: int, height: int) -> tuple[int, int, int, int]:
    """Return the level-0 rectangle (x, y, w, h), cropped at the image's edges (spec 4.1)."""
    if region.kind == "full":
        return 0, 0, width, height
    if region.kind == "square":
        side = min(width, height)
        return (width - side) // 2, (height - side) // 2, side, side
    assert region.values is not None
    x, y, w, h = region.values
    if region.kind == "pct":
        x0, y0 = _round(x * width / 100), _round(y * height / 100)
        x1, y1 = _round((x + w) * width / 100), _round((y + h) * height / 100)
        # A non-zero percentage never rounds away to nothing.
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    else:
        x0, y0, x1, y1 = int(x), int(y), int(x + w), int(y + h)
    if x0 >= width or y0 >= height:
        text = _region_text(region)
        raise _bad("region", text, f"lies outside the {width}x{height} image")
    x1, y1 = min(x1, width), min(y1, height)
    return x0, y0, x1 - x0, y1 - y0


def _region_text(region: RegionParam) -> str:
    assert region.values is not None
    numbers = ",".join(_fraction_text(v) for v in region.values)
    return f"pct:{numbers}" if region.kind == "pct" else numbers


def _fraction_text(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):g}"


def resolve_size(
    size: SizeParam, region_w: int, region_h: int, limits: IIIFLimits
) -> tuple[int, int]:
    """Return the scaled region's (width, height) per spec 4.2, within ``limits``."""
    text = _size_text(size)
    if size.kind == "max":
        return _fit(region_w, region_h, limits, cap=None if size.upscale else Fraction(1))
    if size.kind == "confined":
        assert size.width is not None and size.height is not None
        scale_w, scale_h = Fraction(size.width, region_w), Fraction(size.height, region_h)
        scale = min(scale_w, scale_h)
        if scale >= 1 and not size.upscale:
            # The box holds the whole region: "not larger than the extracted region" is `max`.
            return _fit(region_w, region_h, limits, cap=Fraction(1))
        # The binding side gets exactly the requested length, the other its rounded share.
        if scale_w <= scale_h:
            target = size.width, min(size.height, max(1, _round(region_h * scale)))
        else:
            target = min(size.width, max(1, _round(region_w * scale))), size.height
        if _within(target[0], target[1], limits):
            return target
        return _fit(region_w, region_h, limits, cap=scale)
    if size.kind == "pct":
        assert size.percent is not None
        out_w = _round(region_w * size.percent / 100)
        out_h = _round(region_h * size.percent / 100)
    elif size.kind == "w":
        assert size.width is not None
        out_w, out_h = size.width, _round(Fraction(region_h * size.width, region_w))
    elif size.kind == "h":
        assert size.height is not None
        out_w, out_h = _round(Fraction(region_w * size.height, region_h)), size.height
    else:
        assert size.width is not None and size.height is not None
        out_w, out_h = size.width, size.height
    if out_w < 1 or out_h < 1:
        raise _bad("size", text, f"gives an image smaller than 1 pixel ({out_w}x{out_h})")
    if (out_w > region_w or out_h > region_h) and not size.upscale:
        raise _bad(
            "size",
            text,
            f"{out_w}x{out_h} is larger than the {region_w}x{region_h} region; "
            "upscaling needs the ^ prefix",
        )
    _check_limits(text, out_w, out_h, limits)
    return out_w, out_h


def _size_text(size: SizeParam) -> str:
    prefix = "^" if size.upscale else ""
    if size.kind == "max":
        return prefix + "max"
    if size.kind == "pct":
        assert size.percent is not None
        return f"{prefix}pct:{_fraction_text(size.percent)}"
    bang = "!" if size.kind == "confined" else ""
    w = "" if size.width is None else str(size.width)
    h = "" if size.height is None else str(size.height)
    return f"{prefix}{bang}{w},{h}"


def _within(out_w: int, out_h: int, limits: IIIFLimits) -> bool:
    return (
        out_w <= limits.max_width
        and out_h <= limits.max_height
        and out_w * out_h <= limits.max_area
    )


def _check_limits(text: str, out_w: int, out_h: int, limits: IIIFLimits) -> None:
    if out_w > limits.max_width:
        raise _bad("size", text, f"width {out_w} exceeds maxWidth {limits.max_width}")
    if out_h > limits.max_height:
        raise _bad("size", text, f"height {out_h} exceeds maxHeight {limits.max_height}")
    if out_w * out_h > limits.max_area:
        raise _bad("size", text, f"area {out_w}x{out_h} exceeds maxArea {limits.max_area}")


def _fit(region_w: int, region_h: int, limits: IIIFLimits, cap: Fraction | None) -> tuple[int, int]:
    """Scale the region, keeping its aspect ratio, as large as ``cap`` and the limits allow.

    Scaling that the limits force rounds down, so the result never exceeds them.
    """
    scale = min(Fraction(limits.max_width, region_w), Fraction(limits.max_height, region_h))
    area_scale = Fraction(math.sqrt(limits.max_area / (region_w * region_h)))
    limited = min(scale, area_scale)
    if cap is not None and cap <= limited:
        out_w, out_h = _round(region_w * cap), _round(region_h * cap)
    else:
        out_w, out_h = math.floor(region_w * limited), math.floor(region_h * limited)
    out_w, out_h = max(1, min(out_w, limits.max_width)), max(1, min(out_h, limits.max_height))
    while out_w * out_h > limits.max_area and max(out_w, out_h) > 1:
        # Floating-point sqrt may land a hair above the area limit.
        if out_w >= out_h:
            out_w -= 1
        else:
            out_h -= 1
    return out_w, out_h


def _canonical_size(
    out_w: int, out_h: int, region_w: int, region_h: int, limits: IIIFLimits
) -> str:
    """Return the canonical size segment (spec 4.8) for a resolved output size."""
    if (out_w, out_h) == _fit(region_w, region_h, limits, cap=Fraction(1)):
        return "max"
    upscaled = out_w > region_w or out_h > region_h
    if upscaled and (out_w, out_h) == _fit(region_w, region_h, limits, cap=None):
        return "^max"
    return f"{'^' if upscaled else ''}{out_w},{out_h}"


# --------------------------------------------------------------------------------------------
# Image information


def scale_factors(width: int, height: int, tile: int) -> list[int]:
    """Return 1, 2, 4, ... up to the first factor at which the whole image fits in one tile."""
    if tile < 1:
        raise ValueError(f"tile size must be positive, got {tile}")
    factors = [1]
    while -(-width // factors[-1]) > tile or -(-height // factors[-1]) > tile:
        factors.append(factors[-1] * 2)
    return factors


def info_json(
    *,
    image_id: str,
    width: int,
    height: int,
    tile_width: int,
    tile_height: int,
    scale_factors: list[int],
    limits: IIIFLimits,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the info.json document (spec section 5) of a level-2 image service.

    ``image_id`` is the base URI without a trailing slash. ``extra`` adds properties such as
    ``rights`` or ``service``; its ``extraFeatures``/``extraFormats``/``extraQualities`` lists are
    appended to ours (use that for HTTP features: ``baseUriRedirect``, ``cors``,
    ``jsonldMediaType``, ``canonicalLinkHeader``, ``profileLinkHeader``).
    """
    if tile_width > limits.max_width or tile_height > limits.max_height:
        raise ValueError("tiles must fit the size limits (spec 5.2)")
    if tile_width * tile_height > limits.max_area:
        raise ValueError("tiles must fit the area limit (spec 5.2)")
    doc: dict[str, Any] = {
        "@context": CONTEXT,
        "id": image_id.rstrip("/"),
        "type": "ImageService3",
        "protocol": PROTOCOL,
        "profile": PROFILE,
        "width": width,
        "height": height,
        "maxWidth": limits.max_width,
        "maxHeight": limits.max_height,
        "maxArea": limits.max_area,
        "sizes": _sizes(width, height, scale_factors, limits),
        "tiles": [
            {"width": tile_width, "height": tile_height, "scaleFactors": sorted(scale_factors)}
        ],
        "extraFormats": list(EXTRA_FORMATS),
        "extraQualities": list(EXTRA_QUALITIES),
        "extraFeatures": list(EXTRA_FEATURES),
    }
    for key, value in (extra or {}).items():
        if key in ("@context", "id", "type", "protocol", "profile", "width", "height"):
            raise ValueError(f"info.json property {key!r} cannot be overridden")
        if key in ("extraFeatures", "extraFormats", "extraQualities"):
            doc[key] += [item for item in value if item not in doc[key]]
        else:
            doc[key] = value
    return doc


def _sizes(
    width: int, height: int, scale_factors: list[int], limits: IIIFLimits
) -> list[dict[str, int]]:
    """Return small full-image sizes at the tile scale factors, ascending, within the limits."""
    seen: set[tuple[int, int]] = set()
    for factor in scale_factors:
        w, h = -(-width // factor), -(-height // factor)
        if max(w, h) > SIZES_MAX_DIMENSION:
            continue
        if w > limits.max_width or h > limits.max_height or w * h > limits.max_area:
            continue
        seen.add((w, h))
    return [{"width": w, "height": h} for w, h in sorted(seen)]
