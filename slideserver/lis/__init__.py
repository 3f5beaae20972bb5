"""LIS/EMR interfaces: orders in (JSON, FHIR R4, HL7 v2), cases and imaging studies out."""
