"""ReaderRegistry: which reader opens a slide, and which files of a folder make one slide."""

from __future__ import annotations

import shutil
from pathlib import Path

from slideserver.models import SlideSource
from slideserver.readers.registry import default_registry
from tests.helpers import DICOM, SVS


def test_group_files_makes_one_slide_of_a_dicom_series(samples_dir: dict[str, Path]) -> None:
    instances = sorted(samples_dir[DICOM].iterdir())
    assert instances and all(p.suffix == ".dcm" for p in instances)
    slides = default_registry().group_files([*instances, samples_dir[SVS]])
    assert slides == [SlideSource(samples_dir[DICOM], tuple(instances), format_hint="dicom")]


def test_group_files_takes_only_the_endings_a_reader_groups(
    samples_dir: dict[str, Path], tmp_path: Path
) -> None:
    renamed = []
    for instance in sorted(samples_dir[DICOM].iterdir()):
        renamed.append(tmp_path / (instance.stem + ".bin"))
        shutil.copy(instance, renamed[-1])
    assert default_registry().group_files(renamed) == []
    upper = [p.rename(p.with_suffix(".DCM")) for p in renamed]
    assert [s.files for s in default_registry().group_files(upper)] == [tuple(sorted(upper))]


def test_group_files_of_single_file_slides_is_empty(samples_dir: dict[str, Path]) -> None:
    assert default_registry().group_files([samples_dir[SVS]]) == []
