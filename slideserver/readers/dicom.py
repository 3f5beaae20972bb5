"""DICOM WSI (VL Whole Slide Microscopy Image Storage) through wsidicom.

A slide is the set of .dcm files of one scan: the pyramid levels (VOLUME instances), plus the
LABEL, OVERVIEW and THUMBNAIL instances of the same slide, which scanners often put in a series of
their own. :func:`group_series` sorts the files of a folder into slides; :class:`DicomReader`
opens one. wsidicom and pydicom exceptions never leave this module: they become
:mod:`slideserver.errors`.

``SlideInfo.properties`` keys, all optional and all strings (the catalog links slides on them):

- ``dicom.PatientID``: Patient ID (0010,0020)
- ``dicom.PatientName``: Patient's Name (0010,0010), DICOM PN form (``Family^Given``)
- ``dicom.PatientBirthDate``: Patient's Birth Date (0010,0030), ``YYYYMMDD``
- ``dicom.PatientSex``: Patient's Sex (0010,0040)
- ``dicom.AccessionNumber``: Accession Number (0008,0050), the case
- ``dicom.StudyInstanceUID``: Study Instance UID (0020,000D)
- ``dicom.StudyID``, ``dicom.StudyDate``: Study ID (0020,0010), Study Date (0008,0020)
- ``dicom.SeriesInstanceUID``: Series Instance UID (0020,000E) of the pyramid
- ``dicom.FrameOfReferenceUID``: Frame of Reference UID (0020,0052), one per scanned slide
- ``dicom.ContainerIdentifier``: Container Identifier (0040,0512), the slide's barcode
- ``dicom.SpecimenIdentifier``: Specimen Identifier (0040,0551) of each specimen on the slide,
  ``;``-separated when there are several
- ``dicom.SpecimenUID``: Specimen UID (0040,0554), ``;``-separated likewise
- ``dicom.SpecimenDescription``: Specimen Short Description (0040,0600)
- ``dicom.Stain``: the substances of the staining steps of the specimen preparation (TID 8004
  "Using substance", text value or code meaning), ``;``-separated
- ``dicom.Manufacturer``, ``dicom.ManufacturerModelName``, ``dicom.DeviceSerialNumber``,
  ``dicom.SoftwareVersions``: the scanner (0008,0070), (0008,1090), (0018,1000), (0018,1020)
- ``dicom.AcquisitionDateTime``: Acquisition DateTime (0008,002A)
- ``dicom.ObjectiveLensPower``: Objective Lens Power (0048,0112) of the first optical path
- ``dicom.TransferSyntaxUID``, ``dicom.PhotometricInterpretation``: of the level-0 instance

Patient keys are PHI; ``dicom.ContainerIdentifier`` and ``dicom.AccessionNumber`` identify too.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from PIL import Image

from slideserver.codecs.jpeg2000 import ycbcr_as_ict
from slideserver.errors import (
    AssociatedImageNotFound,
    InvalidRegion,
    SlideGone,
    SlideServerError,
    SlideUnreadable,
    TileNotFound,
    TileUnreadable,
)
from slideserver.models import EncodedTile, Level, SlideInfo, SlideSource
from slideserver.readers.base import SlideReader, WouldBlock
from slideserver.readers.passthrough import browser_ready_frame

if TYPE_CHECKING:
    from pydicom.dataset import Dataset
# pydicom and wsidicom (about a second to import) are imported where a DICOM file is read, so a
# process that never meets one (an export of SVS slides, its workers) does not pay for them.

__all__ = ["DicomReader", "group_series"]

FORMAT = "dicom"
_HEADER_TAGS = [
    "SOPClassUID",
    "ImageType",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "ContainerIdentifier",
]
"""What :func:`group_series` and :meth:`DicomReader.detect` read of each file."""
_ASSOCIATED_FLAVORS = frozenset({"LABEL", "OVERVIEW", "THUMBNAIL"})
"""Image types (third value) other than VOLUME that belong to a slide and wsidicom reads."""
_PASSTHROUGH_PHOTOMETRICS = frozenset({"YBR_FULL_422", "YBR_FULL", "RGB"})
_JPEG2000_PHOTOMETRICS = frozenset({"RGB", "YBR_ICT", "YBR_RCT", "YBR_FULL"})
"""JPEG 2000 frames whose components are RGB, transformed by the codestream or not, and
``YBR_FULL`` frames (YCbCr components, transform off: wsidicomizer's Aperio 33003), handed out
as ICT codestreams when that edit is exact (:func:`~slideserver.codecs.jpeg2000.ycbcr_as_ict`)."""
_WHITE = (255, 255, 255)

T = TypeVar("T")


@dataclass(frozen=True)
class _Header:
    """The identifying attributes of one WSI instance file."""

    path: Path
    image_flavor: str
    """Third value of Image Type: VOLUME, LABEL, OVERVIEW or THUMBNAIL."""
    study: str
    series: str
    frame_of_reference: str | None
    container: str | None

    @property
    def slide_key(self) -> tuple[str, str | None, str | None, str | None]:
        """What identifies the scanned slide an instance belongs to.

        PS3.3 gives every image of one slide scan the same Frame of Reference (the slide
        coordinate system) and Container Identifier, while label and overview often sit in a
        series of their own; the series is only used when neither is present.
        """
        if self.frame_of_reference is None and self.container is None:
            return (self.study, None, None, self.series)
        return (self.study, self.frame_of_reference, self.container, None)


def _read_header(path: Path) -> _Header | None:
    """Return the identifying attributes of a VL WSI instance, ``None`` for anything else."""
    import pydicom
    from pydicom.uid import VLWholeSlideMicroscopyImageStorage

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        sop_class = ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID")
        if sop_class != VLWholeSlideMicroscopyImageStorage:
            return None
        image_type = list(ds.get("ImageType") or [])
        if len(image_type) < 3 or not ds.get("StudyInstanceUID"):
            return None
        return _Header(
            path=path,
            image_flavor=str(image_type[2]).upper(),
            study=str(ds.StudyInstanceUID),
            series=str(ds.get("SeriesInstanceUID", "")),
            frame_of_reference=str(ds.FrameOfReferenceUID)
            if ds.get("FrameOfReferenceUID")
            else None,
            container=str(ds.ContainerIdentifier) if ds.get("ContainerIdentifier") else None,
        )
    except Exception:  # any unreadable or foreign file is simply not a WSI instance
        return None


def _optional_str(value: object) -> str | None:
    return str(value) if value not in (None, "") else None


def group_series(files: Iterable[Path]) -> list[SlideSource]:
    """Sort the DICOM files of one folder into slides, one :class:`SlideSource` each.

    Files that are not VL WSI instances, or cannot be read, are left out; so are labels and
    overviews of a slide whose pyramid is not among ``files``. Slides come out in the order of
    their first file name, each with its files sorted.
    """
    headers = [h for h in (_read_header(Path(f)) for f in files) if h is not None]
    slides: dict[tuple[str, str | None, str | None, str | None], list[Path]] = defaultdict(list)
    for header in headers:
        if header.image_flavor == "VOLUME":
            slides[header.slide_key].append(header.path)
    for header in headers:
        if header.image_flavor not in _ASSOCIATED_FLAVORS:
            continue
        if header.slide_key in slides:
            slides[header.slide_key].append(header.path)
            continue
        # A label without frame of reference, say: attach it when only one slide can own it.
        owners = [k for k in slides if k[0] == header.study and k[2] == header.container]
        if header.container is not None and len(owners) == 1:
            slides[owners[0]].append(header.path)
    sources = [
        SlideSource(path=sorted(paths)[0].parent, files=tuple(sorted(paths)), format_hint=FORMAT)
        for paths in slides.values()
    ]
    return sorted(sources, key=lambda s: s.files[0])


def _candidate_files(source: SlideSource) -> list[Path]:
    """Return the files that may make up ``source``: its files, or a folder's regular files."""
    if source.files:
        return list(source.files)
    if source.path.is_dir():
        return sorted(p for p in source.path.iterdir() if p.is_file())
    return [source.path]


_ABSOLUTE_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?(?:[/\\][^/\\\s'\",()]+)+")


def _describe(exc: BaseException) -> str:
    """Name the backend error in one line, file paths cut to their last part (no folder names)."""
    text = _ABSOLUTE_PATH.sub(lambda m: re.split(r"[/\\]", m.group(0))[-1], str(exc))
    return f"{type(exc).__name__}: {text}"[:300]


def _guard(what: str, fn: Callable[[], T]) -> T:
    """Run ``fn``, turning backend exceptions into slideserver errors that name ``what``."""
    try:
        return fn()
    except SlideServerError:
        raise
    except FileNotFoundError as exc:
        raise SlideGone(f"{what}: a file of the slide is gone") from exc
    except Exception as exc:
        raise TileUnreadable(f"{what}: {_describe(exc)}") from exc


class DicomReader(SlideReader):
    """A DICOM WSI slide: the files of one slide scan, opened with wsidicom.

    wsidicom guards each file's stream with a lock and its frame caches likewise, so one
    ``WsiDicom`` serves reads from several threads; this class adds no state that reads change.
    """

    name = "dicom"
    priority = 30
    file_set_suffixes = frozenset({".dcm"})

    @classmethod
    def group_files(cls, files: Sequence[Path]) -> list[SlideSource]:
        """Sort DICOM files of one folder into slides: :func:`group_series`."""
        return group_series(files)

    def __init__(self, source: SlideSource) -> None:
        super().__init__(source)
        self._close_lock = threading.Lock()
        self._closed = False
        files = self._slide_files(source)
        from wsidicom import WsiDicom

        try:
            self._wsi = WsiDicom.open(files)
        except FileNotFoundError as exc:
            raise SlideGone(f"DICOM slide {source.path.name!r}: a file is gone") from exc
        except Exception as exc:
            raise SlideUnreadable(
                f"DICOM slide {source.path.name!r} cannot be opened: {_describe(exc)}"
            ) from exc
        try:
            opened = {Path(str(f)).resolve() for f in self._wsi.files}
            lost = sorted(p.name for p in files if p.resolve() not in opened)
            if lost:  # wsidicom skips files it cannot read; a slide missing one is damaged
                raise SlideUnreadable(
                    f"DICOM slide {source.path.name!r}: unreadable file(s) {', '.join(lost)}"
                )
            self._pyramid = self._wsi.levels
            self._info = self._build_info()
        except Exception as exc:
            self._wsi.close()
            if isinstance(exc, SlideServerError):
                raise
            raise SlideUnreadable(
                f"DICOM slide {source.path.name!r} has unreadable metadata: {_describe(exc)}"
            ) from exc

    @staticmethod
    def _slide_files(source: SlideSource) -> list[Path]:
        """Return the files of the one slide ``source`` names.

        A folder or a single file without an explicit file list must hold exactly one slide
        (for a single file: the slide it is part of), else opening it would be a guess.
        """
        if source.files:
            return list(source.files)
        if source.path.is_dir():
            slides = group_series(_candidate_files(source))
        elif source.path.is_file():
            slides = [
                s
                for s in group_series(p for p in source.path.parent.iterdir() if p.is_file())
                if source.path in s.files
            ]
        else:
            raise SlideGone(f"DICOM slide {source.path.name!r} does not exist")
        if len(slides) != 1:
            raise SlideUnreadable(
                f"{source.path.name!r} holds {len(slides)} DICOM WSI slides, expected one"
            )
        return list(slides[0].files)

    @classmethod
    def detect(cls, source: SlideSource) -> str | None:
        """Return ``"dicom"`` when ``source`` holds a VL WSI pyramid instance; read headers only."""
        try:
            if not source.files and source.path.is_file() and not _has_dicom_preamble(source.path):
                return None
            for path in _candidate_files(source):
                if source.files or _has_dicom_preamble(path):
                    header = _read_header(path)
                    if header is not None and header.image_flavor == "VOLUME":
                        return FORMAT
        except Exception:
            return None
        return None

    def _build_info(self) -> SlideInfo:
        """Collect geometry from wsidicom and the identifying attributes from the base dataset."""
        levels = tuple(
            Level(
                width=level.size.width,
                height=level.size.height,
                downsample=float(2**level.level),
                tile_width=level.tile_size.width,
                tile_height=level.tile_size.height,
            )
            for level in self._pyramid.levels
        )
        base = self._pyramid.base_level.default_instance
        ds = base.dataset.as_dataset()
        mpp = self._pyramid.mpp
        objective = _objective_power(ds)
        associated: list[str] = []
        if self._wsi.labels is not None:
            associated.append("label")
        if self._wsi.overviews is not None:
            associated.append("macro")
        if self._pyramid.thumbnails is not None and self._pyramid.thumbnails.groups:
            associated.append("thumbnail")
        properties = _properties(ds)
        if objective is not None:
            properties["dicom.ObjectiveLensPower"] = f"{objective:g}"
        properties["dicom.TransferSyntaxUID"] = str(base.image_data.transfer_syntax)
        properties["dicom.PhotometricInterpretation"] = str(
            base.image_data.photometric_interpretation
        )
        manufacturer = properties.get("dicom.Manufacturer")
        return SlideInfo(
            format=FORMAT,
            vendor=manufacturer or None,
            levels=levels,
            mpp_x=float(mpp.width) if mpp is not None else None,
            mpp_y=float(mpp.height) if mpp is not None else None,
            objective_power=objective,
            associated=tuple(associated),
            properties=properties,
        )

    @property
    def info(self) -> SlideInfo:
        return self._info

    def _level(self, level: int) -> Any:
        """Return wsidicom's level for our level index (wsidicom numbers levels by log2 scale)."""
        if not 0 <= level < len(self._info.levels):
            raise TileNotFound(f"level {level} outside 0..{len(self._info.levels) - 1}")
        return self._pyramid.levels[level]

    def read_region(
        self, l0_x: int, l0_y: int, level: int, l_width: int, l_height: int
    ) -> Image.Image:
        if l_width <= 0 or l_height <= 0:
            raise InvalidRegion(f"region size {l_width}x{l_height} is empty")
        wsi_level = self._level(level)
        info = self._info.levels[level]
        l_x = math.floor(l0_x / info.downsample)
        l_y = math.floor(l0_y / info.downsample)
        # wsidicom refuses regions outside the image: read the part inside, on white glass.
        x0, y0 = max(l_x, 0), max(l_y, 0)
        x1, y1 = min(l_x + l_width, info.width), min(l_y + l_height, info.height)
        canvas = Image.new("RGB", (l_width, l_height), _WHITE)
        if x1 <= x0 or y1 <= y0:
            return canvas
        region = _guard(
            f"region of level {level}",
            lambda: self._wsi.read_region((x0, y0), wsi_level.level, (x1 - x0, y1 - y0)),
        )
        if region.mode == "RGBA":
            canvas.paste(region.convert("RGB"), (x0 - l_x, y0 - l_y), region)
        else:
            canvas.paste(region.convert("RGB"), (x0 - l_x, y0 - l_y))
        return canvas

    def read_encoded_tile(
        self, level: int, t_col: int, t_row: int, *, nowait: bool = False
    ) -> EncodedTile | None:
        if nowait:
            raise WouldBlock  # wsidicom reads frames with blocking I/O
        wsi_level = self._level(level)
        info = self._info.levels[level]
        tile_w, tile_h = info.tile_width or info.width, info.tile_height or info.height
        t_cols, t_rows = math.ceil(info.width / tile_w), math.ceil(info.height / tile_h)
        if not (0 <= t_col < t_cols and 0 <= t_row < t_rows):
            raise TileNotFound(f"tile {t_col},{t_row} outside {t_cols}x{t_rows} of level {level}")
        from pydicom.uid import JPEGBaseline8Bit

        image_data = wsi_level.default_instance.image_data
        if image_data.transfer_syntax != JPEGBaseline8Bit:
            return None
        photometric = str(image_data.photometric_interpretation)
        if photometric not in _PASSTHROUGH_PHOTOMETRICS or image_data.samples_per_pixel != 3:
            return None
        data = _guard(
            f"tile {t_col},{t_row} of level {level}",
            lambda: self._wsi.read_encoded_tile(
                wsi_level.level, (t_col, t_row), crop_to_image_boundary=False
            ),
        )
        browser_ready = browser_ready_frame(
            bytes(data), rgb=photometric == "RGB", width=tile_w, height=tile_h
        )
        if browser_ready is None:
            return None
        return EncodedTile(browser_ready, "image/jpeg", width=tile_w, height=tile_h)

    def read_jpeg2000_tile(self, level: int, t_col: int, t_row: int) -> EncodedTile | None:
        wsi_level = self._level(level)
        info = self._info.levels[level]
        tile_w, tile_h = info.tile_width or info.width, info.tile_height or info.height
        t_cols, t_rows = math.ceil(info.width / tile_w), math.ceil(info.height / tile_h)
        if not (0 <= t_col < t_cols and 0 <= t_row < t_rows):
            raise TileNotFound(f"tile {t_col},{t_row} outside {t_cols}x{t_rows} of level {level}")
        from pydicom.uid import JPEG2000, JPEG2000Lossless

        image_data = wsi_level.default_instance.image_data
        if image_data.transfer_syntax not in (JPEG2000, JPEG2000Lossless):
            return None
        photometric = str(image_data.photometric_interpretation)
        if photometric not in _JPEG2000_PHOTOMETRICS or image_data.samples_per_pixel != 3:
            return None  # components that are not RGB or YCbCr
        data = _guard(
            f"tile {t_col},{t_row} of level {level}",
            lambda: self._wsi.read_encoded_tile(
                wsi_level.level, (t_col, t_row), crop_to_image_boundary=False
            ),
        )
        codestream: bytes | None = bytes(data)
        if photometric == "YBR_FULL":
            codestream = ycbcr_as_ict(bytes(data), tile_w, tile_h)
        if codestream is None:
            return None
        return EncodedTile(codestream, "image/jp2", width=tile_w, height=tile_h)

    def associated(self, name: str) -> Image.Image:
        if name not in self._info.associated:
            raise AssociatedImageNotFound(f"no associated image {name!r}")
        if name == "label":
            image = _guard("label", lambda: self._wsi.read_label())
        elif name == "macro":
            image = _guard("macro", lambda: self._wsi.read_overview())
        else:
            thumbnail = max(self._pyramid.thumbnails.groups, key=lambda g: g.size.width)
            size = (thumbnail.size.width, thumbnail.size.height)
            image = _guard("thumbnail", lambda: self._wsi.read_thumbnail(size))
        rgb: Image.Image = image.convert("RGB")
        return rgb

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(Exception):  # a half-broken source must not fail the caller
            self._wsi.close()


def _has_dicom_preamble(path: Path) -> bool:
    """Return whether ``path`` starts like a DICOM Part 10 file (``DICM`` at byte 128)."""
    try:
        with path.open("rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _objective_power(ds: Dataset) -> float | None:
    """Return the Objective Lens Power of the first optical path that states one."""
    for path in ds.get("OpticalPathSequence") or []:
        power = path.get("ObjectiveLensPower")
        if power not in (None, ""):
            try:
                return float(power)
            except (TypeError, ValueError):
                continue
    return None


_TOP_LEVEL_PROPERTIES = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyInstanceUID",
    "StudyID",
    "StudyDate",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "ContainerIdentifier",
    "Manufacturer",
    "ManufacturerModelName",
    "DeviceSerialNumber",
    "SoftwareVersions",
    "AcquisitionDateTime",
)


def _properties(ds: Dataset) -> dict[str, str]:
    """Flatten the identifying attributes of ``ds`` into ``dicom.``-prefixed strings."""
    properties: dict[str, str] = {}
    for keyword in _TOP_LEVEL_PROPERTIES:
        value = ds.get(keyword)
        if value not in (None, ""):
            properties[f"dicom.{keyword}"] = _text(value)
    specimens = list(ds.get("SpecimenDescriptionSequence") or [])
    for keyword, key in (
        ("SpecimenIdentifier", "dicom.SpecimenIdentifier"),
        ("SpecimenUID", "dicom.SpecimenUID"),
        ("SpecimenShortDescription", "dicom.SpecimenDescription"),
    ):
        values = [_text(s.get(keyword)) for s in specimens if s.get(keyword) not in (None, "")]
        if values:
            properties[key] = ";".join(dict.fromkeys(values))
    stains = list(dict.fromkeys(_stains(specimens)))
    if stains:
        properties["dicom.Stain"] = ";".join(stains)
    return properties


def _stains(specimens: Iterable[Dataset]) -> Iterator[str]:
    """Yield the substances of every staining step (TID 8001 items, Processing type Staining)."""
    for specimen in specimens:
        for step in specimen.get("SpecimenPreparationSequence") or []:
            items = list(step.get("SpecimenPreparationStepContentItemSequence") or [])
            if not any(
                _concept(item) == "111701" and _code_value(item) == "127790008" for item in items
            ):
                continue
            for item in items:
                if _concept(item) != "424361007":  # Using substance
                    continue
                if item.get("TextValue"):
                    yield str(item.TextValue)
                else:
                    for code in item.get("ConceptCodeSequence") or []:
                        if code.get("CodeMeaning"):
                            yield str(code.CodeMeaning)


def _concept(item: Dataset) -> str | None:
    names = item.get("ConceptNameCodeSequence") or []
    return str(names[0].get("CodeValue")) if names else None


def _code_value(item: Dataset) -> str | None:
    codes = item.get("ConceptCodeSequence") or []
    return str(codes[0].get("CodeValue")) if codes else None


def _text(value: object) -> str:
    """Render a DICOM value as one string; multi-values are joined with backslashes."""
    from pydicom.multival import MultiValue

    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value)
