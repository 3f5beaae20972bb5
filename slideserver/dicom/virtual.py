"""Every catalog slide as one VL Whole Slide Microscopy Image series (PS3.3 A.32.8).

One TILED_FULL instance per pyramid level (frames are the level's stored tiles), and the label
and overview (the reader's ``macro``) as instances of their own, each with the optical path,
pixel spacing from the slide's MPP, and the patient, study, accession and specimen attributes of
the catalog's case links. Built from what a reader reports (:class:`SlideFacts`); no I/O here.

De-identified series (for roles that may not see PHI) follow the REST API's rules
(:mod:`slideserver.security.deidentify`): no patient, accession, dates, container or specimen
identifiers, no label or overview instance, and UIDs from the research namespace of
:mod:`slideserver.dicom.uids` (a DICOM file's own UIDs are replaced too: a PACS knows them).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import JPEG2000, UID, ExplicitVRLittleEndian, JPEGBaseline8Bit

from slideserver.dicom import uids
from slideserver.models import SlideInfo
from slideserver.security.deidentify import ASSOCIATED_ALLOWED

WSI_SOP_CLASS = UID("1.2.840.10008.5.1.4.1.1.77.1.6")
"""VL Whole Slide Microscopy Image Storage."""
MODALITY = "SM"
ASSOCIATED_TYPES = {"label": "LABEL", "macro": "OVERVIEW"}
"""Reader associated images served as instances, and their DICOM image type (value 3)."""
DEFAULT_FRAME = 256
"""Frame side of levels that are not stored as tiles (rendered frames)."""
DEIDENTIFICATION_METHOD = "slideserver: no patient, case, dates or label images"


@dataclass(frozen=True)
class LevelEncoding:
    """How a level's frames are made: its tile grid and whether stored JPEG tiles pass through."""

    frame_width: int
    frame_height: int
    stored_jpeg: bool
    """The stored tiles are JPEG baseline sent as they are; else frames are rendered."""
    photometric: str = "RGB"
    """Of the stored tiles: JPEG ``YBR_FULL_422`` (YCbCr) or ``RGB`` (Adobe transform 0);
    JPEG 2000 ``RGB``, ``YBR_ICT`` or ``YBR_RCT`` (its own component transform)."""
    stored_jpeg2000: bool = False
    """The stored tiles are JPEG 2000 codestreams sent as they are (JPEG 2000, lossy or not)."""


@dataclass(frozen=True)
class FileUids:
    """The UIDs a DICOM slide's own files carry."""

    study: str
    series: str
    frame_of_reference: str | None
    instances: Mapping[str, str]
    """``level-N``, ``label``, ``overview`` -> SOP Instance UID."""


@dataclass(frozen=True)
class SlideFacts:
    """What the series of one slide is built from: catalog record, reader info, encodings."""

    slide_id: str
    content_hash: str
    info: SlideInfo
    levels: tuple[LevelEncoding, ...]
    associated_sizes: Mapping[str, tuple[int, int]]
    """``label``/``macro`` -> (width, height), for those the reader has."""
    case: Mapping[str, Any] | None
    """The catalog's case links (``extra["case"]``), patient included."""
    scanned: datetime | None
    file_uids: FileUids | None = None


@dataclass(frozen=True)
class VirtualInstance:
    """One instance of a virtual series, with its metadata (no pixel data)."""

    uid: str
    image: str
    """``level-N``, ``label`` or ``overview``."""
    level: int | None
    associated: str | None
    """The reader's associated image name (``label``, ``macro``) for non-level instances."""
    width: int
    height: int
    frame_width: int
    frame_height: int
    stored_syntax: UID
    """The transfer syntax frames have as stored (sent without re-encoding)."""
    dataset: Dataset = field(compare=False, repr=False)

    @property
    def columns(self) -> int:
        return -(-self.width // self.frame_width)

    @property
    def rows(self) -> int:
        return -(-self.height // self.frame_height)

    @property
    def frame_count(self) -> int:
        return self.columns * self.rows

    def tile_of(self, frame: int) -> tuple[int, int]:
        """Return (column, row) of 1-based ``frame`` (TILED_FULL: row-major)."""
        return (frame - 1) % self.columns, (frame - 1) // self.columns


@dataclass(frozen=True)
class VirtualSeries:
    """A slide as one study/series of WSI instances, as one audience may see it."""

    slide_id: str
    study_uid: str
    series_uid: str
    deidentified: bool
    common: Dataset = field(compare=False, repr=False)
    """Patient, study and series attributes shared by every instance."""
    instances: tuple[VirtualInstance, ...]
    accession: str | None
    patient_id: str | None

    def instance(self, uid: str) -> VirtualInstance | None:
        return next((i for i in self.instances if i.uid == uid), None)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _ds(value: float) -> str:
    """A DS value of at most 16 characters."""
    text = f"{value:.10g}"
    return text if len(text) <= 16 else f"{value:.8e}"


def _pn(name: str | None) -> str:
    """A display name (``Jane Doe``) or DICOM PN (``DOE^JANE``) as PN."""
    if not name:
        return ""
    if "^" in name:
        return name
    parts = name.split()
    return f"{parts[-1]}^{' '.join(parts[:-1])}" if len(parts) > 1 else name


def _patient_and_study(facts: SlideFacts, study_uid: str, deidentified: bool) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    case = facts.case or {}
    patient = case.get("patient") if isinstance(case.get("patient"), Mapping) else None
    if deidentified or patient is None:
        ds.PatientName = ""
        ds.PatientID = ""
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
    else:
        ds.PatientName = _pn(str(patient.get("name") or ""))
        ds.PatientID = str(patient.get("id") or "")
        ds.PatientBirthDate = str(patient.get("birth_date") or "").replace("-", "")[:8]
        ds.PatientSex = str(facts.info.properties.get("dicom.PatientSex", ""))[:16]
    if deidentified:
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = DEIDENTIFICATION_METHOD
    ds.StudyInstanceUID = study_uid
    ds.StudyID = "" if deidentified else str(case.get("accession") or "")[:16]
    ds.AccessionNumber = "" if deidentified else str(case.get("accession") or "")[:16]
    ds.ReferringPhysicianName = ""
    when = None if deidentified else facts.scanned
    ds.StudyDate = when.strftime("%Y%m%d") if when else ""
    ds.StudyTime = when.strftime("%H%M%S") if when else ""
    ds.Modality = MODALITY
    ds.SeriesNumber = 1
    ds.SeriesDescription = "" if deidentified else str(case.get("stain") or "")[:64]
    return ds


def _slide_attributes(
    facts: SlideFacts, ds: Dataset, series_uid: str, frame_uid: str, deidentified: bool
) -> None:
    """Series, frame of reference, equipment, specimen and optical path (every instance)."""
    info = facts.info
    case = facts.case or {}
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = "SLIDE_CORNER"
    ds.Manufacturer = str(info.properties.get("dicom.Manufacturer") or info.vendor or "")[:64]
    ds.ManufacturerModelName = str(info.properties.get("dicom.ManufacturerModelName", ""))[:64]
    ds.DeviceSerialNumber = str(info.properties.get("dicom.DeviceSerialNumber", ""))[:64]
    ds.SoftwareVersions = str(info.properties.get("dicom.SoftwareVersions") or "slideserver")[:64]
    # Specimen module (the glass slide and what is on it)
    container = f"SLIDE-{facts.slide_id[:16]}"
    barcode = case.get("barcode") if not deidentified else None
    ds.ContainerIdentifier = str(barcode or container)[:64]
    ds.IssuerOfTheContainerIdentifierSequence = DicomSequence([])
    ds.ContainerTypeCodeSequence = DicomSequence([_code("433466003", "SCT", "Microscope slide")])
    specimen = Dataset()
    label = None if deidentified else case.get("accession")
    part = "" if deidentified else f"{case.get('specimen') or ''}{case.get('block') or ''}"
    specimen.SpecimenIdentifier = (f"{label}-{part}" if label and part else label or container)[:64]
    specimen.SpecimenUID = uids.derived_uid("specimen", facts.slide_id, research=deidentified)
    specimen.IssuerOfTheSpecimenIdentifierSequence = DicomSequence([])
    stain = case.get("stain")
    specimen.SpecimenShortDescription = str(stain or "")[:64]
    specimen.SpecimenPreparationSequence = DicomSequence([])
    ds.SpecimenDescriptionSequence = DicomSequence([specimen])
    # Optical path: one brightfield path
    path = Dataset()
    path.OpticalPathIdentifier = "1"
    path.IlluminationTypeCodeSequence = DicomSequence(
        [_code("111744", "DCM", "Brightfield illumination")]
    )
    path.IlluminationColorCodeSequence = DicomSequence([_code("414298005", "SCT", "Full Spectrum")])
    if info.objective_power:
        path.ObjectiveLensPower = _ds(info.objective_power)
    # The WSI IOD wants an ICC profile for colour images (Slim warns without one). The pixels we
    # serve are those the readers give, which treat them as sRGB: say so.
    path.ICCProfile = srgb_profile()
    path.ColorSpace = "SRGB"
    ds.OpticalPathSequence = DicomSequence([path])
    ds.NumberOfOpticalPaths = 1


@functools.cache
def srgb_profile() -> bytes:
    """The sRGB ICC profile (made once by Little CMS through Pillow)."""
    from PIL import ImageCms

    profile: bytes = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return profile


def _image_attributes(
    facts: SlideFacts,
    ds: Dataset,
    instance: VirtualInstance,
    image_type: str,
    photometric: str,
    spacing_mm: tuple[float, float] | None,
    number: int,
) -> None:
    """The image, whole slide microscopy image and multi-frame modules of one instance."""
    derived = image_type == "VOLUME" and instance.level not in (None, 0)
    ds.ImageType = ["DERIVED" if derived else "ORIGINAL", "PRIMARY", image_type, "NONE"]
    ds.SOPClassUID = WSI_SOP_CLASS
    ds.SOPInstanceUID = instance.uid
    ds.InstanceNumber = number
    when = facts.scanned if not ds.get("PatientIdentityRemoved") else None
    ds.ContentDate = when.strftime("%Y%m%d") if when else ""
    ds.ContentTime = when.strftime("%H%M%S") if when else ""
    ds.AcquisitionDateTime = when.strftime("%Y%m%d%H%M%S") if when else ""
    ds.BurnedInAnnotation = "YES" if image_type == "LABEL" else "NO"
    ds.SpecimenLabelInImage = "YES" if image_type in ("LABEL", "OVERVIEW") else "NO"
    ds.VolumetricProperties = "VOLUME"
    ds.FocusMethod = "AUTO"
    ds.ExtendedDepthOfField = "NO"
    # "01" (lossy at some point) unless the frames are known lossless: a reader does not say
    # how its tiles were compressed, and claiming lossy for a lossless source is the safe error.
    lossy = instance.stored_syntax in (JPEGBaseline8Bit, JPEG2000) or (
        facts.info.format != "generic-tiff"
    )
    ds.LossyImageCompression = "01" if lossy else "00"
    if lossy and instance.stored_syntax == JPEGBaseline8Bit:
        ds.LossyImageCompressionMethod = "ISO_10918_1"
    elif lossy and instance.stored_syntax == JPEG2000:
        ds.LossyImageCompressionMethod = "ISO_15444_1"
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = photometric
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.Rows = instance.frame_height
    ds.Columns = instance.frame_width
    ds.NumberOfFrames = instance.frame_count
    ds.TotalPixelMatrixColumns = instance.width
    ds.TotalPixelMatrixRows = instance.height
    ds.TotalPixelMatrixFocalPlanes = 1
    ds.DimensionOrganizationType = "TILED_FULL"
    organization = Dataset()
    organization.DimensionOrganizationUID = uids.derived_uid("dimensions", instance.uid)
    ds.DimensionOrganizationSequence = DicomSequence([organization])
    ds.ImageOrientationSlide = [0, -1, 0, -1, 0, 0]
    origin = Dataset()
    origin.XOffsetInSlideCoordinateSystem = 0
    origin.YOffsetInSlideCoordinateSystem = 0
    ds.TotalPixelMatrixOriginSequence = DicomSequence([origin])
    ds.AcquisitionContextSequence = DicomSequence([])
    shared = Dataset()
    if spacing_mm is not None:
        measures = Dataset()
        measures.PixelSpacing = [_ds(spacing_mm[0]), _ds(spacing_mm[1])]
        measures.SliceThickness = _ds(0.001)
        shared.PixelMeasuresSequence = DicomSequence([measures])
        ds.ImagedVolumeWidth = float(instance.width * spacing_mm[1])
        ds.ImagedVolumeHeight = float(instance.height * spacing_mm[0])
        ds.ImagedVolumeDepth = 0.001
    frame_type = Dataset()
    frame_type.FrameType = ds.ImageType
    shared.WholeSlideMicroscopyImageFrameTypeSequence = DicomSequence([frame_type])
    path = Dataset()
    path.OpticalPathIdentifier = "1"
    shared.OpticalPathIdentificationSequence = DicomSequence([path])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])


def _uid_of(facts: SlideFacts, image: str, deidentified: bool, kind: str = "instance") -> str:
    own = facts.file_uids
    if own is not None and not deidentified and image in own.instances:
        return own.instances[image]
    return uids.instance_uid(facts.slide_id, image, research=deidentified)


def build_series(facts: SlideFacts, *, deidentified: bool) -> VirtualSeries:
    """Return the series of a slide as clinical roles (``deidentified``: researchers) see it."""
    info = facts.info
    own = facts.file_uids if not deidentified else None
    case = facts.case or {}
    accession = str(case["accession"]) if case.get("accession") else None
    patient = case.get("patient") if isinstance(case.get("patient"), Mapping) else None
    study = own.study if own else uids.study_uid(facts.slide_id, accession, research=deidentified)
    series = own.series if own else uids.series_uid(facts.slide_id, research=deidentified)
    frame_uid = (own.frame_of_reference if own else None) or uids.frame_of_reference_uid(
        facts.slide_id, research=deidentified
    )
    common = _patient_and_study(facts, study, deidentified)
    _slide_attributes(facts, common, series, frame_uid, deidentified)

    instances: list[VirtualInstance] = []
    width0 = info.width
    for index, (level, encoding) in enumerate(zip(info.levels, facts.levels, strict=True)):
        image = f"level-{index}"
        spacing = None
        if info.mpp_x and info.mpp_y:
            scale_x = width0 / level.width
            scale_y = info.height / level.height
            spacing = (info.mpp_y * scale_y / 1000, info.mpp_x * scale_x / 1000)
        syntax = JPEGBaseline8Bit if encoding.stored_jpeg else ExplicitVRLittleEndian
        if encoding.stored_jpeg2000:
            syntax = JPEG2000
        stored = encoding.stored_jpeg or encoding.stored_jpeg2000
        photometric = encoding.photometric if stored else "RGB"
        instances.append(
            _instance(
                facts,
                common,
                image,
                index,
                None,
                (level.width, level.height, encoding.frame_width, encoding.frame_height),
                syntax,
                ("VOLUME", photometric, spacing, len(instances) + 1),
                deidentified,
            )
        )
    for name, image_type in ASSOCIATED_TYPES.items():
        size = facts.associated_sizes.get(name)
        if size is None or (deidentified and name not in ASSOCIATED_ALLOWED):
            continue  # researchers never get label or overview instances
        image = image_type.lower()
        instances.append(
            _instance(
                facts,
                common,
                image,
                None,
                name,
                (size[0], size[1], size[0], size[1]),
                ExplicitVRLittleEndian,
                (image_type, "RGB", None, len(instances) + 1),
                deidentified,
            )
        )
    return VirtualSeries(
        slide_id=facts.slide_id,
        study_uid=str(study),
        series_uid=str(series),
        deidentified=deidentified,
        common=common,
        instances=tuple(instances),
        accession=accession,
        patient_id=str(patient.get("id")) if patient and patient.get("id") else None,
    )


def _instance(
    facts: SlideFacts,
    common: Dataset,
    image: str,
    level: int | None,
    associated: str | None,
    geometry: tuple[int, int, int, int],
    syntax: UID,
    image_args: tuple[str, str, tuple[float, float] | None, int],
    deidentified: bool,
) -> VirtualInstance:
    width, height, frame_w, frame_h = geometry
    ds = Dataset()
    ds.update(common)
    instance = VirtualInstance(
        uid=_uid_of(facts, image, deidentified),
        image=image,
        level=level,
        associated=associated,
        width=width,
        height=height,
        frame_width=frame_w,
        frame_height=frame_h,
        stored_syntax=syntax,
        dataset=ds,
    )
    image_type, photometric, spacing, number = image_args
    _image_attributes(facts, ds, instance, image_type, photometric, spacing, number)
    return instance
