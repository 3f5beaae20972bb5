"""The shared parts of the document: the error body, security schemes, and schemas used by
several route modules (a schema used by one module is declared in that module)."""

from __future__ import annotations

from typing import Any

from slideserver.api.errors import ERROR_STATUS, HTTP_CODES, UNLISTED_ERROR_STATUS
from slideserver.errors import SlideServerError
from slideserver.security.session import COOKIE_NAME

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


def shared_schemas() -> dict[str, Any]:
    """``components/schemas`` (built when the document is: the error codes of every module)."""
    return {
        "Error": error_schema(),
        "SlideSummary": SLIDE_SUMMARY,
        "SlideDetail": SLIDE_DETAIL,
        "FhirResource": FHIR_RESOURCE,
        "OperationOutcome": OPERATION_OUTCOME,
        "GeoJsonGeometry": GEOJSON_GEOMETRY,
        "GeoJsonFeature": GEOJSON_FEATURE,
        "GeoJsonFeatureCollection": GEOJSON_FEATURE_COLLECTION,
        "DicomJsonDataset": DICOM_JSON_DATASET,
        "DicomJsonDatasets": DICOM_JSON_DATASETS,
    }
