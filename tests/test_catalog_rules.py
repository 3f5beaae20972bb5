"""Filename rules and evidence: pure functions, no database."""

from __future__ import annotations

import pytest

from slideserver.catalog.evidence import gather_evidence
from slideserver.catalog.rules import FilenameRules, PathFacts
from slideserver.errors import BadRequest


@pytest.mark.parametrize(
    ("path", "facts"),
    [
        ("S24-01234_A1_HE.svs", PathFacts("S24-01234", "A", "A1", "HE")),
        ("S24-01234_A2_KI67.tif", PathFacts("S24-01234", "A", "A2", "KI67")),
        ("S24-05678_B1_HE.ome.tiff", PathFacts("S24-05678", "B", "B1", "HE")),
        ("S24-05678_B2_PAS", PathFacts("S24-05678", "B", "B2", "PAS")),
        ("2024/jan/S24-05678_B12_PAS-D.svs", PathFacts("S24-05678", "B", "B12", "PAS-D")),
        ("S24-01234/A3_HE.svs", PathFacts("S24-01234", "A", "A3", "HE")),
        ("S24-01234-A1", PathFacts("S24-01234", "A", "A1")),
        ("SP99-1_x.svs", PathFacts("SP99-1")),
        ("holiday.tif", PathFacts()),
        ("S2401234_A1_HE.svs", PathFacts()),
    ],
)
def test_default_rules_read_cases_from_paths(path: str, facts: PathFacts) -> None:
    assert FilenameRules().read(path) == facts


def test_custom_pattern_replaces_the_defaults() -> None:
    rules = FilenameRules.from_setting(r"^(?P<barcode>\d{8})-(?P<accession>[A-Z]+\d+)")
    assert rules.read("12345678-AB12.svs") == PathFacts("AB12", barcode="12345678")
    assert rules.read("S24-01234_A1_HE.svs") == PathFacts()


def test_a_broken_pattern_is_a_clear_error() -> None:
    with pytest.raises(BadRequest, match="not a regex"):
        FilenameRules.from_setting("(?P<accession>")


def test_dicom_evidence_wins_and_disagreements_are_noted() -> None:
    properties = {
        "dicom.PatientID": "MRN1",
        "dicom.PatientName": "DOE^JANE",
        "dicom.PatientBirthDate": "19700102",
        "dicom.AccessionNumber": "S24-00001",
        "dicom.ContainerIdentifier": "S24-00001-A1",
        "dicom.Stain": "HE",
    }
    evidence = gather_evidence("S24-00002_A1_HE.svs", properties, FilenameRules())
    assert evidence.accession == "S24-00001"
    assert evidence.barcode == "S24-00001-A1"
    assert evidence.block == "A1" and evidence.specimen == "A" and evidence.stain == "HE"
    assert evidence.patient_id == "MRN1" and evidence.patient_birth_date == "1970-01-02"
    assert evidence.sources[0] == "dicom"
    assert any("S24-00002" in d for d in evidence.disagreements)
    assert all("MRN1" not in d and "DOE" not in d for d in evidence.disagreements)


def test_vendor_barcode_is_evidence() -> None:
    evidence = gather_evidence("scan 17.svs", {"aperio.Barcode": "S24-00003-B2"}, FilenameRules())
    assert (evidence.accession, evidence.block, evidence.barcode) == (
        "S24-00003",
        "B2",
        "S24-00003-B2",
    )
    assert evidence.sources == ("barcode",)
