"""Annotations and layers in the catalog database (SQLite or PostgreSQL), versioned.

Writes are transactions on the writer engine (``BEGIN IMMEDIATE`` on SQLite): an upload of
100,000 features is one ``executemany`` (SQLAlchemy's batched ``INSERT ... VALUES``), its history
rows another, its idempotency record a third, all or nothing. Edits compare the version they
replace (optimistic concurrency): ``UPDATE ... WHERE version = :expected``; no row means a lost
update (:class:`~slideserver.errors.PreconditionFailed`). Deletes are soft (``deleted_at``).
Viewport queries use the spatial index the migration made (see :mod:`.schema`). Blocking:
called from worker threads.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    Engine,
    Float,
    Integer,
    MetaData,
    Table,
    and_,
    cast,
    func,
    select,
    update,
)
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.sql import Select

from slideserver.annotations import migrations
from slideserver.annotations.model import (
    PERSONAL,
    Annotation,
    AnnotationIn,
    Change,
    Layer,
)
from slideserver.annotations.schema import annotation_table, layers, requests, versions
from slideserver.annotations.schema import secrets as secrets_table
from slideserver.db.engine import make_engine, now, writer
from slideserver.db.upsert import dialect_insert, insert_ignore
from slideserver.errors import Conflict, NotFound, PreconditionFailed

_RTREE = Table(
    "annotations_rtree",
    MetaData(),
    Column("seq", Integer, primary_key=True),
    Column("min_x", Float),
    Column("max_x", Float),
    Column("min_y", Float),
    Column("max_y", Float),
)
"""SQLite's R*Tree (made by the migration, not part of the schema metadata)."""
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"
"""How SQLAlchemy stores a datetime in SQLite (bulk inserts write it the same way)."""
ID_CHUNK = 500
"""Ids per ``IN (...)`` lookup (SQLite's parameter limit is far above; PostgreSQL's too)."""


class AnnotationNotFound(NotFound):
    """No annotation (or no longer: deleted) with that id."""

    code = "annotation_not_found"


class LayerNotFound(NotFound):
    """No annotation layer with that id."""

    code = "layer_not_found"


@dataclass(frozen=True)
class Inserted:
    """What an upload did: ids stored now, and ids that were already there (a retry)."""

    created: tuple[str, ...]
    existing: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"created": list(self.created), "existing": list(self.existing)}


@dataclass(frozen=True)
class Measured:
    """Measurements to store with one annotation (``None``: the slide has no MPP)."""

    values: dict[str, float] | None


def snapshot(item: AnnotationIn | Annotation, layer_id: str) -> dict[str, Any]:
    """The part of an annotation a version records (what a client can change)."""
    return {
        "kind": item.kind,
        "geometry": item.geometry,
        "class": item.cls,
        "label": item.label,
        "note": item.note,
        "colour": item.colour,
        "layer": layer_id,
        "extra": item.extra or None,
    }


def _dump(value: Any) -> str:
    """JSON as stored; NaN allowed (QuPath writes NaN measurements, and they come back)."""
    return json.dumps(value, separators=(",", ":"))


ANNOTATION_COLUMNS = (
    "id",
    "slide_id",
    "layer_id",
    "kind",
    "cls",
    "label",
    "note",
    "colour",
    "author",
    "version",
    "created_at",
    "updated_at",
    "geometry",
    "extra",
    "min_x",
    "min_y",
    "max_x",
    "max_y",
    "measured",
    "length_um",
    "area_um2",
    "perimeter_um",
)
VERSION_COLUMNS = ("annotation_id", "version", "action", "actor", "at", "before", "after")


def bulk_insert(
    conn: Connection, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """Insert many rows fast: PostgreSQL ``COPY``, SQLite one ``executemany``.

    Below SQLAlchemy's per-row parameter processing, so values must be what the driver takes:
    for SQLite, datetimes as SQLAlchemy writes them (:data:`SQLITE_TIME`) and booleans as 0/1.
    """
    names = ", ".join(columns)
    if conn.dialect.name == "postgresql":
        driver = conn.connection.driver_connection
        assert driver is not None
        cursor = driver.cursor()  # type: ignore[attr-defined]
        with cursor, cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join("?" for _ in columns)
    conn.exec_driver_sql(f"INSERT INTO {table} ({names}) VALUES ({marks})", list(rows))


def _measure_columns(measured: dict[str, float] | None) -> dict[str, Any]:
    values = measured or {}
    return {
        "measured": measured is not None,
        "length_um": values.get("length_um"),
        "area_um2": values.get("area_um2"),
        "perimeter_um": values.get("perimeter_um"),
    }


def _measurements(row: RowMapping) -> dict[str, float] | None:
    if not row["measured"]:
        return None
    out: dict[str, float] = {}
    if row["length_um"] is not None:
        out["length_um"] = float(row["length_um"])
    if row["area_um2"] is not None:
        out["area_um2"] = float(row["area_um2"])
        out["area_mm2"] = float(row["area_um2"]) / 1_000_000.0
    if row["perimeter_um"] is not None:
        out["perimeter_um"] = float(row["perimeter_um"])
    return out


def _utc(value: datetime | None) -> datetime | None:
    """SQLite gives stored UTC times back without their zone."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _annotation(row: RowMapping) -> Annotation:
    return Annotation(
        id=row["id"],
        slide_id=row["slide_id"],
        layer_id=row["layer_id"],
        kind=row["kind"],
        geometry=json.loads(row["geometry"]),
        bbox=(row["min_x"], row["min_y"], row["max_x"], row["max_y"]),
        cls=row["cls"],
        label=row["label"],
        note=row["note"],
        colour=row["colour"],
        author=row["author"],
        version=row["version"],
        created_at=_utc(row["created_at"]),
        updated_at=_utc(row["updated_at"]),
        measurements=_measurements(row),
        extra=json.loads(row["extra"]) if row["extra"] else {},
    )


def _layer(row: RowMapping) -> Layer:
    return Layer(
        id=row["id"],
        slide_id=row["slide_id"],
        name=row["name"],
        kind=row["kind"],
        owner=row["owner"],
        research_safe=bool(row["research_safe"]),
        grants=tuple(json.loads(row["grants"] or "[]")),
        locked=bool(row["locked"]),
        version=row["version"],
        created_at=_utc(row["created_at"]),
        updated_at=_utc(row["updated_at"]),
    )


def personal_layer_id(slide_id: str, subject: str) -> str:
    """The id of ``subject``'s personal layer on a slide (stable: made on first use)."""
    digest = hashlib.sha256(f"{slide_id}\0{subject}".encode()).hexdigest()[:32]
    return f"personal-{digest}"


class AnnotationStore:
    """Layers, annotations and their history over one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.writer = writer(engine)
        self.sqlite = engine.dialect.name == "sqlite"
        self._pseudonym_key: bytes | None = None

    @classmethod
    def open(cls, url: str) -> AnnotationStore:
        """Open the database at ``url`` and migrate the annotation tables (blocking)."""
        engine = make_engine(url)
        migrations.upgrade(writer(engine))
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    # -- pseudonyms --

    def pseudonym_key(self) -> bytes:
        """The random key of authors' pseudonyms (made once per database)."""
        if self._pseudonym_key is None:
            with self.writer.begin() as conn:
                fresh = {"name": "pseudonym_key", "value": secrets.token_hex(32)}
                stmt = dialect_insert(conn, secrets_table).values(**fresh)
                conn.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))
                value = conn.execute(
                    select(secrets_table.c.value).where(secrets_table.c.name == "pseudonym_key")
                ).scalar_one()
            self._pseudonym_key = bytes.fromhex(value)
        return self._pseudonym_key

    # -- layers --

    def layer(self, layer_id: str) -> Layer | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(layers).where(layers.c.id == layer_id, layers.c.deleted_at.is_(None))
                )
                .mappings()
                .first()
            )
        return _layer(row) if row is not None else None

    def layers(self, slide_id: str) -> list[Layer]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(layers)
                .where(layers.c.slide_id == slide_id, layers.c.deleted_at.is_(None))
                .order_by(layers.c.created_at, layers.c.id)
            ).mappings()
            return [_layer(r) for r in rows]

    def create_layer(self, layer: Layer) -> tuple[Layer, bool]:
        """Store a new layer; a layer with the same id already on this slide is returned as it
        is (a retry), on another slide it is a :class:`Conflict`. Says whether it is new."""
        at = now()
        values = {
            "id": layer.id,
            "slide_id": layer.slide_id,
            "name": layer.name,
            "kind": layer.kind,
            "owner": layer.owner,
            "research_safe": layer.research_safe,
            "locked": layer.locked,
            "grants": _dump(list(layer.grants)),
            "version": 1,
            "created_at": at,
            "updated_at": at,
        }
        with self.writer.begin() as conn:
            created = insert_ignore(conn, layers, values, ["id"])
            row = conn.execute(select(layers).where(layers.c.id == layer.id)).mappings().one()
        stored = _layer(row)
        if stored.slide_id != layer.slide_id or row["deleted_at"] is not None:
            raise Conflict(f"layer id {layer.id!r} is taken")
        return stored, created

    def personal_layer(self, slide_id: str, subject: str) -> Layer:
        """Return ``subject``'s personal layer on the slide, made on first use."""
        layer_id = personal_layer_id(slide_id, subject)
        found = self.layer(layer_id)
        if found is not None:
            return found
        mine = Layer(layer_id, slide_id, "My annotations", PERSONAL, subject)
        return self.create_layer(mine)[0]

    def update_layer(self, layer: Layer, expected: int | None) -> Layer:
        """Replace a layer's name, flags and grants; ``expected``: the version it replaces."""
        where = [layers.c.id == layer.id, layers.c.deleted_at.is_(None)]
        if expected is not None:
            where.append(layers.c.version == expected)
        values = {
            "name": layer.name,
            "research_safe": layer.research_safe,
            "locked": layer.locked,
            "grants": _dump(list(layer.grants)),
            "version": layers.c.version + 1,
            "updated_at": now(),
        }
        with self.writer.begin() as conn:
            done = conn.execute(update(layers).where(*where).values(**values)).rowcount
        if not done:
            self._missing_or_stale_layer(layer.id)
        found = self.layer(layer.id)
        if found is None:
            raise LayerNotFound(f"no annotation layer {layer.id!r}")
        return found

    def delete_layer(self, layer_id: str, expected: int | None) -> None:
        """Soft-delete a layer and its annotations."""
        at = now()
        where = [layers.c.id == layer_id, layers.c.deleted_at.is_(None)]
        if expected is not None:
            where.append(layers.c.version == expected)
        with self.writer.begin() as conn:
            done = conn.execute(
                update(layers).where(*where).values(deleted_at=at, version=layers.c.version + 1)
            ).rowcount
            if done:
                conn.execute(
                    update(annotation_table)
                    .where(
                        annotation_table.c.layer_id == layer_id,
                        annotation_table.c.deleted_at.is_(None),
                    )
                    .values(deleted_at=at)
                )
        if not done:
            self._missing_or_stale_layer(layer_id)

    def _missing_or_stale_layer(self, layer_id: str) -> None:
        if self.layer(layer_id) is None:
            raise LayerNotFound(f"no annotation layer {layer_id!r}")
        raise PreconditionFailed("the layer changed since that version; read it again")

    # -- annotations --

    def insert(
        self,
        slide_id: str,
        items: Sequence[AnnotationIn],
        measured: Sequence[dict[str, float] | None],
        author: str,
        request: tuple[str, str] | None = None,
    ) -> Inserted:
        """Store new annotations (each ``layer_id`` already resolved and allowed).

        Ids given by the client that are already stored on this slide are skipped (a retry);
        on another slide they are a :class:`Conflict`. ``request``: (key, digest) of an
        ``Idempotency-Key``, recorded with the result in the same transaction.
        """
        at = now()
        sqlite = self.sqlite
        # Values as the driver takes them (bulk_insert bypasses SQLAlchemy's type processing).
        stamp: Any = at.strftime(SQLITE_TIME) if sqlite else at
        ids = [item.id or str(uuid.uuid4()) for item in items]
        with self.writer.begin() as conn:
            given = [str(item.id) for item in items if item.id]
            existing = self._existing(conn, slide_id, given) if given else set()
            rows = []
            history = []
            created = []
            for item, item_id, values in zip(items, ids, measured, strict=True):
                if item_id in existing:
                    continue
                created.append(item_id)
                geometry = _dump(item.geometry)
                extra = _dump(item.extra) if item.extra else None
                m = values or {}
                rows.append(
                    (
                        item_id,
                        slide_id,
                        item.layer_id,
                        item.kind,
                        item.cls,
                        item.label,
                        item.note,
                        item.colour,
                        author,
                        1,
                        stamp,
                        stamp,
                        geometry,
                        extra,
                        *item.bbox,
                        int(values is not None) if sqlite else values is not None,
                        m.get("length_um"),
                        m.get("area_um2"),
                        m.get("perimeter_um"),
                    )
                )
                # The created state is not copied: history() reads it from the next version's
                # "before", or from the row itself while it is unchanged (one JSON per feature).
                history.append((item_id, 1, "create", author, stamp, None, None))
            if rows:
                bulk_insert(conn, annotation_table.name, ANNOTATION_COLUMNS, rows)
                bulk_insert(conn, versions.name, VERSION_COLUMNS, history)
            result = Inserted(tuple(created), tuple(sorted(existing)))
            if request is not None:
                conn.execute(
                    requests.insert(),
                    {
                        "key": request[0],
                        "digest": request[1],
                        "result": _dump(result.to_json()),
                        "created_at": at,
                    },
                )
        return result

    def _existing(self, conn: Connection, slide_id: str, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), ID_CHUNK):
            chunk = ids[start : start + ID_CHUNK]
            for row in conn.execute(
                select(annotation_table.c.id, annotation_table.c.slide_id).where(
                    annotation_table.c.id.in_(chunk)
                )
            ):
                if row.slide_id != slide_id:
                    raise Conflict(f"annotation id {row.id!r} is taken")
                found.add(row.id)
        return found

    def recall(self, key: str) -> tuple[str, dict[str, Any]] | None:
        """Return (digest, result) of an upload already answered under ``key``."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(requests.c.digest, requests.c.result).where(requests.c.key == key)
            ).first()
        return (row.digest, json.loads(row.result)) if row is not None else None

    def get(self, annotation_id: str) -> Annotation | None:
        """Return a live annotation (``None`` when unknown or deleted)."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(annotation_table).where(
                        annotation_table.c.id == annotation_id,
                        annotation_table.c.deleted_at.is_(None),
                    )
                )
                .mappings()
                .first()
            )
        return _annotation(row) if row is not None else None

    def many(self, ids: Sequence[str]) -> list[Annotation]:
        """Return the live annotations among ``ids``, in their order."""
        found: dict[str, Annotation] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), ID_CHUNK):
                chunk = list(ids[start : start + ID_CHUNK])
                rows = conn.execute(
                    select(annotation_table).where(
                        annotation_table.c.id.in_(chunk), annotation_table.c.deleted_at.is_(None)
                    )
                ).mappings()
                found.update((r["id"], _annotation(r)) for r in rows)
        return [found[i] for i in ids if i in found]

    def query(
        self,
        slide_id: str,
        layer_ids: Sequence[str],
        bbox: tuple[float, float, float, float] | None = None,
        cls: str | None = None,
        after: int = 0,
        limit: int = 1000,
    ) -> tuple[list[Annotation], int | None]:
        """Return one page of live annotations of ``layer_ids`` on the slide, in storage order,
        optionally only those whose bbox meets ``bbox`` (x0, y0, x1, y1) and of class ``cls``;
        and the cursor of the next page (``None``: this was the last)."""
        if not layer_ids:
            return [], None
        stmt = self.query_statement(slide_id, layer_ids, bbox, cls, after, limit + 1)
        with self.engine.connect() as conn:
            rows = list(conn.execute(stmt).mappings())
        more = len(rows) > limit
        rows = rows[:limit]
        return [_annotation(r) for r in rows], (int(rows[-1]["seq"]) if more and rows else None)

    def query_statement(
        self,
        slide_id: str,
        layer_ids: Sequence[str],
        bbox: tuple[float, float, float, float] | None,
        cls: str | None,
        after: int,
        limit: int,
    ) -> Select[Any]:
        """The SELECT of :meth:`query` (its tests EXPLAIN it to see the index used)."""
        t = annotation_table
        # With a bbox on SQLite, the R*Tree must drive the query: ``|| ''`` keeps the planner
        # off the slide and layer indexes (it would walk all of a slide's rows otherwise).
        unindexed = bbox is not None and self.sqlite
        slide = t.c.slide_id.concat("") if unindexed else t.c.slide_id
        layer = t.c.layer_id.concat("") if unindexed else t.c.layer_id
        where: list[Any] = [
            slide == slide_id,
            t.c.deleted_at.is_(None),
            t.c.seq > after,
            layer.in_(list(layer_ids)),
        ]
        if cls is not None:
            where.append(func.lower(t.c.cls) == cls.lower())
        stmt = select(t)
        if bbox is not None:
            x0, y0, x1, y1 = bbox
            where += [t.c.max_x >= x0, t.c.min_x <= x1, t.c.max_y >= y0, t.c.min_y <= y1]
            if self.sqlite:
                r = _RTREE
                stmt = stmt.join(r, r.c.seq == t.c.seq)
                where += [r.c.max_x >= x0, r.c.min_x <= x1, r.c.max_y >= y0, r.c.min_y <= y1]
            else:
                box = func.box(func.point(t.c.min_x, t.c.min_y), func.point(t.c.max_x, t.c.max_y))
                query_box = func.box(func.point(x0, y0), func.point(x1, y1))
                where.append(box.op("&&")(query_box))
        return stmt.where(and_(*where)).order_by(t.c.seq).limit(limit)

    def density(
        self,
        slide_id: str,
        layer_ids: Sequence[str],
        bbox: tuple[float, float, float, float],
        cols: int,
        rows: int,
        cls: str | None = None,
    ) -> list[int]:
        """Count live annotations of ``layer_ids`` per cell of a ``cols`` x ``rows`` grid over
        ``bbox`` (row-major), each in the cell holding its bbox centre; centres outside
        ``bbox`` are not counted, those on its right or bottom edge go to the last cell.

        One ``GROUP BY`` of integer cell indexes over the spatial index's candidates: the
        database sends back at most a few cells per grid cell, never the features."""
        counts = [0] * (cols * rows)
        if not layer_ids:
            return counts
        x0, y0, x1, y1 = bbox
        base = self.query_statement(slide_id, layer_ids, bbox, cls, 0, 1).limit(None).order_by(None)
        t = annotation_table
        cx = (t.c.min_x + t.c.max_x) / 2.0
        cy = (t.c.min_y + t.c.max_y) / 2.0
        fx = (cx - x0) * cols / (x1 - x0)
        fy = (cy - y0) * rows / (y1 - y0)
        # Centres are >= the origin here, so SQLite's truncating CAST is a floor.
        ix = cast(fx if self.sqlite else func.floor(fx), Integer).label("ix")
        iy = cast(fy if self.sqlite else func.floor(fy), Integer).label("iy")
        inside = and_(cx >= x0, cx <= x1, cy >= y0, cy <= y1)
        stmt = (
            base.with_only_columns(ix, iy, func.count().label("n")).where(inside).group_by(ix, iy)
        )
        with self.engine.connect() as conn:
            for gx, gy, n in conn.execute(stmt):
                counts[min(int(gy), rows - 1) * cols + min(int(gx), cols - 1)] += int(n)
        return counts

    def iterate(
        self, slide_id: str, layer_ids: Sequence[str], page: int = 5000
    ) -> Iterator[Annotation]:
        """Every live annotation of ``layer_ids`` on the slide (exports), page by page."""
        after = 0
        while True:
            items, cursor = self.query(slide_id, layer_ids, after=after, limit=page)
            yield from items
            if cursor is None:
                return
            after = cursor

    def replace(
        self,
        current: Annotation,
        item: AnnotationIn,
        layer_id: str,
        measured: dict[str, float] | None,
        actor: str,
        expected: int,
    ) -> Annotation:
        """Replace an annotation's content if it is still at version ``expected``."""
        at = now()
        after = snapshot(item, layer_id)
        values = {
            "layer_id": layer_id,
            "kind": item.kind,
            "cls": item.cls,
            "label": item.label,
            "note": item.note,
            "colour": item.colour,
            "geometry": _dump(item.geometry),
            "extra": _dump(item.extra) if item.extra else None,
            "min_x": item.bbox[0],
            "min_y": item.bbox[1],
            "max_x": item.bbox[2],
            "max_y": item.bbox[3],
            "version": expected + 1,
            "updated_at": at,
            **_measure_columns(measured),
        }
        self._change(current, expected, values, "update", actor, at, after)
        found = self.get(current.id)
        if found is None:  # pragma: no cover - deleted between the two statements
            raise AnnotationNotFound(f"no annotation {current.id!r}")
        return found

    def delete(self, current: Annotation, actor: str, expected: int) -> None:
        """Soft-delete an annotation if it is still at version ``expected``."""
        at = now()
        self._change(
            current,
            expected,
            {"deleted_at": at, "version": expected + 1},
            "delete",
            actor,
            at,
            None,
        )

    def _change(
        self,
        current: Annotation,
        expected: int,
        values: dict[str, Any],
        action: str,
        actor: str,
        at: Any,
        after: dict[str, Any] | None,
    ) -> None:
        t = annotation_table
        with self.writer.begin() as conn:
            done = conn.execute(
                update(t)
                .where(t.c.id == current.id, t.c.version == expected, t.c.deleted_at.is_(None))
                .values(**values)
            ).rowcount
            if done:
                conn.execute(
                    versions.insert(),
                    {
                        "annotation_id": current.id,
                        "version": expected + 1,
                        "action": action,
                        "actor": actor,
                        "at": at,
                        "before": _dump(snapshot(current, current.layer_id)),
                        "after": _dump(after) if after is not None else None,
                    },
                )
        if not done:
            if self.get(current.id) is None:
                raise AnnotationNotFound(f"no annotation {current.id!r}")
            raise PreconditionFailed(
                "the annotation changed since that version (a lost update); read it again"
            )

    def history(self, annotation_id: str) -> tuple[str | None, list[Change]]:
        """Return the slide and every version of an annotation (deleted ones too), oldest first."""
        with self.engine.connect() as conn:
            slide = conn.execute(
                select(annotation_table.c.slide_id).where(annotation_table.c.id == annotation_id)
            ).scalar()
            rows = conn.execute(
                select(versions)
                .where(versions.c.annotation_id == annotation_id)
                .order_by(versions.c.version)
            ).mappings()
            changes = [
                Change(
                    annotation_id=r["annotation_id"],
                    version=r["version"],
                    action=r["action"],
                    actor=r["actor"],
                    at=_utc(r["at"]) or r["at"],
                    before=json.loads(r["before"]) if r["before"] else None,
                    after=json.loads(r["after"]) if r["after"] else None,
                )
                for r in rows
            ]
            if changes and changes[0].action == "create" and changes[0].after is None:
                after = changes[1].before if len(changes) > 1 else None
                if after is None:
                    row = (
                        conn.execute(
                            select(annotation_table).where(annotation_table.c.id == annotation_id)
                        )
                        .mappings()
                        .first()
                    )
                    stored = _annotation(row) if row is not None else None
                    after = snapshot(stored, stored.layer_id) if stored is not None else None
                changes[0] = replace(changes[0], after=after)
        return slide, changes

    def layer_of_deleted(self, annotation_id: str) -> str | None:
        """The layer of an annotation, deleted or not (history reads need it)."""
        with self.engine.connect() as conn:
            value = conn.execute(
                select(annotation_table.c.layer_id).where(annotation_table.c.id == annotation_id)
            ).scalar()
        return str(value) if value is not None else None

    def layer_any(self, layer_id: str) -> Layer | None:
        """A layer, deleted or not."""
        with self.engine.connect() as conn:
            row = conn.execute(select(layers).where(layers.c.id == layer_id)).mappings().first()
        return _layer(row) if row is not None else None
