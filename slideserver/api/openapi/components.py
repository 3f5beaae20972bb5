"""The shared parts of the document: the error body, security schemes, and schemas used by
several route modules (a schema used by one module is declared in that module)."""

from __future__ import annotations

from typing import Any

from slideserver.api.errors import ERROR_STATUS, HTTP_CODES, UNLISTED_ERROR_STATUS
from slideserver.errors import SlideServerError
from slideserver.reports import model as report_model
from slideserver.reports import outbox as report_outbox
from slideserver.reports.store import MAX_IDENTIFIER as REPORT_MAX_IDENTIFIER
from slideserver.security.session import COOKIE_NAME
from slideserver.services.reports import MAX_REASON as REPORT_MAX_REASON

NULLABLE_STRING = {"type": ["string", "null"]}
NULLABLE_NUMBER = {"type": ["number", "null"]}
NULLABLE_INTEGER = {"type": ["integer", "null"]}


def _status_of(cls: type[SlideServerError]) -> int:
    """The status :data:`ERROR_STATUS` gives an error class (by ancestry, as the API does)."""
    for ancestor in cls.__mro__:
        status = ERROR_STATUS.get(ancestor)
        if status is not None:
            return status
    return UNLISTED_ERROR_STATUS


def _error_classes(root: type[SlideServerError]) -> list[type[SlideServerError]]:
    found = [root]
    for sub in root.__subclasses__():
        found += _error_classes(sub)
    return found


def error_codes() -> dict[int, list[str]]:
    """The ``error`` codes each status can carry: the HTTP ones and every domain error's."""
    codes: dict[int, set[str]] = {500: {"internal_error"}}
    for status, code in HTTP_CODES.items():
        codes.setdefault(status, set()).add(code)
    for cls in _error_classes(SlideServerError):
        codes.setdefault(_status_of(cls), set()).add(cls.code)
    return {status: sorted(found) for status, found in sorted(codes.items())}


def error_schema() -> dict[str, Any]:
    """``{"error": CODE, "detail": MSG}``: every error answer of the JSON routes."""
    listed = "; ".join(f"{s}: {', '.join(c)}" for s, c in error_codes().items())
    return {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {
            "error": {
                "type": "string",
                "description": "A stable machine-readable code. The domain and HTTP codes by "
                f"status (some routes add their own, such as invalid_order): {listed}.",
            },
            "detail": {
                "type": "string",
                "description": "A human-readable message; it never names a path, and names no "
                "patient or case to callers who may not see PHI.",
            },
        },
    }


SECURITY_SCHEMES: dict[str, Any] = {
    "bearerToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token (`slideserver token create --role ROLE`) or, when OIDC is "
        "configured, an identity provider's JWT.",
    },
    "sessionCookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": COOKIE_NAME,
        "description": "The viewer's session, opened by `POST /api/session` with a bearer "
        "token. Requests that change something with this cookie also need the header "
        "`X-Requested-With`.",
    },
}
"""How callers authenticate; each protected operation accepts either."""

SLIDE_LINKS = {
    "type": "object",
    "properties": {k: {"type": "string"} for k in ("dzi", "thumbnail", "iiif", "viewer")},
}

SLIDE_SUMMARY: dict[str, Any] = {
    "type": "object",
    "description": "One slide as the caller may see it: researchers get a de-identified "
    "subset (no name, path, case or scan date).",
    "required": ["id"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "path": {"type": "string"},
        "format": NULLABLE_STRING,
        "vendor": NULLABLE_STRING,
        "width": NULLABLE_INTEGER,
        "height": NULLABLE_INTEGER,
        "mpp_x": NULLABLE_NUMBER,
        "mpp_y": NULLABLE_NUMBER,
        "objective_power": NULLABLE_NUMBER,
        "status": {"type": "string"},
        "error": NULLABLE_STRING,
        "links": SLIDE_LINKS,
        "case": {"type": ["object", "null"], "description": "The linked case (PHI)"},
    },
}

SLIDE_DETAIL: dict[str, Any] = {
    "allOf": [{"$ref": "#/components/schemas/SlideSummary"}],
    "type": "object",
    "properties": {
        "levels": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "width": {"type": "integer"},
                    "height": {"type": "integer"},
                    "downsample": {"type": "number"},
                    "tile_width": NULLABLE_INTEGER,
                    "tile_height": NULLABLE_INTEGER,
                },
            },
        },
        "associated": {"type": "array", "items": {"type": "string"}},
        "properties": {"type": "object", "additionalProperties": {"type": "string"}},
        "scan_date": NULLABLE_STRING,
    },
}

FHIR_RESOURCE: dict[str, Any] = {
    "type": "object",
    "required": ["resourceType"],
    "properties": {"resourceType": {"type": "string"}},
    "description": "A FHIR R4 resource (https://hl7.org/fhir/R4/)",
}

OPERATION_OUTCOME: dict[str, Any] = {
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"const": "OperationOutcome"},
        "issue": {"type": "array", "items": {"type": "object"}},
    },
}


GEOJSON_GEOMETRY: dict[str, Any] = {
    "type": "object",
    "description": "A GeoJSON geometry (RFC 7946) in level-0 pixel coordinates: Point, "
    "MultiPoint, LineString, Polygon or MultiPolygon.",
    "required": ["type", "coordinates"],
    "properties": {
        "type": {"enum": ["Point", "MultiPoint", "LineString", "Polygon", "MultiPolygon"]},
        "coordinates": {"type": "array"},
    },
}

GEOJSON_FEATURE: dict[str, Any] = {
    "type": "object",
    "description": "One annotation as a GeoJSON Feature. Written: ``id`` (optional, makes a "
    "retry idempotent), ``properties.layer`` (default: the caller's personal layer), "
    "``class``, ``label``, ``note``, ``colour``, ``shape`` (rectangle, ellipse) and any other "
    "properties, kept as they are. Read: the server adds ``author``, ``version``, "
    "``measurements`` (null with ``measurements_unavailable`` when the slide has no MPP), "
    "``kind``, ``created`` and ``updated``.",
    "required": ["type", "geometry"],
    "properties": {
        "type": {"const": "Feature"},
        "id": {"type": ["string", "null"]},
        "geometry": {"$ref": "#/components/schemas/GeoJsonGeometry"},
        "properties": {
            "type": ["object", "null"],
            "properties": {
                "id": {"type": "string"},
                "layer": NULLABLE_STRING,
                "class": NULLABLE_STRING,
                "label": NULLABLE_STRING,
                "note": NULLABLE_STRING,
                "colour": NULLABLE_STRING,
                "author": {"type": "string"},
                "version": {"type": "integer"},
                "kind": {"type": "string"},
                "measurements": {
                    "type": ["object", "null"],
                    "additionalProperties": {"type": "number"},
                },
                "created": NULLABLE_STRING,
                "updated": NULLABLE_STRING,
            },
        },
    },
}

GEOJSON_FEATURE_COLLECTION: dict[str, Any] = {
    "type": "object",
    "description": "A GeoJSON FeatureCollection of annotations; a page of a listing adds "
    "``next`` (the next page's URL, null on the last) and ``links``.",
    "required": ["type", "features"],
    "properties": {
        "type": {"const": "FeatureCollection"},
        "features": {"type": "array", "items": {"$ref": "#/components/schemas/GeoJsonFeature"}},
        "next": NULLABLE_STRING,
        "links": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "rel": {"type": "string"},
                    "href": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
        "measurements_unavailable": {"type": "string"},
    },
}

DICOM_JSON_DATASETS: dict[str, Any] = {
    "type": "array",
    "description": "DICOM JSON Model (PS3.18 F.2): one object per data set, keyed by tag "
    "(eight hex digits), each attribute ``{vr, Value | BulkDataURI | InlineBinary}``.",
    "items": {"$ref": "#/components/schemas/DicomJsonDataset"},
}

DICOM_JSON_DATASET: dict[str, Any] = {
    "type": "object",
    "description": "One data set in the DICOM JSON Model (PS3.18 F.2).",
    "propertyNames": {"pattern": "^[0-9A-Fa-f]{8}$"},
    "additionalProperties": {
        "type": "object",
        "required": ["vr"],
        "properties": {
            "vr": {"type": "string", "pattern": "^[A-Z]{2}$"},
            "Value": {"type": "array"},
            "BulkDataURI": {"type": "string"},
            "InlineBinary": {"type": "string"},
        },
    },
}


# --- Sign-out reports (issue 14): the report JSON of api/routes/reports.py ---
# The limits are the parser's own (reports/model.py), so the schemas cannot drift from it.

REPORT_REGION: dict[str, Any] = {
    "type": "object",
    "description": "A rectangle of the slide in level-0 pixels.",
    "required": ["x", "y", "width", "height"],
    "properties": {
        "x": {"type": "integer", "minimum": 0},
        "y": {"type": "integer", "minimum": 0},
        "width": {"type": "integer", "minimum": 1, "maximum": report_model.MAX_REGION},
        "height": {"type": "integer", "minimum": 1, "maximum": report_model.MAX_REGION},
    },
}

REPORT_FIGURE: dict[str, Any] = {
    "type": "object",
    "description": "A picture of a region of one of the case's slides, printed in the PDF.",
    "required": ["slide_id", "region"],
    "properties": {
        "slide_id": {"type": "string", "minLength": 1, "maxLength": report_model.MAX_SHORT},
        "region": {"$ref": "#/components/schemas/ReportRegion"},
        "caption": {"type": ["string", "null"], "maxLength": report_model.MAX_SHORT},
        "layers": {
            "type": ["array", "null"],
            "description": "The annotation layers drawn on the figure (the viewer sends those "
            "shown when it was captured); left out: the slide's case layers and the author's own; "
            "empty: none. Only layers the report's author may read are drawn.",
            "maxItems": report_model.MAX_FIGURE_LAYERS,
            "items": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"},
        },
    },
}

_REPORT_TEXT = {"type": ["string", "null"], "maxLength": report_model.MAX_TEXT}

REPORT_FIELDS: dict[str, Any] = {
    "type": "object",
    "description": "What the pathologist writes. Fields left out keep their value (empty in a "
    "new report); null empties a text and keeps the synoptic fields or figures. Texts hold no "
    "NUL character; figures must show slides of the report's case.",
    "properties": {
        "diagnosis": _REPORT_TEXT,
        "microscopic": _REPORT_TEXT,
        "synoptic": {
            "type": ["object", "null"],
            "description": "Synoptic fields (name: value), in the order given.",
            "maxProperties": report_model.MAX_SYNOPTIC,
            "propertyNames": {"minLength": 1, "maxLength": report_model.MAX_SHORT},
            "additionalProperties": {"type": "string", "maxLength": report_model.MAX_SHORT * 10},
        },
        "figures": {
            "type": ["array", "null"],
            "maxItems": report_model.MAX_FIGURES,
            "items": {"$ref": "#/components/schemas/ReportFigure"},
        },
    },
}

REPORT_NEW: dict[str, Any] = {
    "allOf": [{"$ref": "#/components/schemas/ReportFields"}],
    "type": "object",
    "properties": {
        "identifier": {
            "type": "string",
            "minLength": 1,
            "maxLength": REPORT_MAX_IDENTIFIER,
            "description": "The client's ID of this creation, when it sends no Idempotency-Key: "
            "a repeat answers the report the first one made.",
        },
    },
}

REPORT_AMENDMENT: dict[str, Any] = {
    "allOf": [{"$ref": "#/components/schemas/ReportFields"}],
    "type": "object",
    "required": ["reason"],
    "properties": {
        "status": {"enum": list(report_model.AMENDMENTS), "default": report_model.AMENDED},
        "reason": {
            "type": "string",
            "minLength": 1,
            "maxLength": REPORT_MAX_REASON,
            "description": "Why the signed report is amended (not blank).",
        },
    },
}

REPORT: dict[str, Any] = {
    "type": "object",
    "description": "One version of a report (the newest unless asked otherwise).",
    "required": [
        "id",
        "accession",
        "version",
        "status",
        "revision",
        "diagnosis",
        "microscopic",
        "synoptic",
        "figures",
        "author",
        "created_at",
        "signer",
        "signed_at",
        "reason",
        "deliveries",
        "versions",
    ],
    "properties": {
        "id": {"type": "string"},
        "accession": {"type": "string", "description": "The case's accession number (PHI)"},
        "version": {"type": "integer", "minimum": 1},
        "status": {
            "enum": [report_model.DRAFT, report_model.FINAL, *report_model.AMENDMENTS],
            "description": "draft (editable), final (signed), or a signed amendment.",
        },
        "revision": {
            "type": "integer",
            "minimum": 1,
            "description": "Edits of the draft; a signed version keeps the one it was signed at.",
        },
        "diagnosis": {"type": "string"},
        "microscopic": {"type": "string"},
        "synoptic": {"type": "object", "additionalProperties": {"type": "string"}},
        "figures": {"type": "array", "items": {"$ref": "#/components/schemas/ReportFigure"}},
        "author": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
        "signer": NULLABLE_STRING,
        "signed_at": {"type": ["string", "null"], "format": "date-time"},
        "reason": {"type": "string", "description": "Why an amendment was made (else empty)."},
        "deliveries": {
            "type": "array",
            "description": "Where this version is being sent (signed versions only).",
            "items": {
                "type": "object",
                "required": ["target", "state", "detail", "attempts"],
                "properties": {
                    "target": {"type": "string"},
                    "state": {
                        "enum": [
                            report_outbox.PENDING,
                            report_outbox.DELIVERED,
                            report_outbox.FAILING,
                            report_outbox.GIVEN_UP,
                        ]
                    },
                    "detail": {"type": "string"},
                    "attempts": {"type": "integer", "minimum": 0},
                },
            },
        },
        "versions": {
            "type": "array",
            "description": "Every version of the report, oldest first.",
            "items": {
                "type": "object",
                "required": ["version", "status"],
                "properties": {"version": {"type": "integer"}, "status": {"type": "string"}},
            },
        },
    },
}

REPORT_LIST: dict[str, Any] = {
    "type": "object",
    "required": ["accession", "items"],
    "properties": {
        "accession": {"type": "string"},
        "items": {
            "type": "array",
            "description": "The newest version of each report of the case, oldest report first.",
            "items": {"$ref": "#/components/schemas/Report"},
        },
    },
}

REPORT_SCHEMAS: dict[str, Any] = {
    "Report": REPORT,
    "ReportList": REPORT_LIST,
    "ReportFields": REPORT_FIELDS,
    "ReportNew": REPORT_NEW,
    "ReportAmendment": REPORT_AMENDMENT,
    "ReportFigure": REPORT_FIGURE,
    "ReportRegion": REPORT_REGION,
}
"""The sign-out report schemas, merged into ``components/schemas``."""

# --- end of sign-out reports ---


def shared_schemas() -> dict[str, Any]:
    """``components/schemas`` (built when the document is: the error codes of every module)."""
    return {
        "Error": error_schema(),
        "SlideSummary": SLIDE_SUMMARY,
        "SlideDetail": SLIDE_DETAIL,
        "FhirResource": FHIR_RESOURCE,
        "OperationOutcome": OPERATION_OUTCOME,
        **REPORT_SCHEMAS,
        "GeoJsonGeometry": GEOJSON_GEOMETRY,
        "GeoJsonFeature": GEOJSON_FEATURE,
        "GeoJsonFeatureCollection": GEOJSON_FEATURE_COLLECTION,
        "DicomJsonDataset": DICOM_JSON_DATASET,
        "DicomJsonDatasets": DICOM_JSON_DATASETS,
    }
