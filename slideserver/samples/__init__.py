"""Sample slides in real formats, made from real tissue imagery, for the demo and the tests.

``write_samples(out)`` writes one slide per format the server reads (Aperio SVS, generic TIFF,
OME-TIFF, DICOM WSI) under names that follow the default catalog filename rule
``{accession}_{part}{block}_{stain}.{ext}``, with a synthetic patient on the labels and in DICOM.
Everything is deterministic: the same call writes the same pixels.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import tifffile
from PIL import Image

from slideserver.samples.tissue import TissueImage

__all__ = [
    "SAMPLE_BIRTH_DATE",
    "SAMPLE_MRN",
    "SAMPLE_PATIENT_DISPLAY",
    "SAMPLE_PATIENT_NAME",
    "SampleSpec",
    "TissueImage",
    "sample_specs",
    "write_samples",
]

SAMPLE_PATIENT_NAME = "DOE^JANE"
"""Synthetic PHI drawn on labels and put in DICOM; tests search response bodies for it."""
SAMPLE_PATIENT_DISPLAY = "Jane Doe"
SAMPLE_MRN = "MRN-0012345"
SAMPLE_BIRTH_DATE = "1961-04-12"

SMALL_SIZE = (8192, 6144)
LARGE_SIZE = (40960, 30720)
"""Large enough to exercise streaming (1.26 gigapixels); levels 40960, 10240, 2560, 640."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleSpec:
    """One sample slide: catalog identity, picture and file format."""

    accession: str
    block: str
    """Part letter and block number, e.g. ``A1``."""
    stain: str
    kind: str
    """``svs``, ``generic-tiff``, ``ome-tiff`` or ``dicom``."""
    width: int
    height: int
    seed: int
    mpp: float

    @property
    def name(self) -> str:
        return f"{self.accession}_{self.block}_{self.stain}"

    @property
    def filename(self) -> str:
        suffix = {"svs": ".svs", "generic-tiff": ".tif", "ome-tiff": ".ome.tiff", "dicom": ""}
        return self.name + suffix[self.kind]

    @property
    def tissue_stain(self) -> str:
        """The stain rendering for the picture (H&E for any stain it does not know)."""
        return self.stain if self.stain in ("HE", "KI67", "PAS") else "HE"

    def tissue(self) -> TissueImage:
        return TissueImage(self.width, self.height, self.seed, stain=self.tissue_stain)


def sample_specs(*, large: bool = False) -> list[SampleSpec]:
    """Every sample slide ``write_samples`` writes, small ones first."""
    width, height = SMALL_SIZE
    specs = [
        SampleSpec("S24-01234", "A1", "HE", "svs", width, height, seed=1, mpp=0.25),
        SampleSpec("S24-01234", "A2", "KI67", "generic-tiff", width, height, seed=2, mpp=0.5),
        SampleSpec("S24-05678", "B1", "HE", "ome-tiff", width, height, seed=3, mpp=0.25),
        SampleSpec("S24-05678", "B2", "PAS", "dicom", width, height, seed=4, mpp=0.25),
    ]
    if large:
        specs.append(SampleSpec("S24-09999", "A1", "HE", "svs", *LARGE_SIZE, seed=5, mpp=0.25))
    return specs


def write_samples(out: Path, *, large: bool = False) -> dict[str, Path]:
    """Write every sample slide into `out` (skip ones already present and valid).

    Returns name -> path, names being catalog names (``S24-01234_A1_HE``...). Each slide is
    written under a temporary name and renamed into place, so a present file is a complete one.
    The DICOM sample is skipped with a warning if its writer (``samples.dicom``) is missing.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for spec in sample_specs(large=large):
        path = out / spec.filename
        if _is_valid(path, spec):
            written[spec.name] = path
            continue
        writer = _writer(spec)
        if writer is None:
            continue
        started = time.perf_counter()
        _write_atomically(path, functools.partial(_call_writer, writer, spec=spec))
        log.info("wrote sample %s in %.1f s", path, time.perf_counter() - started)
        written[spec.name] = path
    return written


# -- writers -----------------------------------------------------------------------------------

_Writer = Callable[[Path, SampleSpec], None]


def _label_for(spec: SampleSpec) -> tuple[TissueImage, Image.Image, Image.Image]:
    """The slide's tissue, its printed label and the macro picture of the whole glass."""
    from slideserver.samples.labels import LabelText, make_label, make_macro

    tissue = spec.tissue()
    stain_text = {"HE": "H&E", "KI67": "Ki-67", "PAS": "PAS"}.get(spec.stain, spec.stain)
    label = make_label(
        LabelText(
            patient_name=SAMPLE_PATIENT_DISPLAY,
            mrn=SAMPLE_MRN,
            birth_date=SAMPLE_BIRTH_DATE,
            accession=spec.accession,
            block=spec.block,
            stain=stain_text,
        )
    )
    return tissue, label, make_macro(tissue, label)


def _write_svs(target: Path, spec: SampleSpec) -> None:
    from slideserver.samples.tiff import AperioInfo, write_svs

    tissue, label, macro = _label_for(spec)
    info = AperioInfo(filename=spec.name, barcode=f"{spec.accession}-{spec.block}", mpp=spec.mpp)
    write_svs(target, tissue, info, label=label, macro=macro)


def _write_generic(target: Path, spec: SampleSpec) -> None:
    from slideserver.samples.tiff import write_generic_tiff

    write_generic_tiff(target, spec.tissue(), mpp=spec.mpp)


def _write_ome(target: Path, spec: SampleSpec) -> None:
    from slideserver.samples.tiff import write_ome_tiff

    tissue, label, macro = _label_for(spec)
    write_ome_tiff(
        target,
        tissue,
        name=spec.name,
        mpp=spec.mpp,
        label=label,
        macro=macro,
    )


def _write_dicom(target: Path, spec: SampleSpec) -> None:
    from slideserver.samples.dicom import write_dicom_wsi

    tissue, label, macro = _label_for(spec)
    target.mkdir(parents=True, exist_ok=True)
    series = write_dicom_wsi(
        target,
        tissue,
        mpp=spec.mpp,
        patient_id=SAMPLE_MRN,
        patient_name=SAMPLE_PATIENT_NAME,
        accession=spec.accession,
        container_id=f"{spec.accession}-{spec.block}",
        stain=spec.stain,
        label=label,
        macro=macro,
    )
    if Path(series).resolve() != target.resolve():  # the writer chose a subfolder: flatten
        for item in Path(series).iterdir():
            item.rename(target / item.name)


def _writer(spec: SampleSpec) -> _Writer | None:
    if spec.kind == "dicom":
        try:
            import slideserver.samples.dicom  # noqa: F401
        except ImportError as exc:
            log.warning("skipping DICOM sample %s: DICOM writer unavailable (%s)", spec.name, exc)
            return None
        return _write_dicom
    return {"svs": _write_svs, "generic-tiff": _write_generic, "ome-tiff": _write_ome}[spec.kind]


def _call_writer(writer: _Writer, target: Path, *, spec: SampleSpec) -> None:
    writer(target, spec)


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write to a temporary sibling, then rename into place (replacing an invalid old copy)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    _remove(temporary)
    try:
        write(temporary)
        _remove(path)
        temporary.rename(path)
    finally:
        _remove(temporary)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _is_valid(path: Path, spec: SampleSpec) -> bool:
    """A present sample is valid if it has the expected size and our current generator tag."""
    if spec.kind == "dicom":
        return path.is_dir() and any(path.glob("*.dcm"))
    if not path.is_file():
        return False
    from slideserver.samples.tiff import GENERATOR_TAG

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            return bool(
                page.shape[:2] == (spec.height, spec.width)
                and page.software == GENERATOR_TAG
                and len(tif.pages) > 1
            )
    except Exception:  # any unreadable file is simply rewritten
        return False
