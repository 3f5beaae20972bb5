"""What the EHR pull needs of a FHIR server, without the HTTP: the layers above (services)
are handed a :class:`FhirSource` and never import the HTTP client (``client.py``).

Every resource a source returns has been validated with fhir.resources R4B
(:func:`parse_resource`); anything else the EHR answers is an :class:`EhrUnavailable` whose
detail names no patient data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError

from slideserver.errors import BackendUnavailable

Params = Sequence[tuple[str, str]]


class EhrUnavailable(BackendUnavailable):
    """The EHR could not be asked or answered something that is not FHIR (no PHI in detail)."""

    code = "ehr_unavailable"


class FhirSource(Protocol):
    """A FHIR R4 server to read from (blocking calls; the pull runs them in worker threads)."""

    base_url: str

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` (``ServiceRequest``, ``Patient/1``) on this server."""

    def search(self, url: str, params: Params | None = None) -> Bundle:
        """One page of a search: a validated ``searchset`` Bundle."""

    def read(self, reference: str) -> Resource | None:
        """Read ``Type/id``; ``None`` when the server has no such resource."""

    def close(self) -> None:
        """Let go of connections."""


def parse_resource(data: object, expected: str | None = None) -> Resource:
    """Validate one decoded resource with fhir.resources R4B; EhrUnavailable when it is not."""
    if not isinstance(data, Mapping) or not isinstance(data.get("resourceType"), str):
        raise EhrUnavailable("the EHR answered something that is not a FHIR resource")
    rtype = str(data["resourceType"])
    if expected is not None and rtype != expected:
        raise EhrUnavailable(f"the EHR answered a {rtype[:40]!r}, not a {expected}")
    try:
        model = get_fhir_model_class(rtype)
        resource = model.model_validate(data)
    except (ValidationError, ValueError, KeyError, TypeError, AttributeError):
        raise EhrUnavailable(f"the EHR answered an invalid {rtype[:40]!r}") from None
    if not isinstance(resource, Resource):
        raise EhrUnavailable(f"the EHR answered {rtype[:40]!r}, which is not a resource")
    return resource


def next_link(bundle: Bundle) -> str | None:
    """The URL of the next page, if the server gave one."""
    return next((str(link.url) for link in bundle.link or [] if link.relation == "next"), None)


__all__ = ["EhrUnavailable", "FhirSource", "Params", "next_link", "parse_resource"]
