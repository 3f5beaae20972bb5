"""Which delivery targets the settings configure: the EHR (FHIR) and the LIS (HL7 v2, MLLP)."""

from __future__ import annotations

from slideserver.reports.fhir_delivery import FhirTarget
from slideserver.reports.oru import OruTarget
from slideserver.reports.outbox import Target
from slideserver.settings import Settings


def delivery_targets(settings: Settings) -> list[Target]:
    """The targets signed reports go to; ValueError when a setting is malformed."""
    targets: list[Target] = []
    if settings.reports_fhir_url:
        targets.append(
            FhirTarget(
                settings.reports_fhir_url,
                token=settings.reports_fhir_token,
                system=settings.reports_identifier_system,
                document_reference=settings.reports_document_reference,
                timeout=settings.reports_send_timeout,
            )
        )
    if settings.lis_mllp_url:
        targets.append(OruTarget(settings.lis_mllp_url))
    return targets


__all__ = ["delivery_targets"]
