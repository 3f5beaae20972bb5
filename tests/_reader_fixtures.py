"""Small TIFF files written on the spot for the reader tests (independent of slideserver.samples).

They reproduce the traits of real scanner files that the readers must handle: Aperio-style
abbreviated JPEG tiles sharing one JPEGTables tag and RGB-coded without an APP14 marker, tiled
YCbCr JPEG pyramids in top-level IFDs, SubIFD pyramids, and deflate-compressed levels.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile
from numpy.typing import NDArray

from slideserver.codecs import jpeg
from slideserver.readers.base import WouldBlock


def tissue(width: int, height: int, seed: int = 0) -> NDArray[np.uint8]:
    """Return a smooth, textured RGB image that compresses like tissue, on white at the edges."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            180 + 60 * np.sin(x / 37.0 + seed) * np.cos(y / 23.0),
            120 + 70 * np.cos(x / 19.0) * np.sin(y / 41.0 + seed),
            190 + 50 * np.sin((x + y) / 29.0),
        ],
        axis=-1,
    )
    base += rng.normal(0, 6, base.shape)
    mask = (
        (x - width / 2) ** 2 / (width / 2.3) ** 2 + (y - height / 2) ** 2 / (height / 2.3) ** 2
    ) < 1
    base[~mask] = 255
    return np.asarray(np.clip(base, 0, 255), dtype=np.uint8)


def downsample(img: NDArray[np.uint8], factor: int) -> NDArray[np.uint8]:
    """Box-filter ``img`` by an integer factor (size rounded down)."""
    h, w = img.shape[0] // factor, img.shape[1] // factor
    view = img[: h * factor, : w * factor].reshape(h, factor, w, factor, -1).astype(np.float32)
    return np.asarray(view.mean(axis=(1, 3)).round(), dtype=np.uint8)


def tiles_of(img: NDArray[np.uint8], tile: int) -> Iterator[NDArray[np.uint8]]:
    """Yield full ``tile`` x ``tile`` tiles of ``img`` in row-major order, padded with black."""
    h, w = img.shape[:2]
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            out = np.zeros((tile, tile, img.shape[2]), np.uint8)
            part = img[y : y + tile, x : x + tile]
            out[: part.shape[0], : part.shape[1]] = part
            yield out


def _renumber_components(stream: bytes) -> bytes:
    """Give the components IDs 1, 2, 3 (libjpeg-turbo writes 'R', 'G', 'B' for RGB streams).

    Scanners such as Aperio use plain numeric IDs, so nothing in the stream says RGB: decoders
    that do not know the TIFF Photometric tag then assume YCbCr.
    """
    out = bytearray(stream)
    for seg in jpeg.iter_header_segments(stream):
        if seg.marker == 0xC0:
            n = out[seg.payload + 5]
            for i in range(n):
                out[seg.payload + 6 + 3 * i] = i + 1
        elif seg.marker == 0xDA:
            n = out[seg.payload]
            for i in range(n):
                out[seg.payload + 1 + 2 * i] = i + 1
    return bytes(out)


def rgb_jpeg_tiles(
    img: NDArray[np.uint8], tile: int, quality: int = 80
) -> tuple[bytes, list[bytes]]:
    """Encode ``img`` as Aperio does: RGB without colour transform, tables split out, no APP14.

    Returns the JPEGTables stream and the abbreviated tile streams.
    """
    tables: bytes | None = None
    out: list[bytes] = []
    for t in tiles_of(img, tile):
        full = _renumber_components(
            bytes(imagecodecs.jpeg8_encode(t, level=quality, colorspace="RGB", outcolorspace="RGB"))
        )
        keep = [jpeg.SOI]
        table_segs = [jpeg.SOI]
        for seg in jpeg.iter_header_segments(full):
            if seg.marker in (0xDB, 0xC4):
                table_segs.append(full[seg.start : seg.end])
            elif seg.marker == 0xDA:
                keep.append(full[seg.start :])
            elif seg.marker not in (0xD8, 0xEE):
                keep.append(full[seg.start : seg.end])
        tbl = b"".join(table_segs) + jpeg.EOI
        if tables is None:
            tables = tbl
        assert tbl == tables, "every tile must share one set of tables"
        out.append(b"".join(keep))
    assert tables is not None
    return tables, out


APERIO_DESC = (
    "Aperio Image Library v12.0.15 \r\n{w}x{h} [0,0 {w}x{h}] ({t}x{t}) JPEG/RGB Q=80"
    "|AppMag = 20|StripeWidth = 2040|ScanScope ID = SS1234|Filename = test|MPP = 0.4990"
    "|Date = 01/02/24|Time = 10:11:12"
)


def write_aperio_like(path: Path, width: int = 1100, height: int = 900, tile: int = 256) -> Path:
    """Write a small Aperio-style SVS: RGB-coded JPEG tiles sharing JPEGTables, levels by 4."""
    base = tissue(width, height)
    levels = [base, downsample(base, 4)]
    with tifffile.TiffWriter(path) as tw:
        for i, img in enumerate(levels):
            tables, tiles = rgb_jpeg_tiles(img, tile)
            desc = APERIO_DESC.format(w=width, h=height, t=tile) if i == 0 else f"Aperio level {i}"
            tw.write(
                iter(tiles),
                shape=img.shape,
                dtype=np.uint8,
                tile=(tile, tile),
                compression=7,
                compressionargs={"outcolorspace": "rgb"},  # Photometric RGB, as Aperio writes
                subsampling=(1, 1),
                photometric="rgb",
                jpegtables=tables,
                description=desc,
                metadata=None,
                resolution=((10000 * 2, 1), (10000 * 2, 1)) if i == 0 else None,
                resolutionunit=3 if i == 0 else None,
            )
            if i == 0:
                thumb = downsample(base, 8)
                tw.write(thumb, description="Aperio thumbnail", metadata=None, compression="jpeg")
        label = np.full((120, 200, 3), 230, np.uint8)
        label[40:80, 20:180] = 20
        tw.write(
            label,
            description="Aperio Image Library v12\nlabel 200x120",
            metadata=None,
            compression="lzw",
            subfiletype=1,
        )
        macro = downsample(tissue(800, 300, seed=3), 2)
        tw.write(
            macro,
            description="Aperio Image Library v12\nmacro 400x150",
            metadata=None,
            compression="jpeg",
            subfiletype=9,
        )
    return path


def write_generic_pyramid(
    path: Path,
    width: int = 1000,
    height: int = 700,
    tile: int = 256,
    compression: str = "jpeg",
    subifds: bool = False,
) -> Path:
    """Write a tiled pyramid (levels by 2) in top-level IFDs or in SubIFDs of the first one."""
    base = tissue(width, height, seed=1)
    levels = [base, downsample(base, 2), downsample(base, 4)]
    with tifffile.TiffWriter(path) as tw:
        for i, img in enumerate(levels):
            tw.write(
                img,
                tile=(tile, tile),
                compression=compression,
                photometric="rgb",
                metadata=None,
                subifds=len(levels) - 1 if subifds and i == 0 else None,
                subfiletype=1 if i else 0,
                resolution=((40000, 1), (40000, 1)) if i == 0 else None,
                resolutionunit=3 if i == 0 else None,
            )
    return path


def write_ome_pyramid(path: Path, width: int = 1000, height: int = 800, tile: int = 256) -> Path:
    """Write an OME-TIFF with a SubIFD pyramid and label/macro images, pixel size in nm."""
    base = tissue(width, height, seed=2)
    levels = [base, downsample(base, 2), downsample(base, 4)]
    label = np.full((100, 160, 3), 240, np.uint8)
    macro = downsample(tissue(600, 200, seed=4), 2)
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(
            levels[0],
            subifds=len(levels) - 1,
            tile=(tile, tile),
            compression="jpeg",
            photometric="rgb",
            metadata={
                "axes": "YXS",
                "Name": "slide",
                "PhysicalSizeX": 250.0,
                "PhysicalSizeXUnit": "nm",
                "PhysicalSizeY": 250.0,
                "PhysicalSizeYUnit": "nm",
            },
        )
        for img in levels[1:]:
            tw.write(img, tile=(tile, tile), compression="jpeg", photometric="rgb", subfiletype=1)
        tw.write(
            label, photometric="rgb", compression="lzw", metadata={"axes": "YXS", "Name": "label"}
        )
        tw.write(
            macro, photometric="rgb", compression="jpeg", metadata={"axes": "YXS", "Name": "macro"}
        )
    return path


def write_reader_files(folder: Path, *, deflate_subifds: bool = False) -> dict[str, Path]:
    """Write the five small files the reader tests share, keyed by trait.

    ``svs`` Aperio-style, ``flat`` top-level IFD pyramid, ``deflate`` zlib-compressed levels (in
    SubIFDs when ``deflate_subifds``), ``subifd`` SubIFD pyramid, ``ome`` OME-TIFF.
    """
    return {
        "svs": write_aperio_like(folder / "a.svs"),
        "flat": write_generic_pyramid(folder / "g.tif"),
        "deflate": write_generic_pyramid(
            folder / "d.tif", compression="zlib", subifds=deflate_subifds
        ),
        "subifd": write_generic_pyramid(folder / "s.tif", subifds=True),
        "ome": write_ome_pyramid(folder / "o.ome.tiff"),
    }


def drop_from_page_cache(path: Path) -> None:
    """Ask the kernel to forget the file's cached pages (clean pages only: the file is on disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def blocks_once_evicted(path: Path, read: Callable[[], object], attempts: int = 50) -> bool:
    """Whether ``read`` (a ``nowait`` read) raises WouldBlock once ``path`` leaves the page cache.

    Dropping pages is best effort: the kernel keeps those it cannot free right away (still in
    another CPU's LRU batch, say, on a busy machine), so the drop is tried a few times. A read
    that never blocks answers False.
    """
    for attempt in range(attempts):
        drop_from_page_cache(path)
        try:
            read()
        except WouldBlock:
            return True
        time.sleep(0.01 * min(attempt, 10))  # let the kernel drain its per-CPU page batches
    return False
