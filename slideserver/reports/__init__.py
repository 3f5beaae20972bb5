"""Sign-out reports: drafts, signed and amended versions, the PDF.

And their durable delivery to the EHR (FHIR) and the LIS (HL7 v2 ORU).
"""
