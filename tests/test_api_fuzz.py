"""Schemathesis against a live server: every operation of ``/openapi.json`` as every role.

The server is ``slideserver serve --auth tokens`` over the sample slides with the LIS fixtures
applied (so cases and patient data exist). The fuzzed path parameters are pinned to what exists
(the samples' slide IDs, the fixtures' accession and FHIR IDs) so requests reach real slides;
everything else (regions, sizes, levels, query parameters, bodies) is generated from the
document. IIIF output is capped smaller than by default (see :data:`LIMITS`). Every answer
must: not be a 5xx, have a status, media type, body and headers the document declares, and carry
no PHI to researchers.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from slideserver.dicom import uids
from slideserver.samples import SAMPLE_MRN
from tests.conftest import _security_settings, make_tokens
from tests.live_server import live_server
from tests.security_probe import ACCESSION, BODIES, phi_in

pytestmark = pytest.mark.slow

TOKEN_ROLES = ("admin", "pathologist", "researcher", "lis")
ROLES = (*TOKEN_ROLES, "anonymous")
MAX_EXAMPLES = 6
"""Generated cases per operation and role: bounded so the whole run takes a few minutes."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
LIMITS = {
    "SLIDESERVER_IIIF_MAX_WIDTH": "2048",
    "SLIDESERVER_IIIF_MAX_HEIGHT": "2048",
    "SLIDESERVER_IIIF_MAX_AREA": "4000000",
}
"""Smaller IIIF output limits than the defaults: a 40 MP render of a sample (``full/max``) took
25 s on a loaded two-core machine and answered 504 when it passed the 10 s read deadline. The
fuzz looks for contract violations, not for the machine's speed; the limits are published in
info.json and the document holds for any."""
CONFIG = {
    "seed": 17,
    "phases": {"examples": {"enabled": False}, "coverage": {"enabled": False}},
    "generation": {"max-examples": MAX_EXAMPLES},
}


LAYERS = {"fuzz-case": "case", "fuzz-research": "research"}
"""Annotation layers the fixture creates on the first slide: a case layer (pathologists write
to it) and a research-safe one (researchers read it)."""
ANNOTATIONS = {f"{layer}-mark": layer for layer in LAYERS}
"""One annotation in each layer, by ID."""


@schemathesis.serializer("multipart/related")
def multipart_related(ctx: Any, value: Any) -> bytes:
    """STOW-RS bodies go out as generated (bytes; text as UTF-8): the server must refuse what
    is not a well-formed ``multipart/related`` of DICOM parts with a 4xx."""
    return value if isinstance(value, bytes) else str(value).encode()


@dataclass(frozen=True)
class FuzzServer:
    base: str
    tokens: dict[str, str]
    slide_ids: list[str]
    dicom_slide: tuple[str, str | None]
    """A slide whose DICOM UIDs are derived (:mod:`slideserver.dicom.uids`; one with a case if
    any) and its case's accession."""
    log: Path


def add_annotations(base: str, headers: dict[str, str], slide_id: str) -> None:
    """Create :data:`LAYERS` and :data:`ANNOTATIONS` on ``slide_id`` (as admin)."""
    for layer_id, kind in LAYERS.items():
        layer = {"id": layer_id, "name": layer_id, "kind": kind, "research_safe": True}
        answer = httpx.post(f"{base}/api/slides/{slide_id}/annotation-layers", json=layer,
                            headers=headers)  # fmt: skip
        assert answer.status_code == 201, answer.text[:300]
    for annotation_id, layer_id in ANNOTATIONS.items():
        feature = {
            "type": "Feature",
            "id": annotation_id,
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[10, 10], [90, 10], [90, 90], [10, 10]]],
            },
            "properties": {"layer": layer_id, "label": "fuzz"},
        }
        answer = httpx.post(f"{base}/api/slides/{slide_id}/annotations", json=feature,
                            headers=headers)  # fmt: skip
        assert answer.status_code == 201, answer.text[:300]


@pytest.fixture(scope="module")
def fuzz_server(
    samples_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FuzzServer]:
    """The live server, one token per role, the LIS fixtures applied as admin."""
    workdir = tmp_path_factory.mktemp("fuzz")
    db = workdir / "db.sqlite"
    tokens = make_tokens(
        _security_settings(samples_root, db), {role: (role, "") for role in TOKEN_ROLES}
    )
    log = workdir / "server.log"
    flags = ("--auth", "tokens", "--database-url", f"sqlite:///{db}")
    with live_server([samples_root], *flags, log=log, scrub_env=True, env=LIMITS) as base:
        admin = {"Authorization": f"Bearer {tokens['admin']}"}
        for (method, path), (body, media_type) in BODIES.items():
            headers = {**admin, "Content-Type": media_type}
            answer = httpx.request(method, base + path, content=body, headers=headers)
            assert answer.status_code in (200, 201), answer.text[:300]
        slides = httpx.get(base + "/api/slides?limit=1000", headers=admin).json()["items"]
        add_annotations(base, admin, slides[0]["id"])
        derived = [s for s in slides if s.get("format") != "dicom"]  # DICOM files keep theirs
        dicom_slide = next((s for s in derived if s.get("case")), derived[0])
        accession = (dicom_slide.get("case") or {}).get("accession")
        ids = [s["id"] for s in slides]
        yield FuzzServer(base, tokens, ids, (dicom_slide["id"], accession), log)


def dicom_uids(server: FuzzServer, research: bool) -> dict[str, list[str]]:
    """The DICOM slide's study, series and level-0 instance UIDs as ``research`` callers (or
    the others) see them."""
    slide_id, accession = server.dicom_slide
    return {
        "study": [str(uids.study_uid(slide_id, accession, research=research))],
        "series": [str(uids.series_uid(slide_id, research=research))],
        "instance": [str(uids.instance_uid(slide_id, "level-0", research=research))],
        "frames": ["1", "1,2"],
    }


def pinned(document: dict[str, Any], server: FuzzServer, role: str) -> dict[str, Any]:
    """The document with path identifiers pinned to what the server holds (DICOM UIDs as
    ``role`` sees them)."""
    ids = server.slide_ids
    values: dict[str, list[str]] = {
        **dicom_uids(server, research=role == "researcher"),
        "annotation_id": list(ANNOTATIONS),
        "layer_id": list(LAYERS),
        "slide_id": ids,
        "ids": ids,
        "accession": [ACCESSION],
        "id": [SAMPLE_MRN, f"case.{ACCESSION}", *(f"{k}.{ids[0]}" for k in ("viewer", "iiif"))],
        "path": ["index.html", "api-docs.html"],
        "name": ["thumbnail", "label", "macro"],
    }
    pinned_doc = copy.deepcopy(document)
    for item in pinned_doc["paths"].values():
        for op in item.values():
            for param in op.get("parameters", []):
                if param["in"] == "path" and param["name"] in values:
                    param["schema"] = {"enum": values[param["name"]]}
    return pinned_doc


@pytest.fixture(scope="module")
def document(fuzz_server: FuzzServer) -> dict[str, Any]:
    answer = httpx.get(fuzz_server.base + "/openapi.json")
    assert answer.status_code == 200
    document: dict[str, Any] = answer.json()
    return document


def api_schema(document: dict[str, Any], server: FuzzServer, role: str) -> Any:
    """The pinned document as schemathesis loads it."""
    config = SchemathesisConfig.from_dict({**CONFIG, "base-url": server.base})
    return schemathesis.openapi.from_dict(pinned(document, server, role), config=config)


def credentials(server: FuzzServer, role: str) -> dict[str, str]:
    return {} if role == "anonymous" else {"Authorization": f"Bearer {server.tokens[role]}"}


def fuzz_operation(operation: Any, server: FuzzServer, role: str) -> None:
    """Run one operation's generated cases as ``role``; raise on the first failing answer."""
    headers = credentials(server, role)
    # Valid requests and invalid ones (a wrong type, a missing or out-of-range parameter).
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @given(case=cases)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the failure is reported as is
        database=None,
    )
    def run(case: Any) -> None:
        response = case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)
        if role == "researcher":
            answer = SimpleNamespace(
                content=response.content,
                headers=httpx.Headers({k: ", ".join(v) for k, v in response.headers.items()}),
            )
            assert not phi_in(answer), (case.method, case.formatted_path, phi_in(answer))

    run()


@pytest.mark.parametrize("role", ROLES)
def test_every_operation_as_every_role(
    document: dict[str, Any], fuzz_server: FuzzServer, role: str
) -> None:
    failures: list[str] = []
    schema = api_schema(document, fuzz_server, role)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 50
    for operation in operations:
        try:
            fuzz_operation(operation, fuzz_server, role)
        except (Exception, BaseExceptionGroup) as exc:  # every operation runs; all are reported
            failures.append(f"{operation.label} as {role}: {str(exc)[:2000]}")
    assert not failures, "\n\n".join(failures)
