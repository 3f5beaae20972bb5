"""QIDO-RS matching (PS3.4 C.2.2.2) on datasets: what a search parameter finds and refuses."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from slideserver.dicom.qido import Level, matches, page, parse_query, result
from slideserver.errors import BadRequest


def study(name: str = "DOE^JANE", date: str = "20240105", uid: str = "1.2.3") -> Dataset:
    ds = Dataset()
    ds.PatientName = name
    ds.PatientID = "MRN-0012345"
    ds.AccessionNumber = "S24-05678"
    ds.StudyDate = date
    ds.StudyInstanceUID = uid
    ds.Modality = "SM"
    ds.SeriesInstanceUID = uid + ".1"
    return ds


def found(params: list[tuple[str, str]], ds: Dataset | None = None) -> bool:
    return matches(ds if ds is not None else study(), parse_query(params))


@pytest.mark.parametrize("pattern", ["DOE^JANE", "doe^jane", "DOE*", "d?e^*", "*JANE", "*"])
def test_patient_name_wildcards_match_ignoring_case(pattern: str) -> None:
    assert found([("PatientName", pattern)])


@pytest.mark.parametrize("pattern", ["SMITH*", "DOE", "JANE", "?OE"])
def test_patient_name_must_match_the_whole_name(pattern: str) -> None:
    assert not found([("PatientName", pattern)])


def test_fuzzy_matching_finds_a_name_by_one_component() -> None:
    assert found([("PatientName", "jane"), ("fuzzymatching", "true")])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20240105", True),
        ("20240101-20240131", True),
        ("-20240105", True),
        ("20240106-", False),
        ("20230101-20231231", False),
        ("-20231231", False),
    ],
)
def test_study_date_single_values_and_ranges(value: str, expected: bool) -> None:
    assert found([("StudyDate", value)]) is expected


def test_a_study_without_a_date_matches_no_date_range() -> None:
    assert not found([("StudyDate", "20240101-")], study(date=""))


def test_uid_list_matching_takes_any_of_the_listed_uids() -> None:
    assert found([("StudyInstanceUID", "9.9,1.2.3")])
    assert found([("StudyInstanceUID", "9.9\\1.2.3")])
    assert not found([("StudyInstanceUID", "1.2.30")])


def test_attributes_can_be_named_by_tag() -> None:
    assert found([("00100020", "MRN-0012345"), ("0020000D", "1.2.3")])
    assert not found([("00080050", "S24-00000")])


@pytest.mark.parametrize("name", ["PatientID", "AccessionNumber", "Modality"])
def test_an_empty_value_matches_everything(name: str) -> None:
    assert found([(name, "")])


def test_exact_attributes_do_not_match_prefixes() -> None:
    assert found([("AccessionNumber", "S24-05678")])
    assert not found([("AccessionNumber", "S24-0567")])
    assert found([("AccessionNumber", "S24-0567?")])


@pytest.mark.parametrize(
    "params",
    [
        [("NotAnAttribute", "x")],
        [("ffffffff", "x")],
        [("SpecimenDescriptionSequence", "x")],
        [("StudyDate", "last week")],
        [("limit", "-1")],
        [("limit", "lots")],
        [("offset", "x")],
        [("includefield", "Nonsense")],
        [("PatientID", "x" * 300)],
    ],
)
def test_malformed_queries_are_bad_requests(params: list[tuple[str, str]]) -> None:
    with pytest.raises(BadRequest):
        parse_query(params)


def test_results_hold_the_level_fields_and_the_included_ones() -> None:
    ds = study()
    ds.StudyDescription = "not asked for"
    ds.SeriesDescription = "asked for"
    out = result(ds, Level.STUDY, parse_query([("includefield", "SeriesDescription")]))
    assert out["00100020"]["Value"] == ["MRN-0012345"]
    assert out["0008103E"]["Value"] == ["asked for"]
    assert "00081030" not in out


def test_includefield_all_returns_every_attribute() -> None:
    ds = study()
    ds.StudyDescription = "everything"
    out = result(ds, Level.STUDY, parse_query([("includefield", "all")]))
    assert out["00081030"]["Value"] == ["everything"]


def test_limit_and_offset_slice_the_matches() -> None:
    items = [study(uid=f"1.2.{n}") for n in range(5)]
    sliced = page(items, parse_query([("offset", "1"), ("limit", "2")]))
    assert [ds.StudyInstanceUID for ds in sliced] == ["1.2.1", "1.2.2"]
