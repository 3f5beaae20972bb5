"""The OpenAPI 3.1 description: every route the app serves is in it, described, valid, and its
security follows the policy table (issue 17)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from slideserver.api.app import create_app
from slideserver.api.errors import ERROR_STATUS
from slideserver.api.openapi import build_document, undescribed
from slideserver.api.policy import POLICY
from slideserver.api.routes.openapi import routes as openapi_routes
from slideserver.api.tile_lane import TILE_PATH
from slideserver.api.urls import DEEPZOOM_TILE
from slideserver.settings import Settings
from tests.security_probe import endpoints

PROTECTED: list[dict[str, list[str]]] = [{"bearerToken": []}, {"sessionCookie": []}]
OPENAPI_PATH = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?}")


@pytest.fixture(scope="module")
def document() -> Iterator[dict[str, Any]]:
    """The document as the app serves it (``auth=open``: no database needed)."""
    with TestClient(create_app(Settings(roots=()))) as client:
        answer = client.get("/openapi.json")
        assert answer.status_code == 200, answer.text
        yield answer.json()


def _openapi_path(template: str, mount: bool) -> str:
    path = OPENAPI_PATH.sub(r"{\1}", template)
    return path + "/{path}" if mount else path


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, op in item.items():
            yield path, method.upper(), op


def test_every_route_of_the_app_carries_an_operation() -> None:
    app = create_app(Settings(roots=()))
    missing = undescribed(app.router.routes)
    assert not missing, (
        "describe these routes: decorate the endpoint with "
        f"slideserver.api.openapi.operation(...) (see docs/architecture.md): {missing}"
    )


def test_every_route_and_method_is_in_the_document(document: dict[str, Any]) -> None:
    served = {(e.method, _openapi_path(e.template, e.mount)) for e in endpoints()}
    documented = {(method, path) for path, method, _ in operations(document)}
    assert served - documented == set()
    assert documented - served == set()


def test_no_operation_is_marked_undescribed(document: dict[str, Any]) -> None:
    marked = [(m, p) for p, m, op in operations(document) if op.get("x-undescribed")]
    assert marked == []


def test_the_tile_lane_template_is_described(document: dict[str, Any]) -> None:
    path = _openapi_path(DEEPZOOM_TILE, False)
    assert set(document["paths"][path]) == {"get", "head"}
    example = path.format(slide_id="abc-123", level="12", col="3", row="4", fmt="jpeg")
    assert TILE_PATH.fullmatch(example), "the lane answers the URLs the document describes"
    responses = document["paths"][path]["get"]["responses"]
    assert set(responses["200"]["content"]) == {"image/jpeg", "image/png", "image/webp"}
    assert "304" in responses


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    OPENAPI_31_VALIDATOR.validate(document)


def _schemas(node: Any) -> Iterator[dict[str, Any]]:
    """Every Schema Object in the document (the OpenAPI schema does not check them)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "schema" and isinstance(value, dict):
                yield value
            else:
                yield from _schemas(value)
        if "schemas" in node and isinstance(node["schemas"], dict):
            yield from node["schemas"].values()
    elif isinstance(node, list):
        for value in node:
            yield from _schemas(value)


def test_every_schema_in_the_document_is_valid_json_schema_2020_12(
    document: dict[str, Any],
) -> None:
    schemas = list(_schemas(document))
    assert len(schemas) > 50
    for schema in schemas:
        jsonschema_rs.meta.validate(schema)


def test_security_and_roles_come_from_the_policy_table(document: dict[str, Any]) -> None:
    for e in endpoints():
        op = document["paths"][_openapi_path(e.template, e.mount)][e.method.lower()]
        rule = POLICY[e.template]
        if rule.public:
            assert op["security"] == [], e
            assert "x-roles" not in op, e
        else:
            assert op["security"] == PROTECTED, e
            assert op["x-roles"] == sorted(rule.roles_for(e.method)), e
            assert {"401", "403"} <= set(op["responses"]), e
        assert op["x-phi"] is rule.phi, e


def test_both_credentials_are_security_schemes(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerToken"] == {**schemes["bearerToken"], "type": "http", "scheme": "bearer"}
    assert schemes["sessionCookie"]["in"] == "cookie"
    assert schemes["sessionCookie"]["name"] == "slideserver_session"


def test_the_error_body_is_one_shared_schema_listing_the_codes(document: dict[str, Any]) -> None:
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error", "detail"]
    listed = error["properties"]["error"]["description"]
    for cls, status in ERROR_STATUS.items():
        assert f"{status}: " in listed and cls.code in listed, cls
    not_found = document["paths"]["/api/slides/{slide_id}"]["get"]["responses"]["404"]
    assert not_found == {"$ref": "#/components/responses/NotFound"}
    shared = document["components"]["responses"]["NotFound"]["content"]["application/json"]
    assert shared["schema"] == {"$ref": "#/components/schemas/Error"}


def test_image_operations_declare_their_media_types(document: dict[str, Any]) -> None:
    paths = document["paths"]
    thumbnail = paths["/api/slides/{slide_id}/thumbnail"]["get"]["responses"]["200"]
    assert set(thumbnail["content"]) == {"image/jpeg"}
    assert thumbnail["content"]["image/jpeg"]["schema"]["format"] == "binary"
    iiif = paths["/iiif/3/{slide_id}/{region}/{size}/{rotation}/{quality}.{fmt}"]["get"]
    assert set(iiif["responses"]["200"]["content"]) == {"image/jpeg", "image/png", "image/webp"}


def test_path_parameters_come_from_the_templates(document: dict[str, Any]) -> None:
    for path, method, op in operations(document):
        in_path = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
        assert in_path == OPENAPI_PATH.findall(path), (method, path)
        assert all(p["required"] for p in op.get("parameters", []) if p["in"] == "path")


def test_query_parameters_and_bodies_are_declared(document: dict[str, Any]) -> None:
    slides = document["paths"]["/api/slides"]["get"]["parameters"]
    limit = next(p for p in slides if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 1000
    order = document["paths"]["/api/lis/cases"]["post"]["requestBody"]["content"]
    assert order["application/json"]["schema"]["required"] == ["accession", "patient"]
    fhir = document["paths"]["/fhir/Patient/{id}"]["get"]["responses"]["default"]
    assert "application/fhir+json" in fhir["content"]


def test_a_route_without_a_description_is_named_and_marked() -> None:
    async def plain(request: Request) -> Response:
        """A route someone forgot to describe."""
        return PlainTextResponse("x")

    route = Route("/healthz", plain, methods=["GET"])  # a public policy row: buildable
    assert undescribed([route]) == ["GET,HEAD /healthz"]
    op = build_document([route])["paths"]["/healthz"]["get"]
    assert op["x-undescribed"] is True
    assert op["summary"] == "A route someone forgot to describe."


def test_the_document_is_public_when_authentication_is_on(
    secure_env: tuple[TestClient, dict[str, str]],
) -> None:
    client, _ = secure_env
    answer = client.get("/openapi.json")
    assert answer.status_code == 200
    assert answer.json()["paths"]["/api/slides"]["get"]["x-roles"]


def test_the_reference_page_is_served_with_a_strict_content_policy(tmp_path: Path) -> None:
    (tmp_path / "api-docs.html").write_text("<!doctype html><title>API</title>")
    docs = next(r for r in openapi_routes(tmp_path) if r.path == "/api/docs")
    with TestClient(Starlette(routes=[docs])) as client:
        answer = client.get("/api/docs")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert "script-src 'self';" in answer.headers["content-security-policy"]


def test_the_reference_page_answers_503_until_the_viewer_is_built(tmp_path: Path) -> None:
    docs = next(r for r in openapi_routes(tmp_path) if r.path == "/api/docs")
    with TestClient(Starlette(routes=[docs])) as client:
        answer = client.get("/api/docs")
    assert answer.status_code == 503
    assert answer.json()["error"] == "viewer_not_built"
