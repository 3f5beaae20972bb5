"""Pulling orders and patients from the EHR (a FHIR R4 client)."""
