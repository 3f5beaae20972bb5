"""The DICOM WSI writer: the series opens in wsidicom with the right geometry, metadata, pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import JPEGBaseline8Bit, VLWholeSlideMicroscopyImageStorage
from wsidicom import WsiDicom

from slideserver.samples.dicom import write_dicom_wsi
from slideserver.samples.tissue import TissueImage

WIDTH, HEIGHT, TILE = 1024, 768, 256


@pytest.fixture(scope="module")
def tissue() -> TissueImage:
    return TissueImage(WIDTH, HEIGHT, seed=3)


def _write(out: Path, tissue: TissueImage) -> Path:
    return write_dicom_wsi(
        out,
        tissue,
        tile_size=TILE,
        level_count=3,
        mpp=0.25,
        patient_id="PAT-1",
        patient_name="Doe^Jane",
        accession="S24-0001",
        container_id="S24-0001-A1-1",
        stain="hematoxylin and eosin",
        label=Image.new("RGB", (320, 240), (200, 30, 30)),
        macro=Image.new("RGB", (600, 200), (30, 30, 200)),
    )


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory, tissue: TissueImage) -> Path:
    return _write(tmp_path_factory.mktemp("dicom") / "slide", tissue)


@pytest.fixture
def wsi(series: Path) -> WsiDicom:
    with WsiDicom.open(series) as opened:
        yield opened


def test_returns_the_series_folder_with_one_file_per_instance(series: Path) -> None:
    names = sorted(p.name for p in series.iterdir())
    assert names == ["label.dcm", "level-0.dcm", "level-1.dcm", "level-2.dcm", "overview.dcm"]


def test_levels_step_by_two(wsi: WsiDicom) -> None:
    sizes = [(level.level, level.size.width, level.size.height) for level in wsi.levels]
    assert sizes == [(0, 1024, 768), (1, 512, 384), (2, 256, 192)]
    assert wsi.tile_size.width == TILE


def test_mpp_is_the_pixel_spacing(wsi: WsiDicom) -> None:
    assert wsi.mpp.width == pytest.approx(0.25)
    assert wsi.mpp.height == pytest.approx(0.25)


def test_label_and_overview_open(wsi: WsiDicom) -> None:
    assert wsi.read_label().size == (320, 240)
    assert wsi.read_overview().size == (600, 200)
    assert np.abs(np.asarray(wsi.read_label().convert("RGB"))[100, 100] - (200, 30, 30)).max() < 8


def test_level0_pixels_match_tissue(wsi: WsiDicom, tissue: TissueImage) -> None:
    read = np.asarray(wsi.read_region((0, 0), 0, (WIDTH, HEIGHT)).convert("RGB"), dtype=float)
    diff = np.abs(read - tissue.region(0, 0, WIDTH, HEIGHT))
    assert diff.mean() < 3.0


def test_lower_level_pixels_match_tissue_at_that_downsample(
    wsi: WsiDicom, tissue: TissueImage
) -> None:
    read = np.asarray(wsi.read_region((0, 0), 2, (256, 192)).convert("RGB"), dtype=float)
    diff = np.abs(read - tissue.region(0, 0, 256, 192, 4))
    assert diff.mean() < 5.0  # denser texture than level 0: more JPEG loss


def test_instances_are_jpeg_baseline_tiled_full_wsi(series: Path) -> None:
    ds = pydicom.dcmread(series / "level-1.dcm", stop_before_pixels=True)
    assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert ds.SOPClassUID == VLWholeSlideMicroscopyImageStorage
    assert ds.DimensionOrganizationType == "TILED_FULL"
    assert list(ds.ImageType) == ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"]
    assert (ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows) == (512, 384)
    assert ds.NumberOfFrames == 2 * 2
    spacing = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    assert [float(v) for v in spacing] == [0.0005, 0.0005]
    assert list(pydicom.dcmread(series / "level-0.dcm").ImageType)[:3] == [
        "ORIGINAL",
        "PRIMARY",
        "VOLUME",
    ]


def test_frames_decode_with_pydicom(series: Path) -> None:
    ds = pydicom.dcmread(series / "level-2.dcm")
    assert ds.pixel_array.shape == (1, TILE, TILE, 3) or ds.pixel_array.shape == (TILE, TILE, 3)


def test_associated_instances_share_study_frame_of_reference_and_container(series: Path) -> None:
    level = pydicom.dcmread(series / "level-0.dcm", stop_before_pixels=True)
    for name, flavor in (("label.dcm", "LABEL"), ("overview.dcm", "OVERVIEW")):
        ds = pydicom.dcmread(series / name, stop_before_pixels=True)
        assert ds.ImageType[2] == flavor
        assert ds.StudyInstanceUID == level.StudyInstanceUID
        assert ds.FrameOfReferenceUID == level.FrameOfReferenceUID
        assert ds.ContainerIdentifier == level.ContainerIdentifier
        assert ds.SOPInstanceUID != level.SOPInstanceUID


def test_patient_case_and_specimen_are_recorded(wsi: WsiDicom, series: Path) -> None:
    ds = pydicom.dcmread(series / "level-0.dcm", stop_before_pixels=True)
    assert (ds.PatientID, str(ds.PatientName), ds.AccessionNumber) == (
        "PAT-1",
        "Doe^Jane",
        "S24-0001",
    )
    assert ds.ContainerIdentifier == "S24-0001-A1-1"
    assert ds.SpecimenDescriptionSequence[0].SpecimenIdentifier == "S24-0001-A1-1"
    slide = wsi.metadata.slide
    assert slide.identifier == "S24-0001-A1-1"
    assert [s.substances for s in slide.stainings] == ["hematoxylin and eosin"]


def test_repeated_runs_write_identical_files(
    tmp_path: Path, series: Path, tissue: TissueImage
) -> None:
    again = _write(tmp_path / "again", tissue)
    for path in series.iterdir():
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name
