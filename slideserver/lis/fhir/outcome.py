"""FHIR errors: :class:`FhirError` and the OperationOutcome that answers it."""

from __future__ import annotations

from fhir.resources.R4B.operationoutcome import OperationOutcome, OperationOutcomeIssue


class FhirError(Exception):
    """A request we answer with an OperationOutcome; ``issue`` is the FHIR issue type."""

    def __init__(
        self, status: int, issue: str, diagnostics: str, expression: str | None = None
    ) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.issue = issue
        self.diagnostics = diagnostics
        self.expression = expression


def outcome(
    issue: str, diagnostics: str, *, severity: str = "error", expression: str | None = None
) -> OperationOutcome:
    """Return an OperationOutcome with one issue."""
    return OperationOutcome(
        issue=[
            OperationOutcomeIssue(
                severity=severity,
                code=issue,
                diagnostics=diagnostics,
                expression=[expression] if expression else None,
            )
        ]
    )


__all__ = ["FhirError", "outcome"]
