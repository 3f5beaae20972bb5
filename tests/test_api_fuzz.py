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


@dataclass(frozen=True)
class FuzzServer:
    base: str
    tokens: dict[str, str]
    slide_ids: list[str]
    log: Path


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
        yield FuzzServer(base, tokens, [s["id"] for s in slides], log)


def pinned(document: dict[str, Any], server: FuzzServer) -> dict[str, Any]:
    """The document with path identifiers pinned to what the server holds."""
    ids = server.slide_ids
    values: dict[str, list[str]] = {
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
def api_schema(fuzz_server: FuzzServer) -> Any:
    document = httpx.get(fuzz_server.base + "/openapi.json").json()
    config = SchemathesisConfig.from_dict({**CONFIG, "base-url": fuzz_server.base})
    return schemathesis.openapi.from_dict(pinned(document, fuzz_server), config=config)


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
def test_every_operation_as_every_role(api_schema: Any, fuzz_server: FuzzServer, role: str) -> None:
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 50
    for operation in operations:
        try:
            fuzz_operation(operation, fuzz_server, role)
        except (Exception, BaseExceptionGroup) as exc:  # every operation runs; all are reported
            failures.append(f"{operation.label} as {role}: {str(exc)[:2000]}")
    assert not failures, "\n\n".join(failures)
