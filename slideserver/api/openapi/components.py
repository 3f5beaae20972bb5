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


def shared_schemas() -> dict[str, Any]:
    """``components/schemas`` (built when the document is: the error codes of every module)."""
    return {
        "Error": error_schema(),
        "SlideSummary": SLIDE_SUMMARY,
        "SlideDetail": SLIDE_DETAIL,
        "FhirResource": FHIR_RESOURCE,
        "OperationOutcome": OPERATION_OUTCOME,
    }
