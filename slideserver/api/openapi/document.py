"""Build the OpenAPI 3.1 document from the app's routes, their operations and the policy table.

Nothing here is written by hand per route: paths and path parameters come from the route
templates, methods from the routes, security and ``x-roles`` from
:data:`slideserver.api.policy.POLICY`, the rest from the :class:`Operation` each endpoint carries
(:mod:`slideserver.api.openapi.operations`). A route without one still appears, marked
``x-undescribed`` (the tests fail on it), so the document never fails to build.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from starlette.routing import BaseRoute, Mount, Route

from slideserver import __version__
from slideserver.api.openapi.components import SECURITY_SCHEMES, error_codes, shared_schemas
from slideserver.api.openapi.operations import STRING, Operation, Param, Reply, operation_of
from slideserver.api.policy import POLICY, Rule

PATH_PARAM = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?}")
"""A Starlette path parameter, with its optional converter (``{ids:path}``)."""
MOUNT_PARAM = "path"
"""The parameter standing for everything under a mount: ``/static/viewer/{path}``."""
MOUNT_METHODS = ("GET", "HEAD")
UNDESCRIBED = "x-undescribed"
PROTECTED: list[dict[str, list[str]]] = [{"bearerToken": []}, {"sessionCookie": []}]
"""Either credential; public operations have ``security: []``."""

DESCRIPTION = """\
A whole-slide image server: slides and their metadata, Deep Zoom and IIIF Image API 3.0 pixels,
cases from the LIS (JSON, HL7 v2, FHIR R4), the audit trail.

Every protected operation takes a bearer token (API token or OIDC JWT) or the viewer's session
cookie; `x-roles` names the roles allowed, `x-phi` whether the answer may hold patient data
(de-identified for researchers), `x-audit` how the request is audited. Errors are
`{"error": CODE, "detail": MESSAGE}` (schema `Error`) unless an operation says otherwise."""


@dataclass(frozen=True)
class Endpoint:
    """One route as the document sees it."""

    path: str
    """The OpenAPI path: the template without converters (a mount gets ``/{path}``)."""
    policy_key: str
    """The route's template, its key in :data:`POLICY`."""
    methods: tuple[str, ...]
    target: object
    """The endpoint function or ASGI app that may carry an :class:`Operation`."""


def _unwrapped(app: object) -> object:
    """The app under the guards and wrappers that keep it in ``.app``."""
    while operation_of(app) is None and hasattr(app, "app"):
        app = app.app
    return app


def endpoints(routes: Iterable[BaseRoute]) -> list[Endpoint]:
    """Every route the document must describe, in the routes' order."""
    found: list[Endpoint] = []
    for route in routes:
        if isinstance(route, Mount):
            path = PATH_PARAM.sub(r"{\1}", route.path) + "/{" + MOUNT_PARAM + "}"
            found.append(Endpoint(path, route.path, MOUNT_METHODS, _unwrapped(route.app)))
        elif isinstance(route, Route):
            methods = tuple(sorted(route.methods or {"GET"}))
            path = PATH_PARAM.sub(r"{\1}", route.path)
            found.append(Endpoint(path, route.path, methods, route.endpoint))
    return found


def undescribed(routes: Iterable[BaseRoute]) -> list[str]:
    """The routes whose endpoint carries no :class:`Operation` (``METHODS template``)."""
    return [
        f"{','.join(e.methods)} {e.policy_key}"
        for e in endpoints(routes)
        if operation_of(e.target) is None
    ]


def _fallback(target: object) -> Operation:
    doc = inspect.getdoc(target) or ""
    name = getattr(target, "__name__", type(target).__name__)
    return Operation(doc.split("\n", 1)[0] or name, tag="undescribed")


def _error_name(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.replace(" ", "").replace("-", "")
    except ValueError:
        return f"Status{status}"


def _error_response(status: int, codes: list[str]) -> dict[str, Any]:
    phrase = HTTPStatus(status).phrase
    return {
        "description": f"{phrase} (error: {', '.join(codes)})" if codes else phrase,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _reply(reply: Reply, head: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"description": reply.description}
    if reply.headers:
        out["headers"] = {
            name: {"description": text, "schema": STRING} for name, text in reply.headers.items()
        }
    if reply.content and not head:
        out["content"] = {media: {"schema": dict(s)} for media, s in reply.content.items()}
    return out


def _parameter(param: Param, where: str, required: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": param.name, "in": where, "schema": dict(param.schema)}
    if param.description:
        out["description"] = param.description
    if required:
        out["required"] = True
    return out


def _parameters(endpoint: Endpoint, op: Operation) -> list[dict[str, Any]]:
    given = {p.name: p for p in op.params}
    names = PATH_PARAM.findall(endpoint.path)
    out = [_parameter(given.get(n, Param(n)), "path", True) for n in names]
    out += [_parameter(p, p.where, p.required) for p in op.params if p.name not in names]
    return out


def _automatic_errors(rule: Rule, method: str) -> set[int]:
    """The errors the guards add: refusals, and an audit or database that cannot write."""
    statuses: set[int] = set()
    if not rule.public:
        statuses |= {401, 403}
    if not rule.public and rule.audit == "request":
        statuses |= {503, 507}
    return statuses


def _operation(endpoint: Endpoint, method: str, op: Operation, described: bool) -> dict[str, Any]:
    rule = POLICY[endpoint.policy_key]
    head = method == "HEAD"
    slug = re.sub(r"[^A-Za-z0-9]+", "_", endpoint.path).strip("_") or "root"
    out: dict[str, Any] = {
        "operationId": f"{method.lower()}_{slug}",
        "summary": op.summary + (" (headers only)" if head else ""),
        "tags": [op.tag],
    }
    description = op.description if op.description is not None else inspect.getdoc(endpoint.target)
    if description and described:
        out["description"] = description
    parameters = _parameters(endpoint, op)
    if parameters:
        out["parameters"] = parameters
    if op.body is not None and method not in ("GET", "HEAD", "DELETE"):
        body: dict[str, Any] = {
            "required": op.body.required,
            "content": {media: {"schema": dict(s)} for media, s in op.body.content.items()},
        }
        if op.body.description:
            body["description"] = op.body.description
        out["requestBody"] = body
    responses: dict[str, Any] = {str(s): _reply(r, head) for s, r in sorted(op.replies.items())}
    for status in sorted(set(op.errors) | _automatic_errors(rule, method)):
        if str(status) in responses:
            continue
        ref = {"$ref": f"#/components/responses/{_error_name(status)}"}
        responses[str(status)] = _reply(Reply(HTTPStatus(status).phrase), head) if head else ref
    # The middleware and the guards answer the shared error body on every route (a NUL byte,
    # a refusal); an operation's own error form comes in addition.
    default = Reply("An error", {"application/json": {"$ref": "#/components/schemas/Error"}})
    if op.error_reply is not None:
        content = {**default.content, **op.error_reply.content}
        default = Reply(op.error_reply.description, content, op.error_reply.headers)
    responses["default"] = _reply(default, head)
    out["responses"] = responses
    out["security"] = [] if rule.public else PROTECTED
    if not rule.public:
        out["x-roles"] = sorted(rule.roles_for(method))
    out["x-phi"] = rule.phi
    out["x-audit"] = rule.audit
    if not described:
        out[UNDESCRIBED] = True
    return out


def _error_statuses(paths: dict[str, Any]) -> set[int]:
    found: set[int] = set()
    for item in paths.values():
        for op in item.values():
            for status, response in op["responses"].items():
                if "$ref" in response:
                    found.add(int(status))
    return found


def build_document(routes: Sequence[BaseRoute], server_url: str = "") -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes`` (the app's routes, in order)."""
    paths: dict[str, dict[str, Any]] = {}
    tags: list[str] = []
    for endpoint in endpoints(routes):
        op = operation_of(endpoint.target)
        described = op is not None
        op = op or _fallback(endpoint.target)
        if op.tag not in tags:
            tags.append(op.tag)
        item = paths.setdefault(endpoint.path, {})
        for method in endpoint.methods:
            item[method.lower()] = _operation(endpoint, method, op, described)
    codes = error_codes()
    responses = {
        _error_name(s): _error_response(s, codes.get(s, [])) for s in sorted(_error_statuses(paths))
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "slideserver",
            "version": __version__,
            "description": DESCRIPTION,
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [{"name": t} for t in tags],
        "paths": paths,
        "components": {
            "schemas": shared_schemas(),
            "responses": responses,
            "securitySchemes": SECURITY_SCHEMES,
        },
    }
    if server_url:
        document["servers"] = [{"url": server_url}]
    return document
