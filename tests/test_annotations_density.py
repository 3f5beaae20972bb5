"""The annotation density grid on a live app (SQLite and PostgreSQL): counts equal a count of
the features in Python, the list endpoint's layer and role rules, audit rows, and bad grids
answered 422."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from slideserver.security.schema import audit_events
from tests.annotations_env import HEIGHT, MRN, WIDTH, AnnotationEnv, open_env
from tests.helpers import assert_error


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AnnotationEnv]:
    folder = tmp_path_factory.mktemp("annotations-density")
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'catalog.db'}"
    else:
        server = request.getfixturevalue("postgres_server")
        url = server.create_database(f"density_{uuid.uuid4().hex[:8]}")
    yield from open_env(folder, url)


Box = tuple[float, float, float, float]


def layer(env: AnnotationEnv, caller: str, kind: str) -> str:
    body = {"name": f"{kind} layer", "kind": kind}
    answer = env.call(caller, "POST", f"/api/slides/{env.calibrated}/annotation-layers", json=body)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def upload(env: AnnotationEnv, caller: str, layer_id: str, boxes: list[Box]) -> None:
    features = [
        {
            "type": "Feature",
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]],
            },
            "properties": {"layer": layer_id, "class": "tumour" if i % 3 else "stroma"},
        }
        for i, (x0, y0, x1, y1) in enumerate(boxes)
    ]
    body = {"type": "FeatureCollection", "features": features}
    answer = env.call(caller, "POST", f"/api/slides/{env.calibrated}/annotations", json=body)
    assert answer.status_code == 201, answer.text


def random_boxes(n: int, seed: int) -> list[Box]:
    rng = random.Random(seed)
    boxes = []
    for _ in range(n):
        x, y = rng.uniform(0, WIDTH - 30), rng.uniform(0, HEIGHT - 30)
        boxes.append((x, y, x + rng.uniform(1, 30), y + rng.uniform(1, 30)))
    return boxes


def python_counts(boxes: list[Box], bbox: Box, cols: int, rows: int) -> list[int]:
    """The grid counted in Python: each feature in the cell of its bbox centre."""
    x0, y0, x1, y1 = bbox
    counts = [0] * (cols * rows)
    for bx0, by0, bx1, by1 in boxes:
        cx, cy = (bx0 + bx1) / 2.0, (by0 + by1) / 2.0
        if x0 <= cx <= x1 and y0 <= cy <= y1:
            ix = min(cols - 1, math.floor((cx - x0) * cols / (x1 - x0)))
            iy = min(rows - 1, math.floor((cy - y0) * rows / (y1 - y0)))
            counts[iy * cols + ix] += 1
    return counts


def density(env: AnnotationEnv, caller: str, **params: Any) -> Any:
    return env.call(
        caller, "GET", f"/api/slides/{env.calibrated}/annotations/density", params=params
    )


def test_the_counts_equal_a_count_of_the_features_in_python(env: AnnotationEnv) -> None:
    algorithm = layer(env, "admin", "algorithm")
    boxes = random_boxes(2000, 1)
    upload(env, "admin", algorithm, boxes)
    for bbox, cols, rows in [
        ((0.0, 0.0, float(WIDTH), float(HEIGHT)), 32, 24),
        ((300.5, 100.25, 1200.0, 900.0), 9, 5),
    ]:
        answer = density(
            env, "pathologist", bbox=",".join(map(str, bbox)), cols=cols, rows=rows, layer=algorithm
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["counts"] == python_counts(boxes, bbox, cols, rows)
        assert (body["cols"], body["rows"], body["by"]) == (cols, rows, "centre")
        assert body["total"] == sum(body["counts"]) and body["max"] == max(body["counts"])
    whole = density(env, "pathologist", layer=algorithm, cols=1, rows=1).json()
    assert whole["counts"] == [len(boxes)]
    stroma = density(env, "pathologist", layer=algorithm, cols=1, rows=1, **{"class": "STROMA"})
    assert stroma.json()["counts"] == [len(boxes[::3])]


def test_a_researcher_never_counts_a_layer_they_cannot_read(env: AnnotationEnv) -> None:
    research = layer(env, "pathologist", "research")
    case = layer(env, "pathologist", "case")
    upload(env, "pathologist", research, random_boxes(40, 2))
    upload(env, "pathologist", case, random_boxes(70, 3))
    theirs = density(env, "researcher", cols=4, rows=4).json()
    listed = env.call(
        "researcher", "GET", f"/api/slides/{env.calibrated}/annotations", params={"limit": 10000}
    ).json()
    assert theirs["total"] == len(listed["features"])
    assert case not in theirs["layers"] and research in theirs["layers"]
    assert density(env, "pathologist", cols=4, rows=4).json()["total"] >= theirs["total"] + 70
    assert_error(density(env, "researcher", layer=case), 404, "layer_not_found")
    assert density(env, "researcher", layer=research, cols=1, rows=1).json()["counts"] == [40]


def test_a_personal_layer_is_counted_only_for_its_owner(env: AnnotationEnv) -> None:
    feature = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 5]}}
    made = env.call(
        "pathologist2", "POST", f"/api/slides/{env.calibrated}/annotations", json=feature
    )
    assert made.status_code == 201, made.text
    region = {"bbox": "0,0,10,10", "cols": 1, "rows": 1}
    mine = density(env, "pathologist2", **region).json()
    others = density(env, "pathologist", **region).json()
    assert mine["total"] == others["total"] + 1


def test_lis_may_not_read_the_density(env: AnnotationEnv) -> None:
    assert_error(density(env, "lis"), 403, "forbidden")


def test_a_density_read_is_audited_with_the_patient(env: AnnotationEnv) -> None:
    request_id = f"density-{uuid.uuid4().hex[:8]}"
    answer = env.call(
        "pathologist",
        "GET",
        f"/api/slides/{env.calibrated}/annotations/density",
        headers={"X-Request-ID": request_id},
    )
    assert answer.status_code == 200, answer.text
    with env.app.state.security.engine.connect() as conn:
        rows = conn.execute(
            select(audit_events).where(audit_events.c.request_id == request_id)
        ).all()
    done = next(r for r in rows if r.kind == "request")
    assert done.action == "GET /api/slides/{slide_id}/annotations/density"
    assert (done.case_id, done.patient_id) == ("S24-01234", MRN)


@pytest.mark.parametrize(
    "params",
    [
        {"bbox": "0,0,10"},
        {"bbox": "a,b,c,d"},
        {"bbox": "10,0,0,10"},
        {"bbox": "0,0,0,10"},
        {"bbox": "0,0,nan,10"},
        {"bbox": "0,0,1e300,10"},
        {"cols": "0"},
        {"rows": "-1"},
        {"cols": "x"},
        {"cols": "1.5"},
        {"cols": "257", "rows": "256"},
        {"cols": "65537", "rows": "1"},
        {"cols": "99999999999999999999"},
    ],
)
def test_a_bad_region_or_grid_answers_422(env: AnnotationEnv, params: dict[str, str]) -> None:
    assert_error(density(env, "pathologist", **params), 422, "unprocessable")


def test_the_largest_grid_is_answered(env: AnnotationEnv) -> None:
    body = density(env, "pathologist", cols=256, rows=256).json()
    assert len(body["counts"]) == 65_536


def test_an_unknown_slide_answers_404(env: AnnotationEnv) -> None:
    answer = env.call("pathologist", "GET", "/api/slides/nothing/annotations/density")
    assert answer.status_code == 404
