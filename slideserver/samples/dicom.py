"""Write a real DICOM WSI series (VL Whole Slide Microscopy Image Storage) with pydicom.

One instance per pyramid level (levels step by 2), tiled TILED_FULL and JPEG Baseline coded, plus
LABEL and OVERVIEW instances in a second series of the same study, frame of reference and
container, the way many scanners store them. Every UID is derived from the inputs, so writing the
same slide twice gives byte-identical files.

Frames are JPEG-coded into a temporary file first and the encapsulated Pixel Data element is then
appended after the header pydicom writes: a level never sits in memory whole, so large samples
can be written as a stream.
"""

from __future__ import annotations

import io
import math
import shutil
import struct
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sr.codedict import codes
from pydicom.uid import (
    UID,
    JPEGBaseline8Bit,
    VLWholeSlideMicroscopyImageStorage,
    generate_uid,
)

__all__ = ["TissueLike", "write_dicom_wsi"]

JPEG_QUALITY = 90
STUDY_DATE = "20240105"
"""Fixed, so that repeated runs write identical files."""
STUDY_TIME = "093000"
MANUFACTURER = "slideserver"
MODEL_NAME = "slideserver sample writer"
SLIDE_WIDTH_MM = 25.0
SLIDE_HEIGHT_MM = 75.0
"""Glass slide size, for the overview's pixel spacing."""


class TissueLike(Protocol):
    """What the writer needs of a tissue image (``slideserver.samples.tissue.TissueImage``)."""

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    def region(self, x: int, y: int, w: int, h: int, downsample: int = 1) -> np.ndarray:
        """Return ``(h, w, 3)`` uint8 RGB seen at ``downsample``; x, y, w, h in its pixels."""
        ...


def write_dicom_wsi(
    out_dir: Path,
    tissue: TissueLike,
    *,
    tile_size: int = 256,
    level_count: int = 3,
    mpp: float = 0.25,
    patient_id: str,
    patient_name: str,
    accession: str,
    container_id: str,
    stain: str,
    label: Image.Image | None = None,
    macro: Image.Image | None = None,
) -> Path:
    """Write ``tissue`` as a DICOM WSI series into ``out_dir`` and return ``out_dir``.

    Files are named ``level-<n>.dcm``, ``label.dcm`` and ``overview.dcm``.
    """
    if tile_size < 16 or tile_size % 16:
        raise ValueError(f"tile_size must be a positive multiple of 16, got {tile_size}")
    if level_count < 1:
        raise ValueError(f"level_count must be at least 1, got {level_count}")
    out_dir.mkdir(parents=True, exist_ok=True)
    seed = [patient_id, accession, container_id, str(tissue.width), str(tissue.height)]
    study_uid = generate_uid(entropy_srcs=["study", patient_id, accession])
    series_uid = generate_uid(entropy_srcs=["series", *seed, str(tile_size), str(mpp)])
    associated_series_uid = generate_uid(entropy_srcs=["associated-series", *seed])
    frame_of_reference_uid = generate_uid(entropy_srcs=["frame-of-reference", *seed])
    specimen_uid = generate_uid(entropy_srcs=["specimen", container_id])
    common = _common_dataset(
        study_uid=study_uid,
        frame_of_reference_uid=frame_of_reference_uid,
        specimen_uid=specimen_uid,
        patient_id=patient_id,
        patient_name=patient_name,
        accession=accession,
        container_id=container_id,
        stain=stain,
    )
    l0_mm_width = tissue.width * mpp / 1000
    l0_mm_height = tissue.height * mpp / 1000
    for level in range(level_count):
        downsample = 2**level
        l_width = math.ceil(tissue.width / downsample)
        l_height = math.ceil(tissue.height / downsample)
        ds = _image_dataset(
            common,
            series_uid=series_uid,
            instance_uid=generate_uid(entropy_srcs=[series_uid, "level", str(level)]),
            image_type=(
                ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
                if level == 0
                else ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"]
            ),
            instance_number=level + 1,
            series_number=1,
            l_width=l_width,
            l_height=l_height,
            tile_size=tile_size,
            pixel_spacing_mm=mpp * downsample / 1000,
            mm_size=(l0_mm_width, l0_mm_height),
        )
        frames = _level_tiles(tissue, downsample, l_width, l_height, tile_size)
        _write_instance(out_dir / f"level-{level}.dcm", ds, frames)
    for name, image, kind in (("label", label, "LABEL"), ("overview", macro, "OVERVIEW")):
        if image is None:
            continue
        rgb = image.convert("RGB")
        spacing = SLIDE_WIDTH_MM / rgb.width if kind == "OVERVIEW" else None
        ds = _image_dataset(
            common,
            series_uid=associated_series_uid,
            instance_uid=generate_uid(entropy_srcs=[associated_series_uid, kind]),
            image_type=["ORIGINAL", "PRIMARY", kind, "NONE"],
            instance_number=1 if kind == "LABEL" else 2,
            series_number=2,
            l_width=rgb.width,
            l_height=rgb.height,
            tile_size=None,
            pixel_spacing_mm=spacing,
            mm_size=None if spacing is None else (rgb.width * spacing, rgb.height * spacing),
        )
        ds.SpecimenLabelInImage = "YES" if kind == "LABEL" else "NO"
        ds.BurnedInAnnotation = "YES" if kind == "LABEL" else "NO"
        _write_instance(out_dir / f"{name}.dcm", ds, iter([_encode_jpeg(np.asarray(rgb))]))
    return out_dir


def _common_dataset(
    *,
    study_uid: UID,
    frame_of_reference_uid: UID,
    specimen_uid: UID,
    patient_id: str,
    patient_name: str,
    accession: str,
    container_id: str,
    stain: str,
) -> Dataset:
    """Build the attributes every instance of the slide shares: patient, study, specimen."""
    ds = Dataset()
    ds.SOPClassUID = VLWholeSlideMicroscopyImageStorage
    ds.StudyInstanceUID = study_uid
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PositionReferenceIndicator = "SLIDE_CORNER"
    ds.Modality = "SM"
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.AccessionNumber = accession
    ds.StudyID = accession[:16]
    ds.StudyDate = STUDY_DATE
    ds.StudyTime = STUDY_TIME
    ds.ContentDate = STUDY_DATE
    ds.ContentTime = STUDY_TIME
    ds.AcquisitionDateTime = STUDY_DATE + STUDY_TIME
    ds.ReferringPhysicianName = ""
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MODEL_NAME
    ds.DeviceSerialNumber = "0"
    ds.SoftwareVersions = "1"
    ds.ContainerIdentifier = container_id
    ds.IssuerOfTheContainerIdentifierSequence = []
    ds.ContainerTypeCodeSequence = [_code(codes.SCT.MicroscopeSlide)]
    specimen = Dataset()
    specimen.SpecimenIdentifier = container_id
    specimen.SpecimenUID = specimen_uid
    specimen.IssuerOfTheSpecimenIdentifierSequence = []
    specimen.SpecimenShortDescription = stain[:64]
    specimen.SpecimenPreparationSequence = [_staining_step(container_id, stain)]
    ds.SpecimenDescriptionSequence = [specimen]
    optical_path = Dataset()
    optical_path.OpticalPathIdentifier = "0"
    optical_path.IlluminationTypeCodeSequence = [_code(codes.DCM.BrightfieldIllumination)]
    optical_path.IlluminationColorCodeSequence = [_code(codes.SCT.FullSpectrum)]
    optical_path.ObjectiveLensPower = 40
    ds.OpticalPathSequence = [optical_path]
    ds.NumberOfOpticalPaths = 1
    ds.VolumetricProperties = "VOLUME"
    ds.FocusMethod = "AUTO"
    ds.ExtendedDepthOfField = "NO"
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.ImageOrientationSlide = [0, -1, 0, -1, 0, 0]
    origin = Dataset()
    origin.XOffsetInSlideCoordinateSystem = 20.0
    origin.YOffsetInSlideCoordinateSystem = 40.0
    ds.TotalPixelMatrixOriginSequence = [origin]
    return ds


def _staining_step(container_id: str, stain: str) -> Dataset:
    """Describe the staining as a TID 8001 specimen preparation step naming the stain."""
    identifier = _content_item("TEXT", codes.DCM.SpecimenIdentifier)
    identifier.TextValue = container_id
    processing = _content_item("CODE", codes.DCM.ProcessingType)
    processing.ConceptCodeSequence = [_code(codes.SCT.Staining)]
    substance = _content_item("TEXT", codes.SCT.UsingSubstance)
    substance.TextValue = stain
    step = Dataset()
    step.SpecimenPreparationStepContentItemSequence = [identifier, processing, substance]
    return step


def _content_item(value_type: str, concept: object) -> Dataset:
    item = Dataset()
    item.ValueType = value_type
    item.ConceptNameCodeSequence = [_code(concept)]
    return item


def _code(code: object) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value  # type: ignore[attr-defined]
    item.CodingSchemeDesignator = code.scheme_designator  # type: ignore[attr-defined]
    item.CodeMeaning = code.meaning  # type: ignore[attr-defined]
    return item


def _image_dataset(
    common: Dataset,
    *,
    series_uid: UID,
    instance_uid: UID,
    image_type: list[str],
    instance_number: int,
    series_number: int,
    l_width: int,
    l_height: int,
    tile_size: int | None,
    pixel_spacing_mm: float | None,
    mm_size: tuple[float, float] | None,
) -> Dataset:
    """Build one instance: the shared attributes plus its own geometry and pixel description.

    ``tile_size`` ``None`` means a single frame holding the whole image (label, overview).
    """
    ds = Dataset()
    ds.update(common)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = VLWholeSlideMicroscopyImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = instance_uid
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.SOPInstanceUID = instance_uid
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.ImageType = image_type
    t_width = tile_size or l_width
    t_height = tile_size or l_height
    ds.Columns = t_width
    ds.Rows = t_height
    ds.TotalPixelMatrixColumns = l_width
    ds.TotalPixelMatrixRows = l_height
    ds.TotalPixelMatrixFocalPlanes = 1
    ds.NumberOfFrames = math.ceil(l_width / t_width) * math.ceil(l_height / t_height)
    ds.DimensionOrganizationType = "TILED_FULL"
    organization = Dataset()
    organization.DimensionOrganizationUID = generate_uid(entropy_srcs=[instance_uid, "dim"])
    ds.DimensionOrganizationSequence = [organization]
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.SpecimenLabelInImage = "NO"
    ds.BurnedInAnnotation = "NO"
    shared = Dataset()
    frame_type = Dataset()
    frame_type.FrameType = image_type
    shared.WholeSlideMicroscopyImageFrameTypeSequence = [frame_type]
    path_identification = Dataset()
    path_identification.OpticalPathIdentifier = "0"
    shared.OpticalPathIdentificationSequence = [path_identification]
    if pixel_spacing_mm is not None:
        measures = Dataset()
        measures.PixelSpacing = [_ds(pixel_spacing_mm), _ds(pixel_spacing_mm)]
        measures.SliceThickness = _ds(0.001)
        measures.SpacingBetweenSlices = _ds(0.001)
        shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    if mm_size is not None:
        ds.ImagedVolumeWidth = float(mm_size[0])
        ds.ImagedVolumeHeight = float(mm_size[1])
        ds.ImagedVolumeDepth = 0.001
    return ds


def _ds(value: float) -> str:
    """Format a Decimal String value within its 16 characters."""
    text = f"{value:.10g}"
    return text if len(text) <= 16 else f"{value:.8e}"


def _level_tiles(
    tissue: TissueLike, downsample: int, l_width: int, l_height: int, tile_size: int
) -> Iterator[bytes]:
    """Yield the JPEG frames of one level in TILED_FULL order (row by row).

    The part of an edge tile outside the image is white, as readers show it.
    """
    for t_row in range(math.ceil(l_height / tile_size)):
        for t_col in range(math.ceil(l_width / tile_size)):
            l_x, l_y = t_col * tile_size, t_row * tile_size
            l_w, l_h = min(tile_size, l_width - l_x), min(tile_size, l_height - l_y)
            pixels = np.asarray(tissue.region(l_x, l_y, l_w, l_h, downsample), dtype=np.uint8)
            tile = np.full((tile_size, tile_size, 3), 255, dtype=np.uint8)
            tile[:l_h, :l_w] = pixels[:l_h, :l_w, :3]
            yield _encode_jpeg(tile)


def _encode_jpeg(pixels: np.ndarray) -> bytes:
    """JPEG-code RGB pixels as YCbCr 4:2:2, which is what YBR_FULL_422 declares."""
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "JPEG", quality=JPEG_QUALITY, subsampling=1)
    return buffer.getvalue()


_ITEM = b"\xfe\xff\x00\xe0"
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_PIXEL_DATA_HEADER = b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff"
"""(7FE0,0010) Pixel Data, OB, undefined length: the encapsulated form (PS3.5 A.4)."""


def _write_instance(path: Path, ds: Dataset, frames: Iterator[bytes]) -> None:
    """Write ``ds`` and its encapsulated frames, with a Basic Offset Table, to ``path``."""
    lengths: list[int] = []
    with tempfile.TemporaryFile() as spool:
        for frame in frames:
            if len(frame) % 2:
                frame += b"\x00"  # fragments have even length (PS3.5 A.4)
            spool.write(_ITEM + struct.pack("<I", len(frame)) + frame)
            lengths.append(len(frame))
        if len(lengths) != int(ds.NumberOfFrames):
            raise AssertionError(f"{len(lengths)} frames written, {ds.NumberOfFrames} declared")
        ds.LossyImageCompressionRatio = _ds(_compression_ratio(ds, lengths))
        with path.open("wb") as out:
            dcmwrite(out, ds, enforce_file_format=True)
            out.write(_PIXEL_DATA_HEADER)
            out.write(_basic_offset_table(lengths))
            spool.seek(0)
            shutil.copyfileobj(spool, out)
            out.write(_SEQUENCE_DELIMITER)


def _basic_offset_table(lengths: Sequence[int]) -> bytes:
    """Return the first item: the offset of each frame's item from the first frame's item."""
    offsets = [0]
    for length in lengths[:-1]:
        offsets.append(offsets[-1] + 8 + length)
    table = struct.pack(f"<{len(offsets)}I", *offsets)
    return _ITEM + struct.pack("<I", len(table)) + table


def _compression_ratio(ds: Dataset, lengths: Sequence[int]) -> float:
    raw = int(ds.Rows) * int(ds.Columns) * 3 * len(lengths)
    return round(raw / max(1, sum(lengths)), 2)
