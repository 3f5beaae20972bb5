"""What a route says about itself: typed records the OpenAPI document is built from.

Each route module describes its operations next to its endpoints, with :func:`operation` as a
decorator (or :func:`describe` for an ASGI app that is not a function, such as a mount)::

    @operation(
        "Read one slide's metadata",
        tag="slides",
        replies={200: json_reply("The slide", ref("SlideDetail"))},
        errors=(404, 410, 422),
    )
    async def get_slide(request: Request) -> Response: ...

Path parameters come from the route's template (strings unless a :class:`Param` of that name
says more), the security requirements and ``x-roles`` from the route's row in
:data:`slideserver.api.policy.POLICY`, and the description from the endpoint's docstring, so a
description only states what the code cannot: the query parameters, the body and the answers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

Schema = Mapping[str, Any]
"""A JSON Schema (draft 2020-12, as OpenAPI 3.1 uses it)."""

OPERATION_ATTRIBUTE = "__openapi_operation__"
"""The attribute :func:`describe` sets on an endpoint or ASGI app."""

STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}


def ref(name: str) -> Schema:
    """A reference to a shared schema in ``components/schemas``."""
    return {"$ref": f"#/components/schemas/{name}"}


@dataclass(frozen=True)
class Param:
    """A query, header or path parameter (path parameters are found in the template; a
    ``Param`` of the same name only refines their schema or description)."""

    name: str
    description: str = ""
    schema: Schema = field(default_factory=lambda: STRING)
    where: Literal["query", "path", "header", "cookie"] = "query"
    required: bool = False


@dataclass(frozen=True)
class Body:
    """A request body: one schema per accepted media type."""

    content: Mapping[str, Schema]
    description: str = ""
    required: bool = True


@dataclass(frozen=True)
class Reply:
    """One answer: a description, one schema per media type (none: no body), headers."""

    description: str
    content: Mapping[str, Schema] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    """Header name -> what it carries."""


@dataclass(frozen=True)
class Operation:
    """Everything the document says about one endpoint, for every method its route allows."""

    summary: str
    tag: str
    params: tuple[Param, ...] = ()
    body: Body | None = None
    replies: Mapping[int, Reply] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    """Statuses answered with the shared error body ``{"error", "detail"}``."""
    error_reply: Reply | None = None
    """The answer to every other status, when it is not the shared error body (FHIR routes
    answer OperationOutcomes, the HL7 route ACKs)."""
    description: str | None = None
    """Defaults to the endpoint's docstring."""


def json_reply(description: str, schema: Schema, media_type: str = "application/json") -> Reply:
    """A JSON answer."""
    return Reply(description, {media_type: schema})


IMAGE_HEADERS: Mapping[str, str] = {
    "ETag": "The image's validator; send it back in If-None-Match for a 304",
    "Cache-Control": "How long the image may be kept",
}


def image_reply(description: str, *media_types: str) -> Reply:
    """An image answer, in one of ``media_types`` (binary)."""
    binary: Schema = {"type": "string", "format": "binary"}
    return Reply(description, {m: binary for m in media_types}, IMAGE_HEADERS)


NOT_MODIFIED = Reply("Not modified: the image matches If-None-Match", headers=IMAGE_HEADERS)

Described = TypeVar("Described")


def describe(target: Described, op: Operation) -> Described:
    """Attach ``op`` to an endpoint function or ASGI app; return it unchanged."""
    setattr(target, OPERATION_ATTRIBUTE, op)
    return target


def operation(
    summary: str,
    *,
    tag: str,
    params: tuple[Param, ...] = (),
    body: Body | None = None,
    replies: Mapping[int, Reply] | None = None,
    errors: tuple[int, ...] = (),
    error_reply: Reply | None = None,
    description: str | None = None,
) -> Callable[[Described], Described]:
    """Decorate an endpoint with its :class:`Operation`."""
    op = Operation(summary, tag, params, body, replies or {}, errors, error_reply, description)
    return lambda target: describe(target, op)


def operation_of(target: object) -> Operation | None:
    """The :class:`Operation` attached to an endpoint or app, if any."""
    op = getattr(target, OPERATION_ATTRIBUTE, None)
    return op if isinstance(op, Operation) else None
