"""The attacker's probe of issue #11, as reusable pieces: routes, callers, PHI, audit rows.

Routes are read from the app itself (every route it serves, with the methods it allows), so a
route added later is probed automatically; it only needs a generator for each of its path
parameters in :data:`PARAM_VALUES` (a test fails naming the parameter otherwise). Callers are the
four roles plus everyone who should be refused: no credentials, a JWT-looking forgery, a revoked
and an expired API token, and a cookie session that omits the CSRF header on writes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from slideserver.api.app import create_app
from slideserver.api.policy import POLICY, Rule
from slideserver.dicom import uids
from slideserver.samples import (
    SAMPLE_BIRTH_DATE,
    SAMPLE_MRN,
    SAMPLE_PATIENT_DISPLAY,
    SAMPLE_PATIENT_NAME,
)
from slideserver.security.audit import AuditEvent
from slideserver.security.schema import audit_events
from slideserver.settings import Settings
from tests.fixtures.lis.support import read
from tests.helpers import SVS

ACCESSION = "S24-01234"
CONTAINER = "S24-01234-A1"

ROLES = ("admin", "pathologist", "researcher", "lis")
"""Callers holding a valid API token of that role."""
REFUSED = ("anonymous", "forged-jwt", "revoked", "expired")
"""Callers whose every request to a protected route must get 401."""
COOKIE = "cookie-no-csrf"
"""An admin's viewer session (cookie) that omits ``X-Requested-With``: refused on writes."""
CALLERS = (*ROLES, *REFUSED, COOKIE)

FORGED_JWT = (
    "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0."
    "eyJzdWIiOiJhZG1pbiIsInJvbGUiOiJhZG1pbiIsImV4cCI6OTk5OTk5OTk5OX0."
)
"""An unsigned (``alg: none``) JWT claiming the admin role."""

PHI = (
    SAMPLE_PATIENT_NAME,
    SAMPLE_PATIENT_DISPLAY,
    SAMPLE_MRN,
    SAMPLE_BIRTH_DATE,
    "19610412",
    "S24-01234",
    "S24-05678",
)
"""PHI of the samples and the LIS fixtures: patient name (both spellings), MRN, birth date (ISO
and HL7), accession numbers (in file names, barcodes, DICOM and orders)."""
TEXT_ONLY_PHI = ("DOE",)
"""Searched in text answers only, case-sensitively: three bytes occur by chance in compressed
pixels, and "does" in prose."""


def _slide(ctx: ProbeContext, template: str) -> str:
    return ctx.slide_id


def _fmt(ctx: ProbeContext, template: str) -> str:
    return "jpg" if template.startswith("/iiif/") else "jpeg"


def _fhir_id(ctx: ProbeContext, template: str) -> str:
    return SAMPLE_MRN if template.startswith("/fhir/Patient/") else f"case.{ACCESSION}"


ParamValue = Callable[["ProbeContext", str], str]
PARAM_VALUES: dict[str, ParamValue] = {
    "slide_id": _slide,
    "ids": _slide,
    "name": lambda ctx, template: "thumbnail",
    "level": lambda ctx, template: "9",
    "col": lambda ctx, template: "0",
    "row": lambda ctx, template: "0",
    "fmt": _fmt,
    "region": lambda ctx, template: "full",
    "size": lambda ctx, template: "64,",
    "rotation": lambda ctx, template: "0",
    "quality": lambda ctx, template: "default",
    "accession": lambda ctx, template: ACCESSION,
    "id": _fhir_id,
    "annotation_id": lambda ctx, template: "probe-annotation",
    "layer_id": lambda ctx, template: "probe-layer",
    "study": lambda ctx, template: str(uids.study_uid(ctx.slide_id, ACCESSION)),
    "series": lambda ctx, template: str(uids.series_uid(ctx.slide_id)),
    "instance": lambda ctx, template: str(uids.instance_uid(ctx.slide_id, "level-0")),
    "frames": lambda ctx, template: "1",
}
"""A valid value of each path parameter, by name (the template picks the variant)."""

QUERIES: dict[str, str] = {
    "/api/slides/{slide_id}/thumbnail": "max=64",
    "/launch": f"accession={ACCESSION}",
    "/fhir/Specimen": f"container-id={CONTAINER}",
    "/fhir/ImagingStudy": f"identifier={ACCESSION}",
}
"""The query a route needs to succeed (routes not named need none)."""

MOUNT_SUFFIX = "/index.html"
"""What is asked under a mounted app (the viewer's static files)."""

_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "lis"
BODIES: dict[tuple[str, str], tuple[bytes, str]] = {
    ("POST", "/api/lis/cases"): (read("json_order.json").encode(), "application/json"),
    ("POST", "/api/lis/hl7v2"): (read("orm_o01.hl7").encode(), "application/hl7-v2"),
    ("POST", "/fhir"): (read("fhir_transaction.json").encode(), "application/fhir+json"),
}
"""A valid body (and its media type) for each write that takes one."""

_PARAM = re.compile(r"{([a-zA-Z_]+)(?::[a-z]+)?}")


@dataclass(frozen=True)
class Endpoint:
    """One route template and one method it answers."""

    method: str
    template: str
    mount: bool = False

    @property
    def rule(self) -> Rule:
        return POLICY[self.template]

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(_PARAM.findall(self.template))

    @property
    def writes(self) -> bool:
        return self.method not in ("GET", "HEAD", "OPTIONS")

    def __str__(self) -> str:
        return f"{self.method} {self.template}"


def endpoints() -> list[Endpoint]:
    """Every (method, route template) the app serves, HEAD included, read from the app."""
    app = create_app(Settings(roots=()))
    found: list[Endpoint] = []
    for route in app.router.routes:
        if isinstance(route, Mount):
            found += [Endpoint(m, route.path, mount=True) for m in ("GET", "HEAD")]
        elif isinstance(route, Route):
            found += [Endpoint(m, route.path) for m in sorted(route.methods or ("GET",))]
        else:
            raise AssertionError(f"the probe does not know routes of type {type(route)}")
    return found


def route_templates() -> list[str]:
    """Every route template the app serves, once each."""
    return sorted({e.template for e in endpoints()})


@dataclass
class ProbeContext:
    """A live ``auth=tokens`` app over the samples and one credential per caller."""

    client: TestClient
    app: Any
    slide_id: str
    tokens: dict[str, str]
    cookie: str
    audit_seen: set[str] = field(default_factory=set)

    def path(self, endpoint: Endpoint, **overrides: str) -> str:
        """The concrete path of ``endpoint``: valid parameter values unless overridden."""

        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in overrides:
                return overrides[name]
            return PARAM_VALUES[name](self, endpoint.template)

        path = _PARAM.sub(value, endpoint.template)
        return path + MOUNT_SUFFIX if endpoint.mount else path

    def url(self, endpoint: Endpoint, **overrides: str) -> str:
        query = QUERIES.get(endpoint.template)
        path = self.path(endpoint, **overrides)
        return f"{path}?{query}" if query else path

    def headers(self, caller: str) -> dict[str, str]:
        """The credential headers of ``caller`` (see :data:`CALLERS`)."""
        if caller == "anonymous":
            return {}
        if caller == "forged-jwt":
            return {"Authorization": f"Bearer {FORGED_JWT}"}
        if caller == COOKIE:
            return {"Cookie": self.cookie}
        return {"Authorization": f"Bearer {self.tokens[caller]}"}

    def request(
        self,
        caller: str,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str | bytes] | None = None,
    ) -> Any:
        """Send one request as ``caller``; the client keeps no cookie between requests."""
        all_headers: dict[str, str | bytes] = {**self.headers(caller), **(headers or {})}
        try:
            return self.client.request(method, url, content=content, headers=all_headers)
        finally:
            self.client.cookies.clear()

    def audit_rows(self, request_id: str) -> list[AuditEvent]:
        """The audit rows of one request (written before its answer left: no waiting)."""
        engine = self.app.state.security.engine
        with engine.connect() as conn:
            rows = conn.execute(
                select(audit_events).where(audit_events.c.request_id == request_id)
            ).all()
        return [AuditEvent(**dict(r._mapping)) for r in rows]


@dataclass(frozen=True)
class Subject:
    """Who an audit row should name for a caller."""

    subject: str
    role: str


SUBJECTS: dict[str, Subject] = {
    **{role: Subject(f"token:{role}", role) for role in ROLES},
    COOKIE: Subject("token:admin", "admin"),
}


def open_probe(samples_root: Path, tmp: Path) -> Iterator[ProbeContext]:
    """Start the probed app (SQLite catalog and security tables in ``tmp``); yield its context.

    The LIS fixtures are applied first, so the catalog links the samples to their patient and
    PHI can leak from every route that reads cases.
    """
    from tests.conftest import _security_settings

    settings = _security_settings(samples_root, tmp / "probe.sqlite")
    app = create_app(settings)  # type: ignore[arg-type]
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
        store = app.state.security.tokens
        tokens = {role: store.create(role, role)[1] for role in ROLES}
        tokens["revoked"] = store.create("revoked", "admin")[1]
        store.revoke("revoked")
        tokens["expired"] = store.create("expired", "admin", lifetime=timedelta(seconds=-1))[1]
        admin = {"Authorization": f"Bearer {tokens['admin']}"}
        for (method, template), (body, media_type) in BODIES.items():
            answer = client.request(
                method, template, content=body, headers={**admin, "Content-Type": media_type}
            )
            assert answer.status_code in (200, 201), (template, answer.text[:300])
        login = client.post("/api/session", headers=admin)
        assert login.status_code == 200, login.text
        cookie = login.headers["set-cookie"].split(";", 1)[0]
        client.cookies.clear()
        items = client.get("/api/slides?limit=1000", headers=admin).json()["items"]
        slide_id = next(i["id"] for i in items if i["name"] == SVS)
        yield ProbeContext(client, app, slide_id, tokens, cookie)


def phi_in(response: Any) -> list[str]:
    """The PHI strings found in an answer's body or headers (empty: none)."""
    text = response.content.decode("latin-1").lower()
    head = "\n".join(f"{k}: {v}" for k, v in response.headers.items()).lower()
    found = [s for s in PHI if s.lower() in text or s.lower() in head]
    if not response.headers.get("content-type", "").startswith("image/"):
        raw = response.content.decode("latin-1")
        found += [s for s in TEXT_ONLY_PHI if s in raw]
    return found


def assert_safe(
    probe: ProbeContext, endpoint: Endpoint, caller: str, response: Any, request_id: str
) -> None:
    """What must hold for any request, however hostile: no 5xx, refused callers get nothing
    from a protected route, no PHI to researchers, and every PHI answer audited."""
    where = (caller, str(endpoint), str(response.request.url)[:200], response.status_code)
    assert response.status_code < 500, (*where, response.text[:300])
    if caller in REFUSED and not endpoint.rule.public:
        if response.request.method == "OPTIONS" and 200 <= response.status_code < 300:
            # A CORS preflight is answered without credentials (browsers send none with it);
            # it grants nothing and carries nothing: the GET that follows is still refused.
            assert not response.content, where
        else:
            assert not 200 <= response.status_code < 300, where
    if caller == "researcher":
        assert not phi_in(response), (*where, phi_in(response))
    if endpoint.rule.phi and 200 <= response.status_code < 300 and caller not in REFUSED:
        expected = SUBJECTS[caller]
        answered_id = response.headers.get("x-request-id", request_id)
        rows = [r for r in probe.audit_rows(answered_id) if r.kind == "request"]
        assert len(rows) == 1, (*where, rows)
        row = rows[0]
        assert (row.subject, row.role) == (expected.subject, expected.role), where
        assert row.action == f"{endpoint.method} {endpoint.template}", where
        assert row.status == response.status_code, where
