"""The sample slide generator writes real files that the reference libraries read as intended."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import numpy as np
import numpy.typing as npt
import openslide
import pytest
import tifffile
from PIL import Image

from slideserver.samples import (
    SAMPLE_PATIENT_NAME,
    sample_specs,
    write_samples,
)
from slideserver.samples.tiff import encode_jpeg, split_jpeg_tables
from slideserver.samples.tissue import TissueImage

SVS = "S24-01234_A1_HE"
KI67 = "S24-01234_A2_KI67"
OME = "S24-05678_B1_HE"
DICOM = "S24-05678_B2_PAS"
ADOBE_APP14 = b"\xff\xd8\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"


@pytest.fixture(scope="session")
def samples(samples_root: Path) -> dict[str, Path]:
    """The session's samples (conftest writes them once); this call only checks they are valid."""
    return write_samples(samples_root)


def _tissue(name: str) -> TissueImage:
    return next(spec for spec in sample_specs() if spec.name == name).tissue()


def _stored_tile(page: tifffile.TiffPage, index: int) -> bytes:
    handle = page.parent.filehandle
    handle.seek(page.dataoffsets[index])
    return bytes(handle.read(page.databytecounts[index]))


def _rgb(image: Image.Image) -> npt.NDArray[np.int16]:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_write_samples_names_follow_the_catalog_rule(samples: dict[str, Path]) -> None:
    for name, path in samples.items():
        assert re.fullmatch(r"S\d\d-\d{5}_[A-Z]\d_[A-Z0-9]+", name)
        assert path.name.startswith(name)
    assert {SVS, KI67, OME} <= samples.keys()


def test_svs_opens_as_aperio_with_levels_stepping_by_4(samples: dict[str, Path]) -> None:
    with openslide.OpenSlide(samples[SVS]) as slide:
        assert slide.properties[openslide.PROPERTY_NAME_VENDOR] == "aperio"
        assert slide.level_dimensions == ((8192, 6144), (2048, 1536), (512, 384))
        assert slide.level_downsamples == (1.0, 4.0, 16.0)
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == 0.25
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_Y]) == 0.25
        assert slide.properties[openslide.PROPERTY_NAME_OBJECTIVE_POWER] == "40"
        assert slide.properties["aperio.Barcode"] == "S24-01234-A1"


def test_svs_has_label_macro_and_thumbnail(samples: dict[str, Path]) -> None:
    with openslide.OpenSlide(samples[SVS]) as slide:
        assert set(slide.associated_images) == {"label", "macro", "thumbnail"}
        assert slide.associated_images["macro"].width > slide.associated_images["macro"].height


def test_svs_tiles_share_jpegtables_and_lack_app14(samples: dict[str, Path]) -> None:
    with tifffile.TiffFile(samples[SVS]) as tif:
        tiled = [p for p in tif.pages if isinstance(p, tifffile.TiffPage) and p.is_tiled]
        assert len(tiled) == 3
        for page in tiled:
            assert page.photometric == tifffile.PHOTOMETRIC.RGB
            assert page.jpegtables is not None and b"\xff\xdb" in page.jpegtables
            for index in (0, len(page.dataoffsets) // 2, len(page.dataoffsets) - 1):
                tile = _stored_tile(page, index)
                assert tile.startswith(b"\xff\xd8\xff\xc0")  # SOI then SOF0: no APPn, no tables
                assert b"\xff\xee" not in tile[:64] and b"\xff\xdb" not in tile


def test_svs_tiles_decode_correctly_only_with_app14(samples: dict[str, Path]) -> None:
    with tifffile.TiffFile(samples[SVS]) as tif:
        page = tif.pages.first
        columns = -(-page.imagewidth // page.tilewidth)
        row, col = 12, 16
        tables = page.jpegtables
        assert tables is not None
        merged = tables[:-2] + _stored_tile(page, row * columns + col)[2:]
        expected = page.asarray()[row * 256 : (row + 1) * 256, col * 256 : (col + 1) * 256]
    guessed = _rgb(Image.open(io.BytesIO(merged)))
    told = _rgb(Image.open(io.BytesIO(ADOBE_APP14 + merged[2:])))
    assert np.abs(told - expected).mean() == 0
    assert np.abs(guessed - expected).mean() > 10  # decoded as YCbCr: the trap real SVS sets


@pytest.mark.parametrize("level", [0, 1, 2])
def test_svs_pixels_match_tissue(samples: dict[str, Path], level: int) -> None:
    tissue = _tissue(SVS)
    with openslide.OpenSlide(samples[SVS]) as slide:
        downsample = round(slide.level_downsamples[level])
        width, height = slide.level_dimensions[level]
        x, y = width // 3, height // 3
        got = _rgb(slide.read_region((x * downsample, y * downsample), level, (256, 256)))
    expected = tissue.region(x, y, 256, 256, downsample).astype(np.int16)
    assert np.abs(got - expected).mean() < 5
    assert np.abs(got.mean(axis=(0, 1)) - expected.mean(axis=(0, 1))).max() < 1.5


def test_ki67_tiff_opens_as_generic_tiff_with_levels_stepping_by_2(
    samples: dict[str, Path],
) -> None:
    with openslide.OpenSlide(samples[KI67]) as slide:
        assert slide.properties[openslide.PROPERTY_NAME_VENDOR] == "generic-tiff"
        assert slide.level_count >= 4
        assert slide.level_downsamples == tuple(2.0**n for n in range(slide.level_count))
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.5)
        pixels = _rgb(slide.read_region((4096, 3072), 0, (256, 256)))
    expected = _tissue(KI67).region(4096, 3072, 256, 256).astype(np.int16)
    assert np.abs(pixels - expected).mean() < 5


def test_ome_tiff_pyramid_and_physical_size(samples: dict[str, Path]) -> None:
    with tifffile.TiffFile(samples[OME]) as tif:
        assert tif.is_ome
        series = tif.series[0]
        shapes = [level.shape for level in series.levels]
        assert shapes[:3] == [(6144, 8192, 3), (3072, 4096, 3), (1536, 2048, 3)]
        assert series.levels[1].keyframe.is_subifd
        assert tif.pages.first.tilewidth == 256
        ome = tif.ome_metadata or ""
        pixels = series.levels[2].asarray()[256:512, 256:512]
    assert 'PhysicalSizeX="0.25"' in ome and 'PhysicalSizeY="0.25"' in ome
    expected = _tissue(OME).region(256, 256, 256, 256, 4).astype(np.int16)
    assert np.abs(pixels.astype(np.int16) - expected).mean() < 6


def test_ome_tiff_has_label_and_macro_images(samples: dict[str, Path]) -> None:
    with tifffile.TiffFile(samples[OME]) as tif:
        names = [series.name for series in tif.series]
    assert names[1:] == ["label", "macro"]


def test_label_shows_text_and_barcode(samples: dict[str, Path]) -> None:
    with openslide.OpenSlide(samples[SVS]) as slide:
        label = _rgb(slide.associated_images["label"]).mean(axis=2)
    ink = label < 100
    assert 0.05 < ink.mean() < 0.5  # printed, not blank and not black
    assert ink[label.shape[0] // 2 :].any()  # text under the barcode


def test_dicom_sample_carries_the_synthetic_patient(samples: dict[str, Path]) -> None:
    if DICOM not in samples:
        pytest.skip("DICOM writer (slideserver.samples.dicom) not available")
    import pydicom

    files = sorted(samples[DICOM].glob("*.dcm"))
    assert files
    dataset = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert str(dataset.PatientName) == SAMPLE_PATIENT_NAME
    assert dataset.AccessionNumber == "S24-05678"


def test_write_samples_keeps_valid_and_rewrites_broken_files(
    samples: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(next(iter(samples.values())).parent, out)
    kept = out / samples[SVS].name
    broken = out / samples[KI67].name
    kept_mtime = kept.stat().st_mtime_ns
    broken.write_bytes(broken.read_bytes()[:1000])
    result = write_samples(out)
    assert kept.stat().st_mtime_ns == kept_mtime
    assert broken.stat().st_size == samples[KI67].stat().st_size
    assert result.keys() == samples.keys()
    assert not list(out.glob(".*partial"))


def test_tissue_is_deterministic_per_seed() -> None:
    first = TissueImage(4096, 3072, seed=3).region(1500, 1200, 128, 128)
    again = TissueImage(4096, 3072, seed=3).region(1500, 1200, 128, 128)
    other = TissueImage(4096, 3072, seed=4).region(1500, 1200, 128, 128)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_tissue_downsample_matches_block_mean_of_level_0() -> None:
    tissue = TissueImage(4096, 3072, seed=1)
    full = tissue.region(1024, 1024, 1024, 1024).astype(np.float64)
    reduced = tissue.region(256, 256, 256, 256, downsample=4).astype(np.float64)
    assert np.abs(full.reshape(256, 4, 256, 4, 3).mean(axis=(1, 3)) - reduced).mean() < 2


def test_tissue_has_tissue_and_glass_and_glass_outside() -> None:
    tissue = TissueImage(4096, 3072, seed=1)
    assert 0.25 < tissue.tissue_fraction(0, 0, 512, 384, downsample=8) < 0.6
    outside = tissue.region(4096, 0, 64, 64)
    assert outside.min() > 225  # near-white glass past the edge, for padded edge tiles


def test_split_jpeg_tables_round_trips() -> None:
    pixels = TissueImage(1024, 1024, seed=2).region(256, 256, 256, 256)
    stream = encode_jpeg(pixels)
    tables, abbreviated = split_jpeg_tables(stream)
    assert b"\xff\xdb" not in abbreviated and b"\xff\xc4" not in abbreviated
    merged = tables[:-2] + abbreviated[2:]
    assert np.array_equal(
        _rgb(Image.open(io.BytesIO(merged))), _rgb(Image.open(io.BytesIO(stream)))
    )
