"""The OpenAPI 3.1 description of the API, built from the routes' own declarations.

Route modules import :func:`operation` and friends from here; the app serves the document at
``/openapi.json`` and a reference page at ``/api/docs`` (:mod:`slideserver.api.routes.openapi`).
"""

from slideserver.api.openapi.document import build_document, endpoints, undescribed
from slideserver.api.openapi.operations import (
    INTEGER,
    NOT_MODIFIED,
    STRING,
    Body,
    Operation,
    Param,
    Reply,
    Schema,
    describe,
    image_reply,
    json_reply,
    operation,
    operation_of,
    ref,
)

__all__ = [
    "INTEGER",
    "NOT_MODIFIED",
    "STRING",
    "Body",
    "Operation",
    "Param",
    "Reply",
    "Schema",
    "build_document",
    "describe",
    "endpoints",
    "image_reply",
    "json_reply",
    "operation",
    "operation_of",
    "ref",
    "undescribed",
]
