"""The load test's cases: every slide placed for its case, each naming that case."""

from __future__ import annotations

from pathlib import Path

import openslide

from deploy.loadtest.fixtures import SLIDE_KINDS, case_folder


def test_every_case_gets_one_slide_of_each_kind(samples_root: Path, tmp_path: Path) -> None:
    accessions = case_folder(samples_root, tmp_path / "cases", 2)
    assert accessions == ["S26-00001", "S26-00002"]
    names = sorted(p.name for p in (tmp_path / "cases").iterdir())
    assert names == sorted(f"{a}_{n}{s}" for a in accessions for n, s in SLIDE_KINDS)


def test_a_labelled_slide_carries_its_own_case_barcode(samples_root: Path, tmp_path: Path) -> None:
    """The Aperio sample's label barcode names the sample's case; each copy names its own."""
    case_folder(samples_root, tmp_path / "cases", 2)
    for accession in ("S26-00001", "S26-00002"):
        with openslide.OpenSlide(tmp_path / "cases" / f"{accession}_A1_HE.svs") as slide:
            assert slide.properties["aperio.Barcode"].startswith(accession + "-")


def test_slides_without_a_label_barcode_are_hard_links(samples_root: Path, tmp_path: Path) -> None:
    case_folder(samples_root, tmp_path / "cases", 1)
    linked = tmp_path / "cases" / "S26-00001_A2_KI67.tif"
    source = next(samples_root.glob("*_A2_KI67.tif"))
    assert linked.samefile(source)


def test_placing_again_keeps_the_relabelled_copies(samples_root: Path, tmp_path: Path) -> None:
    case_folder(samples_root, tmp_path / "cases", 1)
    copy = tmp_path / "cases" / "S26-00001_A1_HE.svs"
    before = copy.stat().st_mtime_ns
    case_folder(samples_root, tmp_path / "cases", 1)
    assert copy.stat().st_mtime_ns == before
