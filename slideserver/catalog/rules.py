"""Filename and folder rules: regexes with named groups that read a case out of a slide's path.

Recognised groups: ``accession``, ``part`` (the specimen), ``block``, ``stain``, ``barcode``.
When ``block`` is only digits and ``part`` is known, the block ID is ``part + block`` (``A`` and
``1`` make block ``A1``), the way blocks are labelled in the lab. Rules are tried in order
against the path relative to the root, then against the bare name; the first that matches wins.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from slideserver.errors import BadRequest

ACCESSION = r"[A-Z]{1,3}\d{2}-\d{1,6}"
"""An accession number: prefix letters, two-digit year, dash, sequence (S24-01234)."""

_PART_BLOCK_STAIN = (
    r"(?P<part>[A-Z]{1,2})(?P<block>\d{1,3})(?:[_ ](?P<stain>[A-Za-z0-9+]+(?:-[A-Za-z0-9+]+)*))?"
)

DEFAULT_RULES = (
    # S24-01234_A1_HE.svs, S24-05678_B1_HE.ome.tiff, S24-05678_B2_PAS (DICOM folder)
    rf"(?:^|/)(?P<accession>{ACCESSION})[_ ]{_PART_BLOCK_STAIN}(?:\.[^/]*)?$",
    # S24-01234/A1_HE.svs: the case as a folder
    rf"(?:^|/)(?P<accession>{ACCESSION})/(?:[^/]+/)*{_PART_BLOCK_STAIN}(?:\.[^/]*)?$",
    # S24-01234-A1 (labels and container identifiers)
    rf"^(?P<accession>{ACCESSION})-(?P<part>[A-Z]{{1,2}})(?P<block>\d{{1,3}})$",
    # anything that at least names the case
    rf"(?:^|[/_ ])(?P<accession>{ACCESSION})(?=$|[/_. ])",
)


@dataclass(frozen=True)
class PathFacts:
    """What a rule read from a path or label; ``None`` where it said nothing."""

    accession: str | None = None
    specimen: str | None = None
    block: str | None = None
    stain: str | None = None
    barcode: str | None = None


class FilenameRules:
    """An ordered list of compiled rules."""

    def __init__(self, patterns: Sequence[str] = DEFAULT_RULES) -> None:
        self.patterns: list[re.Pattern[str]] = []
        for pattern in patterns:
            try:
                self.patterns.append(re.compile(pattern))
            except re.error as exc:
                raise BadRequest(
                    f"filename pattern {pattern[:80]!r} is not a regex: {exc}"
                ) from exc

    @classmethod
    def from_setting(cls, pattern: str) -> FilenameRules:
        """Build the rules for the ``filename_pattern`` setting (empty: the defaults)."""
        return cls([pattern]) if pattern.strip() else cls()

    def read(self, text: str) -> PathFacts:
        """Return what the first matching rule reads from ``text`` (a relative path or label)."""
        candidates = [text]
        if "/" in text:
            candidates.append(text.rsplit("/", 1)[1])
        for pattern in self.patterns:
            for candidate in candidates:
                match = pattern.search(candidate)
                if match:
                    return _facts(match)
        return PathFacts()


def _facts(match: re.Match[str]) -> PathFacts:
    groups = {k: v for k, v in match.groupdict().items() if v}
    part = groups.get("part")
    block = groups.get("block")
    if block and part and block.isdigit():
        block = f"{part}{block}"
    accession = groups.get("accession")
    return PathFacts(
        accession=accession.upper() if accession else None,
        specimen=part,
        block=block,
        stain=groups.get("stain"),
        barcode=groups.get("barcode"),
    )
