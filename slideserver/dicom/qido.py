"""QIDO-RS (PS3.18 10.6) query parameters and matching, on pydicom datasets.

Attributes are named by keyword or by tag (``PatientID`` or ``00100020``); matching follows
PS3.4 C.2.2.2: single value, UID list (``,`` or ``\\`` separated), wildcards ``*`` and ``?``
(person names ignore case and match any name component), date and time ranges
(``20240101-20240131``, ``-20240131``, ``20240101-``), and an empty value matches everything.
``includefield`` (a list, or ``all``), ``limit`` and ``offset`` shape the answer.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from slideserver.errors import BadRequest

MAX_LIMIT = 1000
"""The largest page a query answers; ``limit`` defaults to it."""
MAX_VALUE = 256
"""Longest accepted match value (a UID list of a few series fits)."""


class Level(StrEnum):
    """What a query returns."""

    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


STUDY_FIELDS = (
    "SpecificCharacterSet",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
"""PS3.18 Table 10.6.3-3 (and the counts)."""
SERIES_FIELDS = (
    "SpecificCharacterSet",
    "Modality",
    "SeriesDescription",
    "SeriesInstanceUID",
    "SeriesNumber",
    "NumberOfSeriesRelatedInstances",
)
INSTANCE_FIELDS = (
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
    "ImageType",
    "TotalPixelMatrixColumns",
    "TotalPixelMatrixRows",
)
FIELDS = {
    Level.STUDY: STUDY_FIELDS,
    Level.SERIES: SERIES_FIELDS,
    Level.INSTANCE: INSTANCE_FIELDS,
}
CONTROL = frozenset({"includefield", "limit", "offset", "fuzzymatching"})
RANGE_VRS = frozenset({"DA", "TM", "DT"})
UID_VR = "UI"
WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
_DIGITS = re.compile(r"^[0-9.]*$")


@dataclass(frozen=True)
class Match:
    """One attribute to match."""

    keyword: str
    vr: str
    value: str


@dataclass(frozen=True)
class Query:
    """A parsed QIDO query."""

    matches: tuple[Match, ...] = ()
    include: frozenset[str] = frozenset()
    include_all: bool = False
    limit: int = MAX_LIMIT
    offset: int = 0
    fuzzy: bool = False
    names: tuple[str, ...] = field(default=())
    """The keywords matched on (for audit: which of them name a patient or case)."""

    def value_of(self, keyword: str) -> str | None:
        """Return the match value given for ``keyword``, if any."""
        return next((m.value for m in self.matches if m.keyword == keyword), None)


def keyword_of(name: str) -> str:
    """Return the keyword an attribute parameter names (keyword or 8 hex digits); 400 if none."""
    text = name.strip()
    if re.fullmatch(r"[0-9A-Fa-f]{8}", text):
        try:
            keyword = keyword_for_tag(Tag(int(text, 16)))
        except (ValueError, OverflowError):
            keyword = ""
    else:
        keyword = text if tag_for_keyword(text) is not None else ""
    if not keyword:
        raise BadRequest(f"unknown DICOM attribute {text[:40]!r} in the query")
    return keyword


def _int(name: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value


def parse_query(params: Iterable[tuple[str, str]]) -> Query:
    """Return the query of a QIDO request's parameters; raise BadRequest on what is malformed."""
    matches: list[Match] = []
    include: set[str] = set()
    include_all = False
    limit, offset, fuzzy = MAX_LIMIT, 0, False
    for name, value in params:
        if len(value) > MAX_VALUE:
            raise BadRequest(f"the value of {name[:40]!r} is longer than {MAX_VALUE} characters")
        lowered = name.lower()
        if lowered == "includefield":
            for item in value.split(","):
                item = item.strip()
                if item == "all":
                    include_all = True
                elif item:
                    include.add(keyword_of(item))
        elif lowered == "limit":
            limit = _int("limit", value, 0, MAX_LIMIT)
        elif lowered == "offset":
            offset = _int("offset", value, 0, 1 << 31)
        elif lowered == "fuzzymatching":
            fuzzy = value.strip().lower() == "true"
        else:
            keyword = keyword_of(name)
            vr = dictionary_VR(keyword)
            if vr == "SQ":
                raise BadRequest(f"cannot match on the sequence {keyword}")
            if vr in RANGE_VRS:
                _check_range(keyword, value)
            matches.append(Match(keyword, vr, value))
    return Query(
        tuple(matches),
        frozenset(include),
        include_all,
        limit,
        offset,
        fuzzy,
        tuple(m.keyword for m in matches),
    )


def _check_range(keyword: str, value: str) -> None:
    for part in value.split("-", 1):
        if part and not part.replace(".", "").isdigit():
            raise BadRequest(f"{keyword} must be a date or time, or a range of them (A-B)")


def _texts(element_value: Any) -> list[str]:
    if element_value is None:
        return [""]
    if isinstance(element_value, list | tuple) or type(element_value).__name__ == "MultiValue":
        return [str(v) for v in element_value] or [""]
    return [str(element_value)]


def _wildcard(pattern: str, text: str, ignore_case: bool) -> bool:
    if ignore_case:
        pattern, text = pattern.lower(), text.lower()
    # fnmatch treats [] as classes; DICOM has only * and ?
    translated = "".join("[[]" if c == "[" else c for c in pattern)
    return fnmatch.fnmatchcase(text, translated)


def _in_range(value: str, query: str) -> bool:
    if not value:
        return False
    low, sep, high = query.partition("-")
    if not sep:
        return value[: len(query)] == query if query else True
    digits = value.replace(".", "")
    if low and digits[: len(low)] < low.replace(".", ""):
        return False
    return not (high and digits[: len(high)] > high.replace(".", ""))


def matches(dataset: Dataset, query: Query) -> bool:
    """Tell whether ``dataset`` matches every attribute of ``query``."""
    for match in query.matches:
        if not match.value or match.value == "*":
            continue  # universal matching
        element = dataset.get(match.keyword)
        values = _texts(element)
        if match.vr == UID_VR:
            wanted = {v.strip() for v in re.split(r"[,\\]", match.value) if v.strip()}
            if not any(v in wanted for v in values):
                return False
        elif match.vr in RANGE_VRS:
            if not any(_in_range(v, match.value) for v in values):
                return False
        elif match.vr == "PN":
            if not any(_person_name(v, match.value, query.fuzzy) for v in values):
                return False
        elif match.vr in WILDCARD_VRS:
            options = [o for o in re.split(r"\\", match.value) if o]
            if not any(_wildcard(o, v, False) for v in values for o in options):
                return False
        elif not any(v == match.value for v in values):
            return False
    return True


def _person_name(name: str, pattern: str, fuzzy: bool) -> bool:
    """PN matching: the whole name, or (fuzzy) any of its components, ignoring case."""
    if not name:
        return False
    if _wildcard(pattern, name, True):
        return True
    components = [c for c in re.split(r"[\^ =]", name) if c]
    return fuzzy and any(_wildcard(pattern, c, True) for c in components)


def result(dataset: Dataset, level: Level, query: Query) -> dict[str, Any]:
    """Return the DICOM JSON of one match: the level's fields, the included ones, the matched."""
    if query.include_all:
        wanted: Sequence[str] = [
            e.keyword for e in dataset if e.keyword and e.VR != "SQ" and e.keyword != "PixelData"
        ]
    else:
        keywords = [*FIELDS[level]]
        if level is not Level.STUDY:
            keywords += [*STUDY_FIELDS]
        if level is Level.INSTANCE:
            keywords += [*SERIES_FIELDS]
        wanted = [*keywords, *sorted(query.include), *query.names]
    out = Dataset()
    for keyword in dict.fromkeys(wanted):
        if keyword in dataset:
            out[keyword] = dataset[keyword]
    json: dict[str, Any] = out.to_json_dict()
    return json


def page(items: Sequence[Dataset], query: Query) -> Sequence[Dataset]:
    """Return the ``offset``/``limit`` slice of the matches."""
    return items[query.offset : query.offset + query.limit]
