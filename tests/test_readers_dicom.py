"""DicomReader and group_series against real DICOM WSI series written by the sample writer."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
from wsidicom import WsiDicom

from slideserver.errors import (
    AssociatedImageNotFound,
    SlideUnreadable,
    TileNotFound,
)
from slideserver.models import SlideSource
from slideserver.readers.dicom import DicomReader, group_series
from slideserver.samples.dicom import write_dicom_wsi
from slideserver.samples.tissue import TissueImage

WIDTH, HEIGHT, TILE = 1024, 768, 256


@pytest.fixture(scope="module")
def tissue() -> TissueImage:
    return TissueImage(WIDTH, HEIGHT, seed=5)


def _secondary_capture(path: Path, study_uid: str) -> None:
    """Write a small non-WSI DICOM image of the same study, as PACS exports mix them in."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.ImageType = ["DERIVED", "SECONDARY", "VOLUME"]
    ds.Rows = ds.Columns = 4
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(16)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory: pytest.TempPathFactory, tissue: TissueImage) -> Path:
    """One folder holding two slides of one case (same study), a non-WSI DICOM and junk."""
    root = tmp_path_factory.mktemp("mixed")
    common = dict(patient_id="PAT-7", patient_name="Roe^Richard", accession="S24-0777")
    for container, stain, label in (
        ("S24-0777-A1-1", "H&E", Image.new("RGB", (200, 160), (220, 20, 20))),
        ("S24-0777-A1-2", "PAS", None),
    ):
        folder = write_dicom_wsi(
            root / container,
            tissue,
            tile_size=TILE,
            level_count=3,
            mpp=0.25,
            container_id=container,
            stain=stain,
            label=label,
            macro=Image.new("RGB", (300, 100), (20, 20, 220)) if label else None,
            **common,
        )
        for path in folder.iterdir():
            path.rename(root / f"{container}-{path.name}")
        folder.rmdir()
    study_uid = pydicom.dcmread(root / "S24-0777-A1-1-level-0.dcm", stop_before_pixels=True)
    _secondary_capture(root / "secondary-capture.dcm", study_uid.StudyInstanceUID)
    (root / "junk.dcm").write_bytes(b"not a dicom file at all" * 10)
    return root


@pytest.fixture(scope="module")
def slides(mixed_folder: Path) -> list[SlideSource]:
    return group_series(sorted(mixed_folder.iterdir()))


@pytest.fixture
def reader(slides: list[SlideSource]) -> Iterator[DicomReader]:
    with DicomReader(slides[0]) as opened:
        assert isinstance(opened, DicomReader)
        yield opened


@pytest.fixture
def wsi(slides: list[SlideSource]) -> Iterator[WsiDicom]:
    with WsiDicom.open(slides[0].files) as opened:
        yield opened


# -- group_series and detect ------------------------------------------------------------------


def test_group_series_separates_two_slides_of_one_study(slides: list[SlideSource]) -> None:
    names = [[p.name for p in s.files] for s in slides]
    assert names == [
        [
            "S24-0777-A1-1-label.dcm",
            "S24-0777-A1-1-level-0.dcm",
            "S24-0777-A1-1-level-1.dcm",
            "S24-0777-A1-1-level-2.dcm",
            "S24-0777-A1-1-overview.dcm",
        ],
        [
            "S24-0777-A1-2-level-0.dcm",
            "S24-0777-A1-2-level-1.dcm",
            "S24-0777-A1-2-level-2.dcm",
        ],
    ]


def test_group_series_sources_name_the_folder_and_format(
    slides: list[SlideSource], mixed_folder: Path
) -> None:
    assert {(s.path, s.format_hint) for s in slides} == {(mixed_folder, "dicom")}


def test_group_series_ignores_non_wsi_dicom_and_junk(slides: list[SlideSource]) -> None:
    grouped = {p.name for s in slides for p in s.files}
    assert "secondary-capture.dcm" not in grouped
    assert "junk.dcm" not in grouped


def test_group_series_of_nothing_wsi_is_empty(mixed_folder: Path) -> None:
    assert group_series([mixed_folder / "junk.dcm", mixed_folder / "secondary-capture.dcm"]) == []


def test_detect_claims_the_files_of_a_slide(slides: list[SlideSource]) -> None:
    assert DicomReader.detect(slides[1]) == "dicom"


def test_detect_refuses_non_wsi_and_junk(mixed_folder: Path, tmp_path: Path) -> None:
    foreign = SlideSource(
        path=mixed_folder,
        files=(mixed_folder / "junk.dcm", mixed_folder / "secondary-capture.dcm"),
    )
    assert DicomReader.detect(foreign) is None
    text = tmp_path / "slide.svs"
    text.write_bytes(b"II*\x00" + bytes(200))
    assert DicomReader.detect(SlideSource(path=text)) is None
    assert DicomReader.detect(SlideSource(path=tmp_path / "missing")) is None


def test_detect_claims_a_folder_of_one_slide(slides: list[SlideSource], tmp_path: Path) -> None:
    for path in slides[1].files:
        shutil.copy(path, tmp_path / path.name)
    assert DicomReader.detect(SlideSource(path=tmp_path)) == "dicom"
    with DicomReader(SlideSource(path=tmp_path)) as opened:
        assert len(opened.info.levels) == 3


# -- info ---------------------------------------------------------------------------------------


def test_info_levels(reader: DicomReader) -> None:
    levels = [
        (lv.width, lv.height, lv.downsample, lv.tile_width, lv.tile_height)
        for lv in reader.info.levels
    ]
    assert levels == [
        (1024, 768, 1.0, 256, 256),
        (512, 384, 2.0, 256, 256),
        (256, 192, 4.0, 256, 256),
    ]


def test_info_optics_and_vendor(reader: DicomReader) -> None:
    info = reader.info
    assert info.format == "dicom"
    assert info.mpp_x == pytest.approx(0.25) and info.mpp_y == pytest.approx(0.25)
    assert info.objective_power == 40
    assert info.vendor == "slideserver"


def test_info_associated_names(reader: DicomReader, slides: list[SlideSource]) -> None:
    assert reader.info.associated == ("label", "macro")
    with DicomReader(slides[1]) as other:
        assert other.info.associated == ()


def test_info_properties_link_patient_case_and_slide(reader: DicomReader) -> None:
    props = reader.info.properties
    level0 = pydicom.dcmread(reader.source.files[1], stop_before_pixels=True)
    assert props["dicom.PatientID"] == "PAT-7"
    assert props["dicom.PatientName"] == "Roe^Richard"
    assert props["dicom.AccessionNumber"] == "S24-0777"
    assert props["dicom.ContainerIdentifier"] == "S24-0777-A1-1"
    assert props["dicom.SpecimenIdentifier"] == "S24-0777-A1-1"
    assert props["dicom.Stain"] == "H&E"
    assert props["dicom.Manufacturer"] == "slideserver"
    assert props["dicom.StudyInstanceUID"] == level0.StudyInstanceUID
    assert props["dicom.SeriesInstanceUID"] == level0.SeriesInstanceUID
    assert all(isinstance(v, str) for v in props.values())


# -- pixels -------------------------------------------------------------------------------------


def test_read_region_matches_wsidicom(reader: DicomReader, wsi: WsiDicom) -> None:
    ours = reader.read_region(200, 120, 1, 300, 200)
    theirs = wsi.read_region((100, 60), 1, (300, 200)).convert("RGB")
    assert ours.mode == "RGB"
    assert ours.size == (300, 200)
    assert np.array_equal(np.asarray(ours), np.asarray(theirs))


def test_read_region_matches_tissue(reader: DicomReader, tissue: TissueImage) -> None:
    ours = np.asarray(reader.read_region(0, 0, 0, WIDTH, HEIGHT), dtype=float)
    assert np.abs(ours - tissue.region(0, 0, WIDTH, HEIGHT)).mean() < 3.0


def test_read_region_outside_the_slide_is_white(reader: DicomReader, wsi: WsiDicom) -> None:
    region = np.asarray(reader.read_region(-40, 700, 0, 100, 100))
    assert (region[:, :40] == 255).all()
    assert (region[68:, :] == 255).all()
    inside = np.asarray(wsi.read_region((0, 700), 0, (60, 68)).convert("RGB"))
    assert np.array_equal(region[:68, 40:], inside)
    assert (np.asarray(reader.read_region(5000, 5000, 2, 10, 10)) == 255).all()


def test_read_region_bad_level_is_not_found(reader: DicomReader) -> None:
    with pytest.raises(TileNotFound):
        reader.read_region(0, 0, 3, 10, 10)


def test_encoded_tile_is_the_stored_jpeg_frame(reader: DicomReader, wsi: WsiDicom) -> None:
    for level, col, row in ((0, 1, 1), (0, 3, 2), (1, 1, 1), (2, 0, 0)):
        tile = reader.read_encoded_tile(level, col, row)
        assert tile is not None
        assert (tile.media_type, tile.width, tile.height) == ("image/jpeg", TILE, TILE)
        decoded = np.asarray(Image.open(io.BytesIO(tile.data)).convert("RGB"))
        expected = wsi.read_tile(level, (col, row), crop_to_image_boundary=False)
        assert np.array_equal(decoded, np.asarray(expected.convert("RGB"))), (level, col, row)


@pytest.mark.parametrize(("level", "col", "row"), [(0, 4, 0), (0, 0, 3), (0, -1, 0), (2, 1, 0)])
def test_encoded_tile_out_of_range_is_not_found(
    reader: DicomReader, level: int, col: int, row: int
) -> None:
    with pytest.raises(TileNotFound):
        reader.read_encoded_tile(level, col, row)


def test_encoded_tile_of_unknown_level_is_not_found(reader: DicomReader) -> None:
    with pytest.raises(TileNotFound):
        reader.read_encoded_tile(7, 0, 0)


def test_associated_images(reader: DicomReader) -> None:
    label = reader.associated("label")
    macro = reader.associated("macro")
    assert (label.mode, label.size) == ("RGB", (200, 160))
    assert (macro.mode, macro.size) == ("RGB", (300, 100))
    assert np.abs(np.asarray(label, dtype=int)[80, 100] - (220, 20, 20)).max() < 8


def test_unknown_associated_image_is_not_found(reader: DicomReader) -> None:
    with pytest.raises(AssociatedImageNotFound):
        reader.associated("thumbnail")


def test_reads_from_several_threads_agree(reader: DicomReader) -> None:
    expected = np.asarray(reader.read_region(0, 0, 0, 512, 512))

    def read(_: int) -> bool:
        return np.array_equal(np.asarray(reader.read_region(0, 0, 0, 512, 512)), expected)

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(read, range(32)))


# -- broken files -------------------------------------------------------------------------------


def _truncated_copy(slides: list[SlideSource], tmp_path: Path, keep: int) -> SlideSource:
    files = []
    for path in slides[1].files:
        copy = tmp_path / path.name
        shutil.copy(path, copy)
        files.append(copy)
    base = files[0]
    base.write_bytes(base.read_bytes()[:keep])
    return SlideSource(path=tmp_path, files=tuple(files), format_hint="dicom")


def test_truncated_header_is_unreadable(slides: list[SlideSource], tmp_path: Path) -> None:
    source = _truncated_copy(slides, tmp_path, keep=600)
    with pytest.raises(SlideUnreadable):
        DicomReader(source)


def test_truncated_pixel_data_is_unreadable(slides: list[SlideSource], tmp_path: Path) -> None:
    size = slides[1].files[0].stat().st_size
    source = _truncated_copy(slides, tmp_path, keep=size // 2)
    # at open, or at the first read of a lost tile
    with pytest.raises(SlideUnreadable), DicomReader(source) as opened:
        opened.read_region(0, 0, 0, WIDTH, HEIGHT)


def test_unreadable_slide_message_names_no_folder(
    slides: list[SlideSource], tmp_path: Path
) -> None:
    source = _truncated_copy(slides, tmp_path, keep=600)
    with pytest.raises(SlideUnreadable) as caught:
        DicomReader(source)
    assert str(tmp_path) not in caught.value.detail
    assert "S24-0777-A1-2-level-0.dcm" in caught.value.detail


def test_nowait_reads_are_left_to_worker_threads(reader: DicomReader) -> None:
    from slideserver.readers.base import WouldBlock

    with pytest.raises(WouldBlock):  # wsidicom's frame reads may wait for a disk
        reader.read_encoded_tile(0, 1, 1, nowait=True)
