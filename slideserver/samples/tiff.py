"""Write sample slides as TIFF: Aperio SVS, generic pyramidal TIFF and OME-TIFF.

The files are written by tifffile from tiles we JPEG-code ourselves, so that each format carries
the peculiarities real files have and the server must cope with:

* SVS: RGB-coded JPEG tiles (no YCbCr transform) sharing one JPEGTables tag, without the Adobe
  APP14 marker and with component IDs 0, 1, 2, so a decoder that is not told assumes YCbCr and
  shows wrong colours; levels stepping by 4; Aperio's ImageDescription; IFD order level 0,
  thumbnail, lower levels, label, macro.
* Generic TIFF: YCbCr 4:2:0 JPEG tiles sharing JPEGTables (as libtiff writes them), levels
  stepping by 2 as top-level IFDs, resolution tags for the MPP.
* OME-TIFF: SubIFD pyramid of self-contained YCbCr JPEG tiles (tables in every tile, no
  JPEGTables), OME-XML with PhysicalSize, label and macro as extra named images.

Tiles are generated and coded row by row in a small thread pool and handed to tifffile as an
iterator, so memory stays bounded whatever the slide size.
"""

from __future__ import annotations

import math
import os
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import imagecodecs
import numpy as np
import numpy.typing as npt
import tifffile
from PIL import Image

__all__ = [
    "GENERATOR_TAG",
    "AperioInfo",
    "aperio_description",
    "encode_jpeg",
    "pyramid_sizes",
    "split_jpeg_tables",
    "write_generic_tiff",
    "write_ome_tiff",
    "write_svs",
]

GENERATOR_TAG = "slideserver-samples 1"
"""Written to the Software tag; bump it when the pictures change, so old samples get rewritten."""
APERIO_LIBRARY = "Aperio Image Library v12.0.15"
TILE = 256
Pixels = npt.NDArray[np.uint8]
Encoder = Callable[[Pixels], bytes]

_SOI, _EOI, _SOS = b"\xff\xd8", b"\xff\xd9", 0xDA
_DQT, _DHT, _SOF0, _APP0, _APP15, _COM = 0xDB, 0xC4, 0xC0, 0xE0, 0xEF, 0xFE


class Tissue(Protocol):
    """What the writers need of :class:`slideserver.samples.tissue.TissueImage`."""

    width: int
    height: int

    def region(self, x: int, y: int, w: int, h: int, downsample: int = 1) -> Pixels: ...

    def thumbnail(self, max_size: int) -> Pixels: ...


# -- JPEG coding -------------------------------------------------------------------------------


def encode_jpeg(pixels: Pixels, *, quality: int = 80, rgb: bool = False) -> bytes:
    """Code ``pixels`` as a baseline JPEG with standard Huffman tables and no APPn segments.

    ``rgb=True`` codes the RGB samples as they are (no YCbCr transform, no subsampling) and
    numbers the components 0, 1, 2, as Aperio does; otherwise YCbCr 4:2:0. Fixed quality and
    standard tables make DQT/DHT identical for every tile, so they can move to JPEGTables.
    """
    if rgb:
        stream = imagecodecs.jpeg8_encode(
            pixels, level=quality, colorspace="RGB", outcolorspace="RGB", subsampling="444"
        )
    else:
        stream = imagecodecs.jpeg8_encode(
            pixels, level=quality, colorspace="RGB", outcolorspace="YCBCR", subsampling="420"
        )
    return _rewrite(bytes(stream), component_ids=(0, 1, 2) if rgb else None)


def _segments(stream: bytes) -> Iterator[tuple[int, int, int]]:
    """Yield ``(marker, start, end)`` per header segment, then the scan (``_SOS``) to the end."""
    if not stream.startswith(_SOI):
        raise ValueError("not a JPEG stream: no SOI marker")
    pos = 2
    while pos < len(stream):
        if stream[pos] != 0xFF:
            raise ValueError(f"JPEG marker expected at byte {pos}")
        marker = stream[pos + 1]
        if marker == _SOS:
            yield marker, pos, len(stream)
            return
        length = int.from_bytes(stream[pos + 2 : pos + 4], "big")
        yield marker, pos, pos + 2 + length
        pos += 2 + length
    raise ValueError("JPEG stream has no SOS segment")


def _rewrite(stream: bytes, *, component_ids: Sequence[int] | None) -> bytes:
    """Drop APPn/COM segments; optionally renumber the components in SOF0 and SOS."""
    out = bytearray(_SOI)
    renumber: dict[int, int] = {}
    for marker, start, end in _segments(stream):
        segment = bytearray(stream[start:end])
        if _APP0 <= marker <= _APP15 or marker == _COM:
            continue
        if component_ids is not None and marker == _SOF0:
            for index in range(segment[9]):
                old = segment[10 + 3 * index]
                renumber[old] = component_ids[index]
                segment[10 + 3 * index] = component_ids[index]
        if component_ids is not None and marker == _SOS:
            for index in range(segment[4]):
                segment[5 + 2 * index] = renumber[segment[5 + 2 * index]]
        out += segment
    return bytes(out)


def split_jpeg_tables(stream: bytes) -> tuple[bytes, bytes]:
    """Split a JPEG into ``(tables, abbreviated)``: the JPEGTables value and the tile stream.

    ``tables`` is SOI + DQT/DHT segments + EOI; ``abbreviated`` is the stream without them.
    """
    tables, rest = bytearray(_SOI), bytearray(_SOI)
    for marker, start, end in _segments(stream):
        (tables if marker in (_DQT, _DHT) else rest).extend(stream[start:end])
    return bytes(tables + _EOI), bytes(rest)


class _SharedTables:
    """Encoder wrapper that moves the tables out of each tile and checks they never change."""

    def __init__(self, encode: Encoder, tile: int) -> None:
        self._encode = encode
        self.tables, _ = split_jpeg_tables(encode(np.zeros((tile, tile, 3), dtype=np.uint8)))

    def __call__(self, pixels: Pixels) -> bytes:
        tables, abbreviated = split_jpeg_tables(self._encode(pixels))
        if tables != self.tables:
            raise RuntimeError("JPEG tables differ between tiles; cannot share JPEGTables")
        return abbreviated


# -- tile streams ------------------------------------------------------------------------------


def pyramid_sizes(width: int, height: int, step: int, *, min_side: int = TILE) -> list[int]:
    """Downsamples ``1, step, step**2, ...`` while the level's short side stays >= ``min_side``."""
    downsamples = [1]
    while min(width, height) // (downsamples[-1] * step) >= min_side:
        downsamples.append(downsamples[-1] * step)
    return downsamples


def _workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _tiles(
    tissue: Tissue, downsample: int, width: int, height: int, encode: Encoder, tile: int = TILE
) -> Iterator[bytes]:
    """Yield the coded tiles of one level in TIFF order (rows of columns), bounded lookahead.

    Regions past the level's edge are glass, so edge tiles are full tiles as TIFF wants.
    """
    columns, rows = math.ceil(width / tile), math.ceil(height / tile)

    def row_tiles(row: int) -> list[bytes]:
        return [
            encode(tissue.region(col * tile, row * tile, tile, tile, downsample))
            for col in range(columns)
        ]

    workers = _workers()
    with ThreadPoolExecutor(workers, thread_name_prefix="sample-tiles") as pool:
        pending: deque[Future[list[bytes]]] = deque()
        for row in range(rows):
            pending.append(pool.submit(row_tiles, row))
            if len(pending) >= 2 * workers:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()


def _level_size(tissue: Tissue, downsample: int) -> tuple[int, int]:
    return max(1, tissue.width // downsample), max(1, tissue.height // downsample)


# -- Aperio SVS --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AperioInfo:
    """Scanner metadata that goes into the SVS ImageDescription."""

    filename: str
    barcode: str
    mpp: float = 0.25
    app_mag: int = 40
    quality: int = 80
    date: str = "11/05/24"
    time: str = "13:45:10"
    user: str = "b414003d-95c6-48b0-9369-8010ed517ba7"
    scanscope_id: str = "SS1234"


def aperio_description(
    info: AperioInfo, width: int, height: int, *, level: tuple[int, int] | None = None
) -> str:
    """Aperio's ImageDescription: a header line, then ``|``-separated ``key = value`` pairs.

    ``level`` adds Aperio's ``-> WxH`` for a reduced image (lower levels, thumbnail).
    """
    head = f"{APERIO_LIBRARY}\r\n{width}x{height} [0,0 {width}x{height}] ({TILE}x{TILE})"
    if level is not None:
        head += f" -> {level[0]}x{level[1]}"
    head += f" JPEG/RGB Q={info.quality}"
    fields = {
        "AppMag": str(info.app_mag),
        "StripeWidth": "2040",
        "ScanScope ID": info.scanscope_id,
        "Filename": info.filename,
        "Date": info.date,
        "Time": info.time,
        "Time Zone": "GMT+01:00",
        "User": info.user,
        "MPP": f"{info.mpp:.4f}",
        "Left": "25.691574",
        "Top": "23.449873",
        "LineCameraSkew": "-0.000424",
        "LineAreaXOffset": "0.019265",
        "LineAreaYOffset": "-0.000313",
        "Focus Offset": "0.000000",
        "ImageID": "1004486",
        "OriginalWidth": str(width),
        "OriginalHeight": str(height),
        "Filtered": "5",
        "Barcode": info.barcode,
    }
    return head + "|" + "|".join(f"{key} = {value}" for key, value in fields.items())


def write_svs(
    path: Path,
    tissue: Tissue,
    info: AperioInfo,
    *,
    label: Image.Image,
    macro: Image.Image,
) -> Path:
    """Write ``tissue`` as an Aperio SVS at ``path``; levels step by 4 down to about a tile."""
    encode = _SharedTables(lambda px: encode_jpeg(px, quality=info.quality, rgb=True), TILE)
    width, height = tissue.width, tissue.height
    downsamples = pyramid_sizes(width, height, 4)
    level_bytes = sum(w * h * 3 for w, h in (_level_size(tissue, d) for d in downsamples))
    common: dict[str, Any] = {"software": GENERATOR_TAG, "metadata": None}
    tiled: dict[str, Any] = {
        **common,
        "dtype": np.uint8,
        "tile": (TILE, TILE),
        "photometric": "rgb",
        "compression": "jpeg",
        "compressionargs": {"outcolorspace": "RGB"},
        "subsampling": (1, 1),
        "jpegtables": encode.tables,
    }
    # Classic TIFF as long as JPEG keeps the file far below 4 GB, as Aperio does.
    with tifffile.TiffWriter(path, bigtiff=level_bytes > 8 * 2**30) as tif:
        for index, downsample in enumerate(downsamples):
            level_w, level_h = _level_size(tissue, downsample)
            description = aperio_description(
                info, width, height, level=None if index == 0 else (level_w, level_h)
            )
            tif.write(
                _tiles(tissue, downsample, level_w, level_h, encode),
                shape=(level_h, level_w, 3),
                description=description,
                **tiled,
            )
            if index == 0:
                thumb = _fit(tissue.thumbnail(1024), 1024, 768)
                tif.write(
                    thumb,
                    photometric="rgb",
                    compression="jpeg",
                    compressionargs={"level": 90},
                    rowsperstrip=16,
                    description=aperio_description(
                        info, width, height, level=(thumb.shape[1], thumb.shape[0])
                    ),
                    **common,
                )
        # Associated images: the name is the first word of the description's second line.
        label_pixels = np.asarray(label.convert("RGB"))
        tif.write(
            label_pixels,
            photometric="rgb",
            compression="lzw",
            rowsperstrip=label_pixels.shape[0],
            subfiletype=1,
            description=f"{APERIO_LIBRARY}\nlabel {label.width}x{label.height}",
            **common,
        )
        macro_pixels = np.asarray(macro.convert("RGB"))
        tif.write(
            macro_pixels,
            photometric="rgb",
            compression="jpeg",
            compressionargs={"level": 90},
            rowsperstrip=16,
            subfiletype=9,
            description=f"{APERIO_LIBRARY}\nmacro {macro.width}x{macro.height}",
            **common,
        )
    return path


def _fit(pixels: Pixels, max_w: int, max_h: int) -> Pixels:
    image = Image.fromarray(pixels)
    image.thumbnail((max_w, max_h), Image.Resampling.LANCZOS)
    return np.asarray(image)


# -- generic pyramidal TIFF --------------------------------------------------------------------


def write_generic_tiff(path: Path, tissue: Tissue, *, mpp: float = 0.5, quality: int = 85) -> Path:
    """Write a plain pyramidal tiled TIFF (levels by 2 as top-level IFDs), as vips or libtiff do.

    OpenSlide opens it as ``generic-tiff``; the MPP is in XResolution/YResolution (pixels per cm).
    """
    encode = _SharedTables(lambda px: encode_jpeg(px, quality=quality), TILE)
    pixels_per_cm = 1e4 / mpp
    with tifffile.TiffWriter(path) as tif:
        for index, downsample in enumerate(pyramid_sizes(tissue.width, tissue.height, 2)):
            level_w, level_h = _level_size(tissue, downsample)
            tif.write(
                _tiles(tissue, downsample, level_w, level_h, encode),
                shape=(level_h, level_w, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                photometric="rgb",
                compression="jpeg",
                subsampling=(2, 2),
                jpegtables=encode.tables,
                resolution=(pixels_per_cm / downsample, pixels_per_cm / downsample),
                resolutionunit="CENTIMETER",
                subfiletype=0 if index == 0 else 1,
                software=GENERATOR_TAG,
                metadata=None,
            )
    return path


# -- OME-TIFF ----------------------------------------------------------------------------------


def write_ome_tiff(
    path: Path,
    tissue: Tissue,
    *,
    name: str,
    mpp: float = 0.25,
    label: Image.Image,
    macro: Image.Image,
    quality: int = 85,
) -> Path:
    """Write an OME-TIFF: level 0 with the reduced levels in SubIFDs, then label and macro images.

    Tiles keep their own tables (no JPEGTables), as Bio-Formats exports do.
    """

    def encode(px: Pixels) -> bytes:
        return encode_jpeg(px, quality=quality)

    downsamples = pyramid_sizes(tissue.width, tissue.height, 2)
    pixels_per_cm = 1e4 / mpp
    metadata = {
        "axes": "YXS",
        "UUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"slideserver-sample:{name}")),
        "Name": name,
        "PhysicalSizeX": mpp,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": mpp,
        "PhysicalSizeYUnit": "µm",
    }
    with tifffile.TiffWriter(path, ome=True, bigtiff=True) as tif:
        for index, downsample in enumerate(downsamples):
            level_w, level_h = _level_size(tissue, downsample)
            tif.write(
                _tiles(tissue, downsample, level_w, level_h, encode),
                shape=(level_h, level_w, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                photometric="rgb",
                compression="jpeg",
                subsampling=(2, 2),
                resolution=(pixels_per_cm / downsample, pixels_per_cm / downsample),
                resolutionunit="CENTIMETER",
                software=GENERATOR_TAG,
                **(
                    {"subifds": len(downsamples) - 1, "metadata": metadata}
                    if index == 0
                    else {"subfiletype": 1, "metadata": None}
                ),
            )
        for image_name, image in (("label", label), ("macro", macro)):
            tif.write(
                np.asarray(image.convert("RGB")),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": 90},
                metadata={"axes": "YXS", "Name": image_name},
                software=GENERATOR_TAG,
            )
    return path
