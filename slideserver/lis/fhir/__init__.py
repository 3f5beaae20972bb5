"""FHIR R4 in and out, with the R4-compatible models of ``fhir.resources.R4B``.

- :mod:`.ids`: code systems, resource IDs, DICOM UIDs, Endpoint IDs and shared references.
- :mod:`.inbound`: transaction Bundles -> orders (patients, specimens), transaction-responses.
- :mod:`.outbound`: Patient, Specimen, ImagingStudy and Endpoint out, searchsets.
- :mod:`.outcome`: :class:`FhirError` and its OperationOutcome.
- :mod:`.capability`: the CapabilityStatement of ``GET /fhir/metadata``.

The names below are re-exported so that ``from slideserver.lis import fhir`` reads as one API.
"""

from slideserver.lis.fhir.capability import FHIR_VERSION, SUPPORTED, capability_statement
from slideserver.lis.fhir.ids import (
    DCM,
    V2_0203,
    dicom_uid,
    endpoint_id,
    fhir_id,
    parse_endpoint_id,
    value_of_fhir_id,
)
from slideserver.lis.fhir.inbound import Transaction, parse_transaction, transaction_response
from slideserver.lis.fhir.outbound import (
    MEDIA_TYPE,
    case_endpoint,
    endpoints,
    imaging_study,
    imaging_study_searchset,
    patient_resource,
    searchset,
    slide_endpoints,
    specimen_resources,
    specimens_with_container,
    to_json,
)
from slideserver.lis.fhir.outcome import FhirError, outcome

__all__ = [
    "DCM",
    "FHIR_VERSION",
    "MEDIA_TYPE",
    "SUPPORTED",
    "V2_0203",
    "FhirError",
    "Transaction",
    "capability_statement",
    "case_endpoint",
    "dicom_uid",
    "endpoint_id",
    "endpoints",
    "fhir_id",
    "imaging_study",
    "imaging_study_searchset",
    "outcome",
    "parse_endpoint_id",
    "parse_transaction",
    "patient_resource",
    "searchset",
    "slide_endpoints",
    "specimen_resources",
    "specimens_with_container",
    "to_json",
    "transaction_response",
    "value_of_fhir_id",
]
