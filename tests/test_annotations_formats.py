"""Import and export: QuPath's GeoJSON both ways with nothing lost, the API's GeoJSON, and a CSV
of points for counts (through the live API, on SQLite)."""

from __future__ import annotations

import csv
import io
import json
import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slideserver.annotations import qupath
from slideserver.annotations.model import SlideFrame
from slideserver.annotations.validate import check_features, known_classes
from tests.annotations_env import AnnotationEnv, open_env
from tests.helpers import assert_error

QUPATH_EXPORT = Path(__file__).resolve().parent / "fixtures" / "qupath_export.geojson"
"""Written by hand from QuPath's GeoJSON writer and reader (``PathObjectTypeAdapters``,
``GsonTools``; no QuPath export file was in shared/realworld): annotations of every geometry,
a detection, a cell with its nucleus, and a QuPath 0.2 object (type in ``id``, ``colorRGB``,
measurements as a list)."""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnnotationEnv]:
    folder = tmp_path_factory.mktemp("annotations-formats")
    yield from open_env(folder, f"sqlite:///{folder / 'catalog.db'}")


def new_layer(env: AnnotationEnv, slide: str | None = None) -> str:
    url = f"/api/slides/{slide or env.calibrated}/annotation-layers"
    answer = env.call("pathologist", "POST", url, json={"name": "import", "kind": "case"})
    assert answer.status_code == 201
    return str(answer.json()["id"])


def import_(env: AnnotationEnv, fmt: str, body: bytes, layer: str, slide: str | None = None) -> Any:
    url = f"/api/slides/{slide or env.calibrated}/annotations/import"
    return env.call(
        "pathologist", "POST", url, params={"format": fmt, "layer": layer}, content=body
    )


def export(env: AnnotationEnv, fmt: str, layer: str, caller: str = "pathologist") -> Any:
    url = f"/api/slides/{env.calibrated}/annotations/export"
    answer = env.call(caller, "GET", url, params={"format": fmt, "layer": layer})
    assert answer.status_code == 200, answer.text[:300]
    assert answer.headers["content-disposition"].startswith("attachment")
    return answer


@pytest.fixture(scope="module")
def imported(env: AnnotationEnv) -> str:
    """The layer the QuPath export was imported into (once: its ids are then taken)."""
    layer = new_layer(env)
    answer = import_(env, "qupath", QUPATH_EXPORT.read_bytes(), layer)
    assert answer.status_code == 201, answer.text
    assert len(answer.json()["created"]) == len(json.loads(QUPATH_EXPORT.read_text())["features"])
    return layer


def test_a_qupath_export_imports_and_exports_back_unchanged(
    env: AnnotationEnv, imported: str
) -> None:
    assert export(env, "qupath", imported).json() == json.loads(QUPATH_EXPORT.read_text())


def test_qupath_names_classes_and_colours_become_the_annotations_own(
    env: AnnotationEnv, imported: str
) -> None:
    layer = imported
    listed = env.call(
        "pathologist", "GET", f"/api/slides/{env.calibrated}/annotations", params={"layer": layer}
    ).json()
    by_id = {f["id"]: f["properties"] for f in listed["features"]}
    tumour = by_id["0b6b6f2e-7d0c-4d6b-9f39-6d2b3f1c9a01"]
    assert (tumour["class"], tumour["label"], tumour["kind"]) == (
        "Tumor",
        "Invasive front",
        "polygon",
    )
    ruler = by_id["0b6b6f2e-7d0c-4d6b-9f39-6d2b3f1c9a03"]
    assert (ruler["class"], ruler["colour"], ruler["kind"]) == (None, "#0064c8", "line")
    # 600 px across (300 µm) then 400 px down (100 µm) at 0.5 x 0.25 µm per pixel.
    assert ruler["measurements"]["length_um"] == pytest.approx(400.0)
    points = by_id["0b6b6f2e-7d0c-4d6b-9f39-6d2b3f1c9a04"]
    assert (points["class"], points["kind"]) == ("Positive", "multipoint")


def test_an_imported_annotation_edited_here_keeps_what_qupath_wrote(
    env: AnnotationEnv, imported: str
) -> None:
    url = "/api/annotations/0b6b6f2e-7d0c-4d6b-9f39-6d2b3f1c9a06"  # a detection
    feature = env.call("pathologist", "GET", url).json()
    feature["properties"]["label"] = "reviewed"
    saved = env.call("pathologist", "PUT", url, json=feature, headers={"If-Match": '"1"'})
    assert saved.status_code == 200, saved.text
    exported = export(env, "qupath", imported).json()["features"]
    detection = next(f for f in exported if f["id"].endswith("9a06"))
    original = next(
        f for f in json.loads(QUPATH_EXPORT.read_text())["features"] if f["id"].endswith("9a06")
    )
    assert detection["properties"] == {**original["properties"], "name": "reviewed"}


def test_an_import_retried_stores_nothing_twice(env: AnnotationEnv) -> None:
    layer = new_layer(env)
    body = json.dumps(
        {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "id": str(uuid.uuid4()),
                    "geometry": {"type": "Point", "coordinates": [5, 5]},
                    "properties": {"objectType": "annotation"},
                }
            ],
        }
    ).encode()
    assert import_(env, "qupath", body, layer).status_code == 201
    again = import_(env, "qupath", body, layer)
    assert again.status_code == 200 and again.json()["created"] == []


def test_a_qupath_class_not_known_here_is_refused(env: AnnotationEnv) -> None:
    feature = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [5, 5]},
        "properties": {
            "objectType": "annotation",
            "classification": {"name": "Tumor: Positive", "color": [1, 2, 3]},
        },
    }
    answer = import_(env, "qupath", json.dumps([feature]).encode(), new_layer(env))
    assert_error(answer, 422, "invalid_annotation")


def _drawn() -> list[dict[str, Any]]:
    ellipse = [
        [300 + 100 * math.cos(t), 300 + 50 * math.sin(t)]
        for t in (i * math.pi / 16 for i in range(32))
    ]
    ellipse.append(ellipse[0])
    rect = [[500, 500], [700, 500], [700, 600], [500, 600], [500, 500]]
    return [
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [rect]},
            "properties": {
                "class": "stroma",
                "shape": "rectangle",
                "label": "box",
                "note": "re-cut",
            },
        },
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [ellipse]},
            "properties": {"class": "necrosis", "shape": "ellipse", "colour": "#112233"},
        },
        {
            "type": "Feature",
            "geometry": {"type": "LineString", "coordinates": [[10, 10], [90, 40]]},
            "properties": {"class": "margin", "label": "2.1 mm"},
        },
        {
            "type": "Feature",
            "geometry": {"type": "MultiPoint", "coordinates": [[20, 20], [25, 30]]},
            "properties": {"class": "mitosis"},
        },
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [40, 40]},
            "properties": {},
        },
    ]


def test_annotations_drawn_here_export_as_qupath_reads_them(env: AnnotationEnv) -> None:
    layer = new_layer(env)
    drawn = _drawn()
    for feature in drawn:
        feature["properties"]["layer"] = layer
    posted = env.call(
        "pathologist",
        "POST",
        f"/api/slides/{env.calibrated}/annotations",
        json={"type": "FeatureCollection", "features": drawn},
    )
    assert posted.status_code == 201
    exported = export(env, "qupath", layer).json()
    assert exported["type"] == "FeatureCollection"
    for feature in exported["features"]:
        uuid.UUID(feature["id"])  # QuPath keeps an object's id only when it is a UUID
        props = feature["properties"]
        assert props["objectType"] == "annotation"
        if "classification" in props:
            assert isinstance(props["classification"]["name"], str)
            assert len(props["classification"]["color"]) == 3
    first = exported["features"][0]["properties"]
    assert (first["name"], first["metadata"]["slideserver.note"]) == ("box", "re-cut")
    assert exported["features"][1]["properties"]["color"] == [0x11, 0x22, 0x33]
    # And read back as QuPath's file, every field comes back.
    frame = SlideFrame(2048, 1536)
    back = check_features(qupath.to_features(exported), frame, known_classes(""))
    mine = check_features(drawn, frame, known_classes(""))
    for again, original in zip(back, mine, strict=True):
        assert (again.kind, again.geometry, again.cls, again.label, again.note, again.colour) == (
            original.kind,
            original.geometry,
            original.cls,
            original.label,
            original.note,
            original.colour,
        )


def test_point_counts_go_through_csv_both_ways(env: AnnotationEnv) -> None:
    layer = new_layer(env)
    text = (
        "id,x,y,class\nm1,100,100,mitosis\nm1,110,120,mitosis\n,300,40,mitosis\n,301.5,41,tumour\n"
    )
    answer = import_(env, "csv", text.encode(), layer)
    assert answer.status_code == 201 and len(answer.json()["created"]) == 3
    rows = list(csv.DictReader(io.StringIO(export(env, "csv", layer).text)))
    assert [(r["x"], r["y"], r["class"], r["layer"]) for r in rows] == [
        ("100", "100", "mitosis", layer),
        ("110", "120", "mitosis", layer),
        ("300", "40", "mitosis", layer),
        ("301.5", "41", "tumour", layer),
    ]
    assert rows[0]["id"] == rows[1]["id"] == "m1"


def test_a_csv_without_coordinates_is_refused(env: AnnotationEnv) -> None:
    answer = import_(env, "csv", b"a,b\n1,2\n", new_layer(env))
    assert_error(answer, 422, "invalid_annotation")
    answer = import_(env, "csv", b"x,y\none,2\n", new_layer(env))
    assert_error(answer, 422, "invalid_annotation")


def test_the_geojson_export_imports_into_another_slide(env: AnnotationEnv) -> None:
    layer = new_layer(env)
    drawn = _drawn()
    for feature in drawn:
        feature["properties"]["layer"] = layer
    env.call(
        "pathologist",
        "POST",
        f"/api/slides/{env.calibrated}/annotations",
        json={"type": "FeatureCollection", "features": drawn},
    )
    exported = export(env, "geojson", layer).json()
    assert [f["properties"]["author"] for f in exported["features"]] == ["token:pathologist"] * 5
    for feature in exported["features"]:  # new ids, a layer of the other slide
        del feature["id"]
    target = new_layer(env, env.uncalibrated)
    answer = import_(env, "geojson", json.dumps(exported).encode(), target, env.uncalibrated)
    assert answer.status_code == 201, answer.text
    listed = env.call(
        "pathologist",
        "GET",
        f"/api/slides/{env.uncalibrated}/annotations",
        params={"layer": target},
    ).json()
    keys = ("kind", "class", "label", "note", "colour")
    assert [[f["properties"][k] for k in keys] for f in listed["features"]] == [
        [f["properties"][k] for k in keys] for f in exported["features"]
    ]
    assert [f["geometry"] for f in listed["features"]] == [
        f["geometry"] for f in exported["features"]
    ]


def test_researchers_export_without_authors_or_notes(env: AnnotationEnv) -> None:
    answer = env.call(
        "pathologist",
        "POST",
        f"/api/slides/{env.calibrated}/annotation-layers",
        json={"name": "study", "kind": "research"},
    )
    layer = answer.json()["id"]
    env.call(
        "pathologist",
        "POST",
        f"/api/slides/{env.calibrated}/annotations",
        json={
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [9, 9]},
            "properties": {"layer": layer, "note": "MRN-0012345 seen"},
        },
    )
    for fmt in ("qupath", "geojson"):
        text = export(env, fmt, layer, caller="researcher").text
        assert "MRN" not in text and "token:pathologist" not in text
