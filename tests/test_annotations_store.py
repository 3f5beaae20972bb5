"""The annotation store on SQLite and PostgreSQL: spatial queries through the index, pages,
versions, soft deletes, lost updates and idempotent uploads."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from slideserver.annotations.model import AnnotationIn, Layer
from slideserver.annotations.store import AnnotationNotFound, AnnotationStore
from slideserver.errors import Conflict, PreconditionFailed


@pytest.fixture
def store(database_url: str) -> Iterator[AnnotationStore]:
    opened = AnnotationStore.open(database_url)
    opened.create_layer(Layer("case-1", "slide-a", "Case", "case", "token:p"))
    opened.create_layer(Layer("case-2", "slide-a", "Other", "case", "token:p"))
    try:
        yield opened
    finally:
        opened.close()


def point(x: float, y: float, layer: str = "case-1", **fields: Any) -> AnnotationIn:
    return AnnotationIn(
        "point", {"type": "Point", "coordinates": [x, y]}, (x, y, x, y), layer_id=layer, **fields
    )


def test_a_bbox_query_returns_what_meets_the_box_and_nothing_else(store: AnnotationStore) -> None:
    store.insert("slide-a", [point(10, 10, id="in"), point(500, 500, id="out")], [{}, {}], "a")
    store.insert("slide-b", [point(10, 10, id="other-slide")], [{}], "a")
    found, cursor = store.query("slide-a", ["case-1"], (0, 0, 100, 100))
    assert [a.id for a in found] == ["in"]
    assert cursor is None


def test_a_box_touching_an_edge_finds_it(store: AnnotationStore) -> None:
    store.insert("slide-a", [point(100, 100, id="edge")], [{}], "a")
    assert [a.id for a in store.query("slide-a", ["case-1"], (0, 0, 100, 100))[0]] == ["edge"]


def test_layers_and_class_filter(store: AnnotationStore) -> None:
    items = [point(1, 1, id="a", cls="tumour"), point(2, 2, "case-2", id="b", cls="stroma")]
    store.insert("slide-a", items, [{}, {}], "a")
    assert [a.id for a in store.query("slide-a", ["case-2"])[0]] == ["b"]
    assert [a.id for a in store.query("slide-a", ["case-1", "case-2"], cls="TUMOUR")[0]] == ["a"]


def test_pages_follow_the_cursor_to_the_end(store: AnnotationStore) -> None:
    items = [point(i, i, id=f"p{i:02}") for i in range(25)]
    store.insert("slide-a", items, [{}] * 25, "a")
    seen: list[str] = []
    after = 0
    while True:
        page, cursor = store.query("slide-a", ["case-1"], (0, 0, 30, 30), after=after, limit=10)
        seen += [a.id for a in page]
        if cursor is None:
            break
        after = cursor
    assert seen == [f"p{i:02}" for i in range(25)]


def test_a_retried_upload_stores_nothing_twice(store: AnnotationStore) -> None:
    first = store.insert("slide-a", [point(1, 1, id="x1"), point(2, 2, id="x2")], [{}, {}], "a")
    again = store.insert("slide-a", [point(1, 1, id="x1"), point(3, 3, id="x3")], [{}, {}], "a")
    assert (first.created, first.existing) == (("x1", "x2"), ())
    assert (again.created, again.existing) == (("x3",), ("x1",))
    assert len(store.query("slide-a", ["case-1"])[0]) == 3


def test_an_id_taken_on_another_slide_is_a_conflict(store: AnnotationStore) -> None:
    store.insert("slide-b", [point(1, 1, id="taken")], [{}], "a")
    with pytest.raises(Conflict):
        store.insert("slide-a", [point(1, 1, id="taken"), point(2, 2, id="new")], [{}, {}], "a")
    assert store.get("new") is None  # nothing half-written


def test_an_edit_of_a_stale_version_is_refused(store: AnnotationStore) -> None:
    store.insert("slide-a", [point(1, 1, id="e")], [{}], "alice")
    current = store.get("e")
    assert current is not None
    store.replace(current, point(5, 5, label="moved"), "case-1", {}, "alice", expected=1)
    with pytest.raises(PreconditionFailed):
        store.replace(current, point(9, 9), "case-1", {}, "bob", expected=1)
    stored = store.get("e")
    assert stored is not None and (stored.version, stored.label) == (2, "moved")


def test_every_version_is_kept_with_who_and_before_and_after(store: AnnotationStore) -> None:
    store.insert("slide-a", [point(1, 1, id="h", note="first")], [{}], "alice")
    current = store.get("h")
    assert current is not None
    changed = store.replace(current, point(2, 2, note="second"), "case-1", {}, "bob", 1)
    store.delete(changed, "carol", 2)
    slide, changes = store.history("h")
    assert slide == "slide-a"
    assert [(c.version, c.action, c.actor) for c in changes] == [
        (1, "create", "alice"),
        (2, "update", "bob"),
        (3, "delete", "carol"),
    ]
    assert changes[0].before is None and changes[0].after is not None
    assert changes[0].after["note"] == "first"
    assert changes[1].before == changes[0].after
    assert changes[1].after is not None and changes[1].after["geometry"]["coordinates"] == [2, 2]
    assert changes[2].before == changes[1].after and changes[2].after is None


def test_deletes_are_soft(store: AnnotationStore) -> None:
    store.insert("slide-a", [point(1, 1, id="d")], [{}], "a")
    current = store.get("d")
    assert current is not None
    store.delete(current, "a", 1)
    assert store.get("d") is None
    assert store.query("slide-a", ["case-1"])[0] == []
    with store.engine.connect() as conn:
        kept = conn.execute(text("SELECT deleted_at FROM annotations WHERE id = 'd'")).scalar()
    assert kept is not None
    with pytest.raises(AnnotationNotFound):
        store.delete(current, "a", 2)


def test_deleting_a_layer_hides_its_annotations(store: AnnotationStore) -> None:
    store.insert("slide-a", [point(1, 1, id="l1"), point(1, 1, "case-2", id="l2")], [{}, {}], "a")
    store.delete_layer("case-1", expected=1)
    assert store.layer("case-1") is None
    assert store.get("l1") is None and store.get("l2") is not None


def test_the_viewport_query_uses_the_spatial_index(store: AnnotationStore) -> None:
    grid = [point(x * 10.0, y * 10.0, id=f"g{x}-{y}") for x in range(50) for y in range(40)]
    store.insert("slide-a", grid, [{}] * len(grid), "a")
    if not store.sqlite:
        with store.writer.begin() as conn:
            conn.execute(text("ANALYZE annotations"))  # as autovacuum would, with real data
    stmt = store.query_statement("slide-a", ["case-1"], (0, 0, 10, 10), None, 0, 100)
    sql = str(stmt.compile(store.engine, compile_kwargs={"literal_binds": True}))
    with store.engine.connect() as conn:
        if store.sqlite:
            plan = " ".join(str(r[-1]) for r in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
            # The R*Tree drives the query; each hit is fetched by its primary key.
            assert plan.startswith("SCAN annotations_rtree VIRTUAL TABLE INDEX"), plan
            assert "USING INTEGER PRIMARY KEY" in plan, plan
        else:
            plan = " ".join(str(r[0]) for r in conn.execute(text(f"EXPLAIN {sql}")))
            assert "ix_annotations_box" in plan, plan


def test_the_pseudonym_key_is_stable(store: AnnotationStore, database_url: str) -> None:
    again = AnnotationStore.open(database_url)
    try:
        assert store.pseudonym_key() == again.pseudonym_key()
        assert len(store.pseudonym_key()) == 32
    finally:
        again.close()


def test_the_history_of_an_unchanged_annotation_shows_it_as_created(
    store: AnnotationStore,
) -> None:
    store.insert("slide-a", [point(7, 8, id="u", label="as drawn")], [{}], "alice")
    _, changes = store.history("u")
    assert [(c.version, c.action, c.before) for c in changes] == [(1, "create", None)]
    assert changes[0].after is not None
    assert (changes[0].after["label"], changes[0].after["geometry"]["coordinates"]) == (
        "as drawn",
        [7, 8],
    )


def centre_counts(
    boxes: list[tuple[float, float, float, float]],
    bbox: tuple[float, float, float, float],
    cols: int,
    rows: int,
) -> list[int]:
    """The density grid counted in Python: each box in the cell of its centre."""
    x0, y0, x1, y1 = bbox
    counts = [0] * (cols * rows)
    for bx0, by0, bx1, by1 in boxes:
        cx, cy = (bx0 + bx1) / 2.0, (by0 + by1) / 2.0
        if x0 <= cx <= x1 and y0 <= cy <= y1:
            ix = min(cols - 1, math.floor((cx - x0) * cols / (x1 - x0)))
            iy = min(rows - 1, math.floor((cy - y0) * rows / (y1 - y0)))
            counts[iy * cols + ix] += 1
    return counts


def box(x0: float, y0: float, x1: float, y1: float, **fields: Any) -> AnnotationIn:
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return AnnotationIn(
        "polygon", {"type": "Polygon", "coordinates": [ring]}, (x0, y0, x1, y1), **fields
    )


def test_the_density_grid_equals_a_count_of_the_features_centres(store: AnnotationStore) -> None:
    rng = random.Random(16)
    boxes = []
    for _ in range(3000):
        x, y = rng.uniform(-50, 2100), rng.uniform(-50, 1600)
        boxes.append((x, y, x + rng.uniform(0, 40), y + rng.uniform(0, 40)))
    items = [box(*b, layer_id="case-1", id=f"b{i}") for i, b in enumerate(boxes)]
    store.insert("slide-a", items, [{}] * len(items), "a")
    store.insert("slide-b", [box(10, 10, 20, 20, layer_id="case-1", id="elsewhere")], [{}], "a")
    for bbox, cols, rows in [
        ((0.0, 0.0, 2048.0, 1536.0), 64, 48),
        ((100.5, 200.25, 900.0, 700.0), 7, 3),
        ((0.0, 0.0, 2048.0, 1536.0), 1, 1),
        ((1000.0, 1000.0, 1001.0, 1001.0), 256, 256),
    ]:
        counts = store.density("slide-a", ["case-1"], bbox, cols, rows)
        assert counts == centre_counts(boxes, bbox, cols, rows), (bbox, cols, rows)
    assert sum(store.density("slide-a", ["case-1"], (0.0, 0.0, 2048.0, 1536.0), 1, 1)) > 2000


def test_the_density_grid_counts_only_the_layers_class_and_live_features_asked(
    store: AnnotationStore,
) -> None:
    items = [
        point(10, 10, id="a", cls="tumour"),
        point(30, 10, id="b", cls="stroma"),
        point(10, 30, "case-2", id="c", cls="tumour"),
        point(30, 30, id="gone", cls="tumour"),
    ]
    store.insert("slide-a", items, [{}] * 4, "a")
    gone = store.get("gone")
    assert gone is not None
    store.delete(gone, "a", gone.version)
    whole = (0.0, 0.0, 40.0, 40.0)
    assert store.density("slide-a", ["case-1"], whole, 2, 2) == [1, 1, 0, 0]
    assert store.density("slide-a", ["case-1", "case-2"], whole, 2, 2) == [1, 1, 1, 0]
    assert store.density("slide-a", ["case-1", "case-2"], whole, 2, 2, "TUMOUR") == [1, 0, 1, 0]
    assert store.density("slide-a", [], whole, 2, 2) == [0, 0, 0, 0]
