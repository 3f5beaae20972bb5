"""What a load test needs in the cluster before it starts: cases of slides, tokens, LIS orders."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

SLIDE_KINDS = (("A1_HE", ".svs"), ("A2_KI67", ".tif"), ("B1_HE", ".ome.tiff"))
"""Each case's slides: the sample slides of these names and suffixes, hard-linked per case."""


@dataclass(frozen=True)
class Fixture:
    accessions: list[str]
    pathologist_tokens: list[str]
    lis_token: str


def case_folder(samples: Path, folder: Path, cases: int) -> list[str]:
    """Hard-link the sample slides into ``cases`` cases (S26-00001...): every case its own slides.

    Links cost no disk; each slide has its own ID, so nothing is served from another case's
    cache: what 200 pathologists opening different cases would cause. A slide whose label
    barcode names the sample's case (the Aperio sample's ``Barcode``) is copied with its
    description naming its own case instead: the barcode outranks the file name, so a link
    would leave it out of its case, in the sample's.
    """
    folder.mkdir(parents=True, exist_ok=True)
    sources = {}
    for name, suffix in SLIDE_KINDS:
        found = sorted(p for p in samples.iterdir() if p.name.endswith(name + suffix))
        if not found:
            raise FileNotFoundError(f"no sample slide *{name}{suffix} in {samples}")
        sources[name + suffix] = found[0]
    accessions = []
    for index in range(1, cases + 1):
        accession = f"S26-{index:05d}"
        accessions.append(accession)
        for tail, source in sources.items():
            place_slide(source, folder / f"{accession}_{tail}", accession)
    return accessions


def place_slide(source: Path, target: Path, accession: str) -> None:
    """Put ``source`` at ``target`` for case ``accession``: a hard link, or a relabelled copy."""
    import tifffile

    sample_accession = source.name.split("_", 1)[0]
    with tifffile.TiffFile(source) as tiff:
        description = tiff.pages.first.description
    if f"Barcode = {sample_accession}" not in description:
        if not target.exists():
            os.link(source, target)
        return
    if len(accession) != len(sample_accession):  # rewritten in place: the same length
        raise ValueError(f"{accession} and {sample_accession} differ in length")
    own = description.replace(sample_accession, accession)
    if target.exists() and not target.samefile(source) and tifffile.tiffcomment(target) == own:
        return
    partial = target.with_name(target.name + ".part")
    shutil.copyfile(source, partial)
    tifffile.tiffcomment(partial, own)
    os.replace(partial, target)


def create_tokens(database_url: str, pathologists: int) -> tuple[list[str], str]:
    """Create ``pathologists`` pathologist tokens and one LIS token in the cluster's database."""
    from datetime import timedelta

    from slideserver.security.authority import Security
    from slideserver.settings import Settings

    security = Security(Settings(database_url=database_url, auth="open"))
    security.open()
    store = security.tokens
    if store is None:
        raise RuntimeError("the security store did not open")
    try:
        tokens = [
            store.create(f"pathologist-{i:03d}", "pathologist", "", timedelta(days=1))[1]
            for i in range(pathologists)
        ]
        lis = store.create("lis-load", "lis", "", timedelta(days=1))[1]
    finally:
        security.close()
    return tokens, lis


def order(accession: str, index: int) -> dict[str, object]:
    """The LIS order of one case: a patient, two specimens, the blocks the slide names give."""
    return {
        "accession": accession,
        "patient": {
            "identifier": f"MRN-LOAD-{index:05d}",
            "name": f"LOAD^PATIENT{index}",
            "birth_date": "1960-01-01",
            "sex": "F",
        },
        "specimens": [
            {"id": "A", "blocks": [{"id": "A1", "slides": []}, {"id": "A2", "slides": []}]},
            {"id": "B", "blocks": [{"id": "B1", "slides": []}]},
        ],
        "message_id": f"load-{accession}",
    }


def send_orders(base: str, lis_token: str, accessions: list[str]) -> None:
    """POST each case's order through nginx, as the LIS does before the shift."""
    for index, accession in enumerate(accessions, 1):
        request = urllib.request.Request(
            f"{base}/api/lis/cases",
            data=json.dumps(order(accession, index)).encode(),
            headers={"Authorization": f"Bearer {lis_token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            if answer.status >= 300:
                raise RuntimeError(f"order {accession} answered {answer.status}")
