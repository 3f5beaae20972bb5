"""What one LIS message may cost: JSON nesting, HL7 v2 segments and fields, unknown FHIR types,
and parsing that never runs on the event loop."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import slideserver
from slideserver.api.bodies import JsonTooDeep, check_json_depth
from slideserver.lis.hl7v2 import apply as hl7_apply
from slideserver.lis.hl7v2 import parse as hl7_parse
from slideserver.lis.hl7v2.parse import Hl7Error, parse_message
from tests.fixtures.lis.support import read, sql_lis_client

SOURCE_TREE = str(Path(slideserver.__file__).resolve().parent.parent)
DEEP = b"[" * 100_000 + b"]" * 100_000
TOO_DEEP = {"error": "bad_request", "detail": "JSON nested deeper than 64 levels"}
WAIT = 30.0
"""A deadline for the event-loop test, never reached when the code is right."""


@pytest.fixture(scope="module")
def lis_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with sql_lis_client(tmp_path_factory.mktemp("limits")) as client:
        yield client


def no_source_paths(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        text = record.getMessage() + (
            logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
        )
        assert SOURCE_TREE not in text, record.name


# --- JSON nesting ---


def nested(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


def test_json_nested_64_levels_is_accepted() -> None:
    check_json_depth(nested(64))
    check_json_depth(b"[" * 64 + b"]" * 64)


def test_json_nested_65_levels_is_refused() -> None:
    with pytest.raises(JsonTooDeep, match="JSON nested deeper than 64 levels"):
        check_json_depth(nested(65))


def test_brackets_inside_strings_do_not_count() -> None:
    check_json_depth(json.dumps({"note": "[[[{{{" * 100, "escaped": '\\"[[[' * 100}).encode())


def test_unclosed_brackets_count() -> None:
    with pytest.raises(JsonTooDeep):
        check_json_depth(b"[" * 100_000)


def test_deep_json_order_is_a_400_not_a_recursion_error(
    lis_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    response = lis_client.post(
        "/api/lis/cases", content=DEEP, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json() == TOO_DEEP
    no_source_paths(caplog)


def test_deep_fhir_bundle_is_a_400_operation_outcome(
    lis_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    response = lis_client.post(
        "/fhir", content=DEEP, headers={"Content-Type": "application/fhir+json"}
    )
    assert response.status_code == 400
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["diagnostics"] == TOO_DEEP["detail"]
    no_source_paths(caplog)


# --- unknown FHIR resource types ---


def bundle_with(resource: dict[str, Any]) -> dict[str, Any]:
    entry = {"resource": resource, "request": {"method": "POST", "url": "X"}}
    return {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}


@pytest.mark.parametrize(
    ("resource", "named"),
    [
        ({"resourceType": "Foo"}, "'Foo'"),
        ({"resourceType": "X" * 500}, "'" + "X" * 38),
        ({"resourceType": "Patient", "contained": [{"resourceType": "Bar"}]}, "'Bar'"),
        ({"resourceType": 7}, "(not a string)"),
    ],
)
def test_unknown_resource_type_is_a_400_naming_it(
    lis_client: Any, caplog: pytest.LogCaptureFixture, resource: dict[str, Any], named: str
) -> None:
    response = lis_client.post("/fhir", json=bundle_with(resource))
    assert response.status_code == 400
    diagnostics = response.json()["issue"][0]["diagnostics"]
    assert diagnostics.startswith(f"unknown resourceType {named}")
    assert len(diagnostics) < 80
    no_source_paths(caplog)


# --- HL7 v2 size ---

HEADER = "MSH|^~\\&|LIS|HOSP|SS|LAB|20240315||ORM^O01|BIG-1|P|2.5.1"
MANY_SEGMENTS = HEADER + "\r" + "NTE|1||ab\r" * 390_000
"""3.9 MB, under the 4 MB body cap: seconds of CPU if it were parsed."""


def test_390000_segments_are_refused_before_parsing() -> None:
    with pytest.raises(Hl7Error, match="more than 2000 segments") as caught:
        parse_message(MANY_SEGMENTS)
    assert caught.value.ack_code == "AR"


def test_390000_segments_over_http_answer_ar_400(lis_client: Any) -> None:
    response = lis_client.post("/api/lis/hl7v2", content=MANY_SEGMENTS.encode())
    assert response.status_code == 400
    assert "MSA|AR|BIG-1|the message has more than 2000 segments" in response.text


@pytest.mark.parametrize(
    ("field", "refusal"),
    [
        ("~".join(["X"] * 101), "more than 100 repetitions"),
        ("^".join(["X"] * 501), "more than 500 components"),
        ("&".join(["X"] * 501), "more than 500 subcomponents"),
        ("|".join(["X"] * 256), "more than 256 fields"),
    ],
)
def test_fields_with_too_many_parts_are_refused(field: str, refusal: str) -> None:
    with pytest.raises(Hl7Error, match=refusal):
        parse_message(f"{HEADER}\rPID|1||{field}\r")


def test_a_large_legal_message_is_applied(lis_client: Any) -> None:
    raw = read("orm_o01.hl7").rstrip("\r") + "\r" + "NTE|1||a comment\r" * 1900
    response = lis_client.post("/api/lis/hl7v2", content=raw.encode())
    assert response.status_code == 200, response.text


# --- parsing off the event loop ---


def test_the_event_loop_answers_while_a_message_is_parsed(
    lis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parse is held until a request made meanwhile is answered: on the event loop, that
    request would wait for the parse, and the message would be answered first."""
    entered, release = threading.Event(), threading.Event()
    real_parse = hl7_parse.parse_message

    def held_parse(raw: str, policy: Any = None) -> Any:
        entered.set()
        release.wait(WAIT)
        return real_parse(raw, policy)

    monkeypatch.setattr(hl7_apply, "parse_message", held_parse)
    answers: list[int] = []
    sender = threading.Thread(
        target=lambda: answers.append(
            lis_client.post("/api/lis/hl7v2", content=read("adt_a08.hl7").encode()).status_code
        )
    )
    sender.start()
    try:
        assert entered.wait(WAIT)
        assert lis_client.get("/healthz").status_code == 200
        assert answers == []  # the message is still being parsed
    finally:
        release.set()
        sender.join(WAIT)
    assert answers == [200]
