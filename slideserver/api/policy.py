"""Who may call which route: one table, checked when the app is built.

Every route the app serves must have a row in :data:`POLICY`, keyed by its path template;
:func:`secure_routes` raises :class:`PolicyError` otherwise, so a new route cannot ship
unprotected by accident. Each row names the roles allowed to read (GET/HEAD) and to write (other
methods), whether the answer may hold PHI, and how the request is audited:

- ``request``: one audit row per request, written before the answer leaves; 503 if it cannot be
  written (writes also get an ``attempt`` row before they run).
- ``tiles``: pixel reads, summarized per principal, slide and time window.
- ``none``: not audited (public routes, metrics, the session check).

Rows marked ``cors`` (the image APIs) also answer pages on other origins; their ``OPTIONS``
preflights need no authentication and grant nothing (see :mod:`slideserver.api.cors`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp

from slideserver.api.urls import DEEPZOOM_TILE
from slideserver.security.principals import ADMIN, LIS, PATHOLOGIST, RESEARCHER

if TYPE_CHECKING:
    from slideserver.security.authority import Security

Roles = frozenset[str]
NOBODY: Roles = frozenset()
EVERYONE: Roles = frozenset({ADMIN, PATHOLOGIST, RESEARCHER, LIS})
CLINICAL: Roles = frozenset({ADMIN, PATHOLOGIST})
IMAGES: Roles = frozenset({ADMIN, PATHOLOGIST, RESEARCHER})
CATALOG: Roles = frozenset({ADMIN, PATHOLOGIST, LIS})
WRITERS: Roles = frozenset({ADMIN, LIS})
PATHOLOGISTS: Roles = frozenset({PATHOLOGIST})
"""Who writes and signs reports (issue 14)."""


class PolicyError(RuntimeError):
    """A route has no row in the policy table (or a row names no route)."""


@dataclass(frozen=True)
class Rule:
    """Access to one route template."""

    read: Roles = NOBODY
    """Roles allowed GET and HEAD."""
    write: Roles = NOBODY
    """Roles allowed every other method."""
    public: bool = False
    """No authentication at all (health checks, viewer pages and assets)."""
    phi: bool = False
    """The answer may hold patient or case data (de-identified for researchers)."""
    audit: str = "request"
    """``request``, ``tiles`` or ``none`` (see the module docstring)."""
    demo: bool = False
    """Also open to the anonymous principal of ``auth=open`` (its role notwithstanding)."""
    cors: bool = False
    """Open to pages on other origins (:mod:`slideserver.api.cors`): their ``OPTIONS``
    preflights are answered without authentication, before routing, so they never reach this
    rule's guard; GET and HEAD still need the ``read`` roles."""

    def roles_for(self, method: str) -> Roles:
        """Return the roles allowed ``method``."""
        return self.read if method in ("GET", "HEAD") else self.write


PUBLIC = Rule(public=True, audit="none")
IMAGE_API = Rule(read=IMAGES, audit="tiles", cors=True)
"""Pixels and image descriptions: no PHI, counted as tile reads, usable from other origins."""

POLICY: dict[str, Rule] = {
    # health
    "/healthz": PUBLIC,
    "/readyz": PUBLIC,
    "/metrics": Rule(read=frozenset({ADMIN}), audit="none", demo=True),
    # slides and pixels (researchers get de-identified metadata, no label or macro)
    "/api/slides": Rule(read=EVERYONE, phi=True),
    "/api/slides/{slide_id}": Rule(read=EVERYONE, phi=True),
    "/api/slides/{slide_id}/thumbnail": Rule(read=IMAGES, audit="tiles"),
    "/api/slides/{slide_id}/associated/{name}": Rule(read=IMAGES, phi=True),
    # the image APIs viewers on other origins use (CORS)
    "/dz/{slide_id}.dzi": IMAGE_API,
    DEEPZOOM_TILE: IMAGE_API,
    "/iiif/3/{slide_id}": IMAGE_API,
    "/iiif/3/{slide_id}/info.json": IMAGE_API,
    "/iiif/3/{slide_id}/{region}/{size}/{rotation}/{quality}.{fmt}": IMAGE_API,
    # cases, EMR launch, review queue
    "/api/cases/{accession}": Rule(read=CATALOG, phi=True),
    "/launch": Rule(read=CLINICAL, phi=True),
    "/api/reconcile": Rule(read=CATALOG, phi=True),
    # LIS in, FHIR in and out
    "/api/lis/cases": Rule(write=WRITERS, phi=True),
    "/api/lis/hl7v2": Rule(write=WRITERS, phi=True),
    "/fhir": Rule(write=WRITERS, phi=True),
    "/fhir/metadata": PUBLIC,
    "/fhir/Patient/{id}": Rule(read=CATALOG, phi=True),
    "/fhir/Specimen": Rule(read=CATALOG, phi=True),
    "/fhir/ImagingStudy": Rule(read=CATALOG, phi=True),
    "/fhir/Endpoint/{id}": Rule(read=CATALOG, phi=True),
    # security
    "/api/audit": Rule(read=frozenset({ADMIN}), phi=True),
    "/api/session": Rule(read=EVERYONE, write=EVERYONE, audit="none"),
    # viewer pages and assets (their API calls need a session or a bearer token)
    "/": PUBLIC,
    "/view/{ids:path}": PUBLIC,
    "/case/{accession:path}": PUBLIC,
    "/static/viewer": PUBLIC,
    # --- DICOMweb and DICOM storage (issue 13) ---
    # DICOMweb reads (PS3.18): metadata holds PHI (researchers get de-identified series without
    # label or overview); audited with the case and patient, as rendered images are (a label's
    # is PHI); frames, the viewers' hot path, are summarized like tiles (with the patient). Not
    # open to other origins: CORS rows carry no PHI, and DICOMweb metadata does (serve a
    # DICOMweb viewer such as Slim from the same origin, or through a proxy).
    "/dicomweb/series": Rule(read=IMAGES, phi=True),
    "/dicomweb/instances": Rule(read=IMAGES, phi=True),
    "/dicomweb/studies/{study}/series": Rule(read=IMAGES, phi=True),
    "/dicomweb/studies/{study}/instances": Rule(read=IMAGES, phi=True),
    "/dicomweb/studies/{study}/series/{series}/instances": Rule(read=IMAGES, phi=True),
    "/dicomweb/studies/{study}/metadata": Rule(read=IMAGES, phi=True),
    "/dicomweb/studies/{study}/series/{series}/metadata": Rule(read=IMAGES, phi=True),
    "/dicomweb/studies/{study}/series/{series}/instances/{instance}/metadata": Rule(
        read=IMAGES, phi=True
    ),
    "/dicomweb/studies/{study}/series/{series}": Rule(read=IMAGES, phi=True),
    "/dicomweb/studies/{study}/series/{series}/instances/{instance}": Rule(read=IMAGES, phi=True),
    "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}": Rule(
        read=IMAGES, audit="tiles"
    ),
    "/dicomweb/studies/{study}/series/{series}/instances/{instance}/rendered": Rule(
        read=IMAGES, phi=True
    ),
    "/dicomweb/studies/{study}/series/{series}/instances/{instance}/thumbnail": Rule(
        read=IMAGES, phi=True
    ),
    # STOW-RS (routes/dicomweb_store.py) stores slides with patient data: the systems that send
    # slides (the LIS role: scanners' gateways, PACS, interface engines) and admins, never people
    # who only read; audited with the patient of the instances. GET on the same paths is a QIDO-RS
    # search and a WADO-RS study retrieval: readers, as on every DICOMweb read row.
    "/dicomweb/studies": Rule(read=IMAGES, write=WRITERS, phi=True),
    "/dicomweb/studies/{study}": Rule(read=IMAGES, write=WRITERS, phi=True),
    # --- EHR pull and sign-out reports (issue 14) ---
    "/api/ehr/lookup": Rule(write=CLINICAL, phi=True),
    "/api/cases/{accession}/reports": Rule(read=CLINICAL, write=PATHOLOGISTS, phi=True),
    "/api/reports/{id}": Rule(read=CLINICAL, write=PATHOLOGISTS, phi=True),
    "/api/reports/{id}/sign": Rule(write=PATHOLOGISTS, phi=True),
    "/api/reports/{id}/amend": Rule(write=PATHOLOGISTS, phi=True),
    "/api/reports/{id}/pdf": Rule(read=CLINICAL, phi=True),
    "/api/reports/{id}/deliveries/retry": Rule(write=frozenset({ADMIN}), phi=True),
    # --- annotations (issue 16) ---
    # Roles here; per layer (personal, case, research, granted) in annotations/access.py.
    "/api/slides/{slide_id}/annotations": Rule(read=IMAGES, write=IMAGES, phi=True),
    "/api/slides/{slide_id}/annotations/import": Rule(write=IMAGES, phi=True),
    "/api/slides/{slide_id}/annotations/export": Rule(read=IMAGES, phi=True),
    "/api/slides/{slide_id}/annotations/density": Rule(read=IMAGES, phi=True),
    "/api/slides/{slide_id}/annotation-layers": Rule(read=IMAGES, write=CLINICAL, phi=True),
    "/api/annotations/{annotation_id}": Rule(read=IMAGES, write=IMAGES, phi=True),
    "/api/annotations/{annotation_id}/history": Rule(read=IMAGES, phi=True),
    "/api/annotation-layers/{layer_id}": Rule(write=CLINICAL, phi=True),
    # --- OpenAPI description and API reference (issue 17) ---
    "/openapi.json": PUBLIC,
    "/api/docs": PUBLIC,
}


def route_path(route: BaseRoute) -> str:
    """Return the path template a route is keyed by in :data:`POLICY`."""
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        raise PolicyError(f"cannot secure route {route!r}: it has no path")
    return path


def rule_for(path: str) -> Rule:
    """Return the rule of a route template; raise :class:`PolicyError` when there is none."""
    rule = POLICY.get(path)
    if rule is None:
        raise PolicyError(
            f"route {path!r} has no row in slideserver/api/policy.py POLICY; every route "
            "must say which roles may use it"
        )
    return rule


def secure_routes(routes: list[BaseRoute], security: Security) -> list[BaseRoute]:
    """Wrap every route in its policy's guard; fail when any route lacks a rule."""
    from slideserver.api.auth import RouteGuard

    missing = [route_path(r) for r in routes if route_path(r) not in POLICY]
    if missing:
        rule_for(missing[0])
    for route in routes:
        rule = POLICY[route_path(route)]
        if isinstance(route, Route | Mount):
            app: ASGIApp = route.app
            route.app = RouteGuard(app, rule, route_path(route), security)
        else:
            raise PolicyError(f"cannot secure route {route_path(route)!r} of type {type(route)}")
    return routes
