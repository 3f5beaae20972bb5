"""The annotation API on a live app (SQLite and PostgreSQL): GeoJSON in and out, measurements,
pages, ETags and lost updates, history, soft deletes, roles and de-identification, audit rows
naming the patient, idempotent uploads and bad input that never answers 500."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from slideserver.security.schema import audit_events
from tests.annotations_env import MRN, AnnotationEnv, open_env
from tests.helpers import assert_error

MAX_BODY = 16 * 1024 * 1024


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AnnotationEnv]:
    folder = tmp_path_factory.mktemp("annotations-api")
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'catalog.db'}"
    else:
        server = request.getfixturevalue("postgres_server")
        url = server.create_database(f"annotations_{uuid.uuid4().hex[:8]}")
    yield from open_env(folder, url, annotation_max_body=MAX_BODY)


def square(x: float, y: float, size: float) -> list[list[float]]:
    return [[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]


def polygon(x: float = 0, y: float = 0, size: float = 100, **props: Any) -> dict[str, Any]:
    geometry = {"type": "Polygon", "coordinates": [square(x, y, size)]}
    return {"type": "Feature", "geometry": geometry, "properties": {"class": "tumour", **props}}


def point(x: float, y: float, **props: Any) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [x, y]},
        "properties": props,
    }


def layer(env: AnnotationEnv, caller: str, kind: str, **fields: Any) -> dict[str, Any]:
    body = {"name": f"{kind} layer", "kind": kind, **fields}
    answer = env.call(caller, "POST", f"/api/slides/{env.calibrated}/annotation-layers", json=body)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def post(env: AnnotationEnv, caller: str, body: Any, slide: str | None = None, **kw: Any) -> Any:
    return env.call(
        caller, "POST", f"/api/slides/{slide or env.calibrated}/annotations", json=body, **kw
    )


def created(env: AnnotationEnv, caller: str, feature: dict[str, Any]) -> dict[str, Any]:
    answer = post(env, caller, feature)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


# -- drawing and measuring --


def test_a_drawn_polygon_comes_back_with_its_measurements(env: AnnotationEnv) -> None:
    answer = post(env, "pathologist", polygon(label="front", note="check margin"))
    assert answer.status_code == 201
    assert answer.headers["ETag"] == '"1"'
    body = answer.json()
    props = body["properties"]
    assert answer.headers["Location"] == f"/api/annotations/{body['id']}"
    assert props["id"] == body["id"] and props["version"] == 1
    assert (props["class"], props["author"], props["label"]) == (
        "tumour",
        "token:pathologist",
        "front",
    )
    assert props["layer"].startswith("personal-")
    # 100 x 100 px at 0.5 x 0.25 µm per pixel: 50 x 25 µm.
    assert props["measurements"] == pytest.approx(
        {"area_um2": 1250.0, "area_mm2": 0.00125, "perimeter_um": 150.0}
    )
    again = env.call("pathologist", "GET", f"/api/annotations/{body['id']}")
    assert again.status_code == 200 and again.json() == body
    assert again.headers["content-type"].startswith("application/geo+json")


def test_a_ruler_measures_its_length(env: AnnotationEnv) -> None:
    line = {"type": "LineString", "coordinates": [[0, 0], [300, 400]]}  # 150 µm by 100 µm
    body = created(
        env, "pathologist", {"type": "Feature", "geometry": line, "properties": {"class": "margin"}}
    )
    assert body["properties"]["measurements"] == pytest.approx(
        {"length_um": (150**2 + 100**2) ** 0.5}
    )


def test_a_slide_without_mpp_says_why_nothing_is_measured(env: AnnotationEnv) -> None:
    answer = post(env, "pathologist", polygon(), slide=env.uncalibrated)
    assert answer.status_code == 201
    props = answer.json()["properties"]
    assert props["measurements"] is None
    assert "MPP" in props["measurements_unavailable"]
    listed = env.call("pathologist", "GET", f"/api/slides/{env.uncalibrated}/annotations").json()
    assert "MPP" in listed["measurements_unavailable"]


# -- reading --


def test_a_viewport_query_returns_only_what_is_in_view(env: AnnotationEnv) -> None:
    case = layer(env, "pathologist", "case")
    inside = created(
        env, "pathologist", point(1500, 1200, layer=case["id"], **{"class": "mitosis"})
    )
    created(env, "pathologist", point(1900, 100, layer=case["id"], **{"class": "mitosis"}))
    url = f"/api/slides/{env.calibrated}/annotations"
    params = {"bbox": "1400,1100,1600,1300", "layer": case["id"]}
    found = env.call("pathologist", "GET", url, params=params).json()
    assert found["type"] == "FeatureCollection"
    assert [f["id"] for f in found["features"]] == [inside["id"]]
    assert found["next"] is None
    none = env.call("pathologist", "GET", url, params={**params, "class": "stroma"}).json()
    assert none["features"] == []


def test_pages_link_to_the_next_until_the_last(env: AnnotationEnv) -> None:
    case = layer(env, "pathologist", "case")
    ids = [created(env, "pathologist", point(10 + i, 10, layer=case["id"]))["id"] for i in range(5)]
    url: str | None = f"/api/slides/{env.calibrated}/annotations?layer={case['id']}&limit=2"
    seen: list[str] = []
    while url is not None:
        page = env.call("pathologist", "GET", url).json()
        seen += [f["id"] for f in page["features"]]
        url = page["next"]
        if url is not None:
            assert page["links"] == [{"rel": "next", "href": url, "type": "application/geo+json"}]
    assert seen == ids


# -- editing: ETags, lost updates, history, soft deletes --


def test_an_edit_without_if_match_is_refused_with_428(env: AnnotationEnv) -> None:
    body = created(env, "pathologist", polygon())
    answer = env.call(
        "pathologist", "PUT", f"/api/annotations/{body['id']}", json=polygon(0, 0, 50)
    )
    assert_error(answer, 428, "precondition_required")


def test_a_lost_update_is_refused_with_412(env: AnnotationEnv) -> None:
    body = created(env, "pathologist", polygon())
    url = f"/api/annotations/{body['id']}"
    first = env.call("pathologist", "PUT", url, json=polygon(0, 0, 50), headers={"If-Match": '"1"'})
    assert first.status_code == 200 and first.headers["ETag"] == '"2"'
    assert first.json()["properties"]["measurements"]["area_um2"] == pytest.approx(312.5)
    late = env.call("pathologist", "PUT", url, json=polygon(0, 0, 70), headers={"If-Match": '"1"'})
    assert_error(late, 412, "precondition_failed")
    assert env.call("pathologist", "GET", url).json()["properties"]["version"] == 2


def test_a_delete_is_soft_and_kept_in_the_history(env: AnnotationEnv) -> None:
    body = created(env, "pathologist", polygon(note="first"))
    url = f"/api/annotations/{body['id']}"
    env.call(
        "pathologist", "PUT", url, json=polygon(5, 5, note="second"), headers={"If-Match": '"1"'}
    )
    assert_error(env.call("pathologist", "DELETE", url), 428)
    deleted = env.call("pathologist", "DELETE", url, headers={"If-Match": '"2"'})
    assert deleted.status_code == 204
    assert_error(env.call("pathologist", "GET", url), 404, "annotation_not_found")
    history = env.call("pathologist", "GET", f"{url}/history").json()["items"]
    assert [(h["version"], h["action"], h["actor"]) for h in history] == [
        (1, "create", "token:pathologist"),
        (2, "update", "token:pathologist"),
        (3, "delete", "token:pathologist"),
    ]
    assert history[1]["before"]["note"] == "first" and history[1]["after"]["note"] == "second"
    assert history[2]["after"] is None


# -- idempotent uploads --


def test_a_retried_upload_with_feature_ids_stores_nothing_twice(env: AnnotationEnv) -> None:
    ids = [f"retry-{uuid.uuid4().hex[:8]}-{i}" for i in range(3)]
    batch = {
        "type": "FeatureCollection",
        "features": [{**point(50, 50 + i), "id": fid} for i, fid in enumerate(ids)],
    }
    first = post(env, "pathologist", batch)
    again = post(env, "pathologist", batch)
    assert (first.status_code, first.json()) == (201, {"created": ids, "existing": []})
    assert (again.status_code, again.json()) == (200, {"created": [], "existing": sorted(ids)})


def test_an_idempotency_key_replays_the_first_answer(env: AnnotationEnv) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    batch = {"type": "FeatureCollection", "features": [point(70, 70), point(71, 71)]}
    first = post(env, "pathologist", batch, headers=key)
    again = post(env, "pathologist", batch, headers=key)
    assert first.status_code == 201 and len(first.json()["created"]) == 2
    assert again.json() == first.json()
    other = post(env, "pathologist", {**batch, "features": [point(72, 72)]}, headers=key)
    assert_error(other, 409, "conflict")


# -- roles and de-identification --


def test_lis_may_not_read_or_write_annotations(env: AnnotationEnv) -> None:
    url = f"/api/slides/{env.calibrated}/annotations"
    assert_error(env.call("lis", "GET", url), 403, "forbidden")
    assert_error(env.call("lis", "POST", url, json=point(1, 1)), 403, "forbidden")


def test_a_personal_layer_is_private_to_its_owner(env: AnnotationEnv) -> None:
    mine = created(env, "pathologist", polygon())
    url = f"/api/annotations/{mine['id']}"
    assert_error(env.call("pathologist2", "GET", url), 404, "annotation_not_found")
    listed = env.call("pathologist2", "GET", f"/api/slides/{env.calibrated}/annotations").json()
    assert mine["id"] not in {f["id"] for f in listed["features"]}
    assert env.call("admin", "GET", url).status_code == 200


def test_pathologists_share_the_case_layer(env: AnnotationEnv) -> None:
    case = layer(env, "pathologist", "case")
    theirs = created(env, "pathologist", polygon(layer=case["id"]))
    edit = env.call(
        "pathologist2",
        "PUT",
        f"/api/annotations/{theirs['id']}",
        json=polygon(layer=case["id"], label="agreed"),
        headers={"If-Match": '"1"'},
    )
    assert edit.status_code == 200, edit.text
    assert edit.json()["properties"]["author"] == "token:pathologist"


def test_pathologists_edit_only_their_own_in_a_research_set(env: AnnotationEnv) -> None:
    research = layer(env, "pathologist", "research")
    mine = created(env, "pathologist", polygon(layer=research["id"]))
    assert_error(post(env, "pathologist2", polygon(layer=research["id"])), 403, "forbidden")
    refused = env.call(
        "pathologist2", "DELETE", f"/api/annotations/{mine['id']}", headers={"If-Match": '"1"'}
    )
    assert_error(refused, 403, "forbidden")


def test_researchers_see_research_layers_with_pseudonyms_and_no_notes(env: AnnotationEnv) -> None:
    research = layer(env, "pathologist", "research")
    case = layer(env, "pathologist", "case")
    shown = created(env, "pathologist", polygon(layer=research["id"], note="patient is a nurse"))
    hidden = created(env, "pathologist", polygon(layer=case["id"]))
    listed = env.call("researcher", "GET", f"/api/slides/{env.calibrated}/annotations").json()
    ids = {f["id"] for f in listed["features"]}
    assert shown["id"] in ids and hidden["id"] not in ids
    props = env.call("researcher", "GET", f"/api/annotations/{shown['id']}").json()["properties"]
    assert props["author"].startswith("user-") and "pathologist" not in props["author"]
    assert props["note"] is None
    history = env.call("researcher", "GET", f"/api/annotations/{shown['id']}/history").json()
    assert history["items"][0]["actor"] == props["author"]
    assert history["items"][0]["after"]["note"] is None
    assert "nurse" not in json.dumps(history)
    layers = env.call("researcher", "GET", f"/api/slides/{env.calibrated}/annotation-layers").json()
    assert {la["owner"] for la in layers["layers"]} == {props["author"]}


def test_a_research_safe_layer_shows_its_notes_to_researchers(env: AnnotationEnv) -> None:
    research = layer(env, "pathologist", "research", research_safe=True)
    shown = created(env, "pathologist", polygon(layer=research["id"], note="grade 2 area"))
    props = env.call("researcher", "GET", f"/api/annotations/{shown['id']}").json()["properties"]
    assert props["note"] == "grade 2 area"


def test_researchers_write_only_to_layers_granted_to_them(env: AnnotationEnv) -> None:
    research = layer(env, "pathologist", "research")
    assert_error(post(env, "researcher", polygon(layer=research["id"])), 403, "forbidden")
    assert_error(post(env, "researcher", polygon()), 422, "invalid_annotation")
    grant = env.call(
        "pathologist",
        "PUT",
        f"/api/annotation-layers/{research['id']}",
        json={"grants": [env.subject("researcher")]},
        headers={"If-Match": '"1"'},
    )
    assert grant.status_code == 200 and grant.headers["ETag"] == '"2"'
    mine = post(env, "researcher", polygon(layer=research["id"]))
    assert mine.status_code == 201
    assert mine.json()["properties"]["author"] == "token:researcher"
    assert_error(post(env, "researcher2", polygon(layer=research["id"])), 403, "forbidden")


def test_a_locked_layer_is_read_only_but_to_admins(env: AnnotationEnv) -> None:
    case = layer(env, "pathologist", "case", locked=True)
    assert case["writable"] is False
    assert_error(post(env, "pathologist", polygon(layer=case["id"])), 403, "forbidden")
    assert post(env, "admin", polygon(layer=case["id"])).status_code == 201


def test_researchers_may_not_create_layers(env: AnnotationEnv) -> None:
    url = f"/api/slides/{env.calibrated}/annotation-layers"
    answer = env.call("researcher", "POST", url, json={"name": "mine", "kind": "research"})
    assert_error(answer, 403, "forbidden")


def test_only_admins_create_algorithm_layers(env: AnnotationEnv) -> None:
    url = f"/api/slides/{env.calibrated}/annotation-layers"
    body = {"name": "detections", "kind": "algorithm"}
    assert_error(env.call("pathologist", "POST", url, json=body), 403, "forbidden")
    assert env.call("admin", "POST", url, json=body).status_code == 201


def test_a_layer_created_twice_with_its_id_is_one_layer(env: AnnotationEnv) -> None:
    body = {"id": f"layer-{uuid.uuid4().hex[:8]}", "name": "Tumour map", "kind": "case"}
    url = f"/api/slides/{env.calibrated}/annotation-layers"
    assert env.call("pathologist", "POST", url, json=body).status_code == 201
    assert env.call("pathologist", "POST", url, json=body).status_code == 200


def test_deleting_a_layer_hides_its_annotations(env: AnnotationEnv) -> None:
    case = layer(env, "pathologist", "case")
    inside = created(env, "pathologist", polygon(layer=case["id"]))
    stale = env.call(
        "pathologist", "DELETE", f"/api/annotation-layers/{case['id']}", headers={"If-Match": '"7"'}
    )
    assert_error(stale, 412, "precondition_failed")
    assert (
        env.call("pathologist", "DELETE", f"/api/annotation-layers/{case['id']}").status_code == 204
    )
    assert_error(env.call("pathologist", "GET", f"/api/annotations/{inside['id']}"), 404)


def test_annotation_reads_and_writes_are_audited_with_the_patient(env: AnnotationEnv) -> None:
    body = created(env, "pathologist", polygon())
    request_id = f"audit-{uuid.uuid4().hex[:8]}"
    env.call(
        "pathologist",
        "PUT",
        f"/api/annotations/{body['id']}",
        json=polygon(label="x"),
        headers={"If-Match": '"1"', "X-Request-ID": request_id},
    )
    engine = env.app.state.security.engine
    with engine.connect() as conn:
        rows = conn.execute(
            select(audit_events).where(audit_events.c.request_id == request_id)
        ).all()
    assert {r.kind for r in rows} == {"attempt", "request"}
    done = next(r for r in rows if r.kind == "request")
    assert (done.action, done.status) == ("PUT /api/annotations/{annotation_id}", 200)
    assert (done.case_id, done.patient_id) == ("S24-01234", MRN)


# -- bad input: the right 4xx, never a 500 --


def test_a_self_intersecting_polygon_is_refused(env: AnnotationEnv) -> None:
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [100, 100], [100, 0], [0, 100], [0, 0]]]}
    answer = post(env, "pathologist", {"type": "Feature", "geometry": bowtie, "properties": {}})
    assert_error(answer, 422, "invalid_annotation")
    assert "Self-intersection" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (
            b'{"type":"Feature","geometry":{"type":"Point","coordinates":[NaN,1]},"properties":{}}',
            422,
            "invalid_annotation",
        ),
        (
            b'{"type":"Feature","geometry":{"type":"Point","coordinates":[1e400,1]},"properties":{}}',
            422,
            "invalid_annotation",
        ),
        (json.dumps(point(5000, 1)).encode(), 422, "invalid_annotation"),
        (json.dumps(point(1, 1, **{"class": "unicorn"})).encode(), 422, "invalid_annotation"),
        (json.dumps(point(1, 1, layer="no-such-layer")).encode(), 404, "layer_not_found"),
        (b'{"type":"Feature"', 400, "bad_request"),
        (b"[" * 100_000, 400, "bad_request"),
        (b'{"type":"Topology"}', 422, "invalid_annotation"),
        (
            b'{"type":"Feature","geometry":{"type":"Point","coordinates":[1'
            + b"0" * 400
            + b",1]}}",
            422,
            "invalid_annotation",
        ),
        (
            b'{"type":"Feature","geometry":{"type":"Point","coordinates":[1,1]},"properties":{"label":"\\ud800"}}',
            422,
            "invalid_annotation",
        ),
        (
            json.dumps({**point(1, 1), "properties": {"extra": {"x": "y" * 70_000}}}).encode(),
            422,
            "invalid_annotation",
        ),
    ],
    ids=[
        "nan",
        "infinity",
        "outside",
        "unknown-class",
        "unknown-layer",
        "not-json",
        "deep",
        "not-geojson",
        "huge-integer",
        "unpaired-surrogate",
        "huge-properties",
    ],
)
def test_bad_input_answers_4xx(env: AnnotationEnv, body: bytes, status: int, code: str) -> None:
    answer = env.call(
        "pathologist",
        "POST",
        f"/api/slides/{env.calibrated}/annotations",
        content=body,
        headers={"Content-Type": "application/geo+json"},
    )
    assert_error(answer, status, code)


def test_a_body_over_the_cap_is_refused_with_413(env: AnnotationEnv) -> None:
    body = b'{"type":"FeatureCollection","features":[' + b" " * MAX_BODY + b"]}"
    answer = env.call(
        "pathologist", "POST", f"/api/slides/{env.calibrated}/annotations", content=body
    )
    assert_error(answer, 413, "too_large")


def test_more_than_100000_features_are_refused_with_413(env: AnnotationEnv) -> None:
    one = '{"type":"Feature","geometry":{"type":"Point","coordinates":[1,1]}}'
    body = '{"type":"FeatureCollection","features":[' + ",".join([one] * 100_001) + "]}"
    answer = env.call(
        "pathologist", "POST", f"/api/slides/{env.calibrated}/annotations", content=body.encode()
    )
    assert_error(answer, 413, "too_large")


def test_unknown_slides_annotations_and_bad_queries_answer_4xx(env: AnnotationEnv) -> None:
    assert_error(
        post(env, "pathologist", point(1, 1), slide="no-such-slide"), 404, "slide_not_found"
    )
    assert_error(env.call("pathologist", "GET", "/api/annotations/nope"), 404)
    assert_error(env.call("pathologist", "GET", "/api/annotations/a%20b"), 422)
    url = f"/api/slides/{env.calibrated}/annotations"
    assert_error(env.call("pathologist", "GET", url, params={"bbox": "1,2,3"}), 400)
    assert_error(env.call("pathologist", "GET", url, params={"bbox": "5,5,1,1"}), 400)
    assert_error(env.call("pathologist", "GET", url, params={"limit": "0"}), 400)
    assert_error(env.call("pathologist", "GET", url, params={"layer": "zzz"}), 404)
    assert_error(env.call("pathologist", "GET", f"{url}/export", params={"format": "svg"}), 400)


@pytest.mark.slow
def test_100000_features_in_one_request(env: AnnotationEnv) -> None:
    case = layer(env, "pathologist", "case")
    features = [
        point(1 + (i % 2000), 1 + (i // 2000) * 10, layer=case["id"]) for i in range(100_000)
    ]
    body = json.dumps({"type": "FeatureCollection", "features": features}).encode()
    assert len(body) < MAX_BODY
    answer = env.call(
        "pathologist", "POST", f"/api/slides/{env.calibrated}/annotations", content=body
    )
    assert answer.status_code == 201, answer.text[:300]
    assert len(answer.json()["created"]) == 100_000
    view = env.call(
        "pathologist",
        "GET",
        f"/api/slides/{env.calibrated}/annotations",
        params={"layer": case["id"], "bbox": "0,0,100,100", "limit": 10_000},
    ).json()
    assert len(view["features"]) == 100 * 10  # x 1..100, rows y = 1, 11, ..., 91


def _fixture(name: str) -> Path:
    return Path(__file__).resolve().parent / "fixtures" / name
