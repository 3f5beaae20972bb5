"""The CapabilityStatement of ``GET /fhir/metadata``, built from the table the routes serve."""

from __future__ import annotations

import datetime as dt

from fhir.resources.R4B.capabilitystatement import (
    CapabilityStatement,
    CapabilityStatementImplementation,
    CapabilityStatementRest,
    CapabilityStatementRestInteraction,
    CapabilityStatementRestResource,
    CapabilityStatementRestResourceInteraction,
    CapabilityStatementRestResourceSearchParam,
    CapabilityStatementRestSecurity,
    CapabilityStatementSoftware,
)

FHIR_VERSION = "4.0.1"


SUPPORTED: tuple[tuple[str, tuple[str, ...], tuple[tuple[str, str, str], ...]], ...] = (
    ("Patient", ("read",), ()),
    ("Specimen", ("search-type",), (("container-id", "token", "the block or slide label"),)),
    (
        "ImagingStudy",
        ("search-type",),
        (
            ("identifier", "token", "the case's accession number"),
            ("patient", "reference", "the patient's medical record number"),
        ),
    ),
    ("Endpoint", ("read",), ()),
)
"""What the FHIR routes serve: resource type, interactions, search parameters (name, type, doc)."""


def capability_statement(base: str, software_version: str) -> CapabilityStatement:
    """Return the server's CapabilityStatement (``GET /fhir/metadata``), built from SUPPORTED."""
    resources = [
        CapabilityStatementRestResource(
            type=kind,
            interaction=[
                CapabilityStatementRestResourceInteraction(code=code) for code in interactions
            ],
            searchParam=[
                CapabilityStatementRestResourceSearchParam(name=name, type=type_, documentation=doc)
                for name, type_, doc in params
            ]
            or None,
        )
        for kind, interactions, params in SUPPORTED
    ]
    return CapabilityStatement(
        status="active",
        date=dt.datetime.now(dt.UTC).replace(microsecond=0),
        kind="instance",
        fhirVersion=FHIR_VERSION,
        format=["json"],
        software=CapabilityStatementSoftware(name="slideserver", version=software_version),
        implementation=CapabilityStatementImplementation(
            description="slideserver: whole-slide images of pathology cases", url=f"{base}/fhir"
        ),
        rest=[
            CapabilityStatementRest(
                mode="server",
                security=CapabilityStatementRestSecurity(
                    description=(
                        "Authorization: Bearer with an API token (`slideserver token create`) or "
                        "an OIDC access token; the lis role writes, pathologists read."
                    )
                ),
                resource=resources,
                interaction=[CapabilityStatementRestInteraction(code="transaction")],
            )
        ],
    )


__all__ = ["FHIR_VERSION", "SUPPORTED", "capability_statement"]
