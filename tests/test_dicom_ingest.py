"""The DICOM store: instances checked, written once, atomically; shown when the slide is whole."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from slideserver.dicom.ingest import DicomStore, dicom_roots
from slideserver.dicom.instance import (
    CANNOT_UNDERSTAND,
    DATASET_MISMATCH,
    DUPLICATE_SOP_INSTANCE,
    SOP_CLASS_NOT_SUPPORTED,
    InstanceRefused,
    read_instance,
)
from slideserver.models import SlideSource
from slideserver.readers.dicom import DicomReader
from slideserver.settings import Settings
from tests.dicom_wsi import altered, slide_files, write_slide

QUIET = 60.0


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_slide(tmp_path_factory.mktemp("dicom") / "slide")


@pytest.fixture
def store(tmp_path: Path) -> DicomStore:
    opened = DicomStore(tmp_path / "store", quiet_seconds=QUIET)
    opened.open()
    return opened


def shown_files(store: DicomStore) -> list[Path]:
    """Instance files the catalog's walk would see (dot folders are skipped)."""
    return sorted(
        p for p in store.root.rglob("*.dcm") if p.relative_to(store.root).parts[0][0] != "."
    )


def put(store: DicomStore, path: Path) -> bool:
    """Store one file; return whether it was a duplicate."""
    return store.store(read_instance(path.read_bytes())).duplicate


def test_a_slide_is_shown_only_once_its_pyramid_is_whole(store: DicomStore, slide: Path) -> None:
    level_0, level_1, label, overview = slide_files(slide)
    for path in (label, overview, level_0):
        put(store, path)
        assert store.publish() == [] and shown_files(store) == []
    put(store, level_1)
    shown = store.publish()
    assert len(shown) == 1 and len(shown_files(store)) == 4


def test_label_and_overview_land_in_the_folder_of_their_pyramid(
    store: DicomStore, slide: Path
) -> None:
    for path in slide_files(slide):
        put(store, path)
    (folder,) = store.publish()
    with DicomReader(SlideSource(store.root / folder)) as reader:
        assert reader.info.associated == ("label", "macro")
        assert len(reader.info.levels) == 2


def test_the_same_instance_again_is_accepted_without_a_write(
    store: DicomStore, slide: Path
) -> None:
    level_0 = slide_files(slide)[0]
    assert put(store, level_0) is False
    canonical = next(store.instances.glob("*.dcm"))
    before = canonical.stat()
    assert put(store, level_0) is True
    after = canonical.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_the_same_instance_with_new_file_meta_is_the_same_instance(
    store: DicomStore, slide: Path
) -> None:
    data = slide_files(slide)[0].read_bytes()
    put(store, slide_files(slide)[0])

    def new_meta(ds: Dataset) -> None:
        ds.file_meta.ImplementationVersionName = "OTHER_SENDER"

    assert store.store(read_instance(altered(data, new_meta))).duplicate is True


def test_the_same_uid_with_other_content_is_refused_and_the_first_kept(
    store: DicomStore, slide: Path
) -> None:
    level_0 = slide_files(slide)[0]
    put(store, level_0)

    def renamed(ds: Dataset) -> None:
        ds.PatientName = "OTHER^PATIENT"

    with pytest.raises(InstanceRefused) as refused:
        store.store(read_instance(altered(level_0.read_bytes(), renamed)))
    assert refused.value.reason == DUPLICATE_SOP_INSTANCE
    assert next(store.instances.glob("*.dcm")).read_bytes() == level_0.read_bytes()


def test_concurrent_stores_of_one_instance_write_it_once(store: DicomStore, slide: Path) -> None:
    instance = read_instance(slide_files(slide)[0].read_bytes())
    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda: results.append(store.store(instance).duplicate))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] + [True] * 7
    assert len(list(store.instances.iterdir())) == 1  # no temporary file left either


def test_another_sop_class_is_refused(slide: Path) -> None:
    def ct(ds: Dataset) -> None:
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID

    with pytest.raises(InstanceRefused) as refused:
        read_instance(altered(slide_files(slide)[0].read_bytes(), ct))
    assert refused.value.reason == SOP_CLASS_NOT_SUPPORTED


def test_a_truncated_instance_is_refused(slide: Path) -> None:
    data = slide_files(slide)[0].read_bytes()
    with pytest.raises(InstanceRefused) as refused:
        read_instance(data[: len(data) - 3000])
    assert refused.value.reason in {CANNOT_UNDERSTAND, DATASET_MISMATCH}


def test_a_file_that_is_not_dicom_is_refused() -> None:
    with pytest.raises(InstanceRefused) as refused:
        read_instance(b"\x00" * 128 + b"JUNK" + b"\x00" * 64)
    assert refused.value.reason == CANNOT_UNDERSTAND


def test_a_uid_that_would_be_a_path_is_refused(store: DicomStore, slide: Path) -> None:
    def escaping(ds: Dataset) -> None:
        ds.StudyInstanceUID = "../../escape"

    with pytest.raises(InstanceRefused) as refused:
        read_instance(altered(slide_files(slide)[0].read_bytes(), escaping))
    assert refused.value.reason == DATASET_MISMATCH
    assert not (store.root.parent / "escape").exists()


def test_an_instance_of_another_study_than_the_path_names_is_refused(slide: Path) -> None:
    with pytest.raises(InstanceRefused) as refused:
        read_instance(slide_files(slide)[0].read_bytes(), study_uid="1.2.3.4")
    assert refused.value.reason == DATASET_MISMATCH


def test_after_the_quiet_period_a_pyramid_without_a_one_tile_level_is_shown(
    tmp_path: Path,
) -> None:
    deep = write_slide(tmp_path / "deep", accession="S24-7002", level_count=2, width=1024)
    store = DicomStore(tmp_path / "store", quiet_seconds=QUIET)
    store.open()
    put(store, deep / "level-0.dcm")  # 4 x 2 tiles; level 1 (2 x 1 tiles) does not fit one
    put(store, deep / "level-1.dcm")
    assert store.publish() == []
    assert len(store.publish(now=_later(store, QUIET))) == 1


def test_a_level_short_of_frames_is_never_shown(store: DicomStore, slide: Path) -> None:
    def bigger(ds: Dataset) -> None:  # the matrix needs 3 x 2 tiles; the 4 frames do not cover it
        ds.TotalPixelMatrixColumns = 700

    store.store(read_instance(altered(slide_files(slide)[0].read_bytes(), bigger)))
    put(store, slide_files(slide)[1])
    assert store.publish(now=_later(store, 100 * QUIET)) == []
    assert shown_files(store) == []


def test_more_instances_of_a_shown_slide_join_its_folder(store: DicomStore, slide: Path) -> None:
    level_0, level_1, label, _ = slide_files(slide)
    for path in (level_0, level_1):
        put(store, path)
    (folder,) = store.publish()
    put(store, label)
    assert store.publish() == [folder]
    assert len(list((store.root / folder).iterdir())) == 3


def test_the_store_is_a_slide_root_unless_a_root_holds_it(tmp_path: Path) -> None:
    alone = dicom_roots(Settings(roots=(tmp_path / "slides",), dicom_store_dir=str(tmp_path / "d")))
    assert alone.roots == (tmp_path / "slides", (tmp_path / "d").resolve())
    inside = Settings(roots=(tmp_path,), dicom_store_dir=str(tmp_path / "d"))
    assert dicom_roots(inside).roots == (tmp_path,)


def _later(store: DicomStore, seconds: float) -> float:
    stamps = [p.stat().st_mtime for p in store.incoming.glob("*/*")]
    return max(stamps) + seconds


def test_an_instance_stored_but_not_staged_before_a_crash_is_staged_at_start(
    store: DicomStore, slide: Path
) -> None:
    for path in slide_files(slide)[:2]:
        put(store, path)
    shutil.rmtree(store.incoming)  # as if the process died between the two links
    (store.instances / ".half-written.dcm.0a1b.tmp").write_bytes(b"partial")
    restarted = DicomStore(store.root, quiet_seconds=QUIET)
    restarted.open()
    assert restarted.recover() == 2
    assert len(restarted.publish()) == 1
    assert sorted(p.name for p in store.instances.iterdir() if p.name.startswith(".")) == []
