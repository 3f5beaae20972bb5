"""Annotations over HTTP: GeoJSON in and out, layers, history, import and export.

- ``GET /api/slides/{slide_id}/annotations?bbox=x0,y0,x1,y1&layer=&class=&limit=&cursor=``: a
  FeatureCollection of the layers the caller may read, one page (``limit``, default 1000, at
  most 10,000); ``next`` (and ``links[rel=next]``) is the URL of the next page, ``null`` on the
  last. ``layer`` may be repeated or comma-separated.
- ``GET /api/slides/{slide_id}/annotations/density?bbox=&cols=&rows=&layer=&class=``: counts
  of the same features per cell of a grid over ``bbox`` (by bbox centre), for heat maps.
- ``POST /api/slides/{slide_id}/annotations``: one Feature (answered 201 with the stored Feature
  and its ETag) or a FeatureCollection of up to 100,000 (answered ``{"created": [ids],
  "existing": [ids]}``, 201 when anything was stored). Idempotent: by the features' own ``id``
  (a retry stores nothing twice) and by an ``Idempotency-Key`` header (a retry gets the first
  answer). A feature without ``properties.layer`` goes to the caller's personal layer.
- ``GET/PUT/DELETE /api/annotations/{annotation_id}``: the Feature with ``ETag: "<version>"``;
  PUT (a whole Feature) and DELETE need ``If-Match`` with the version they replace: 428
  without it, 412 when it is no longer current (a lost update). Deletes are soft.
- ``GET /api/annotations/{annotation_id}/history``: every version, who and when, before/after.
- ``GET/POST /api/slides/{slide_id}/annotation-layers``, ``PUT/DELETE
  /api/annotation-layers/{layer_id}`` (``If-Match`` optional there).
- ``POST /api/slides/{slide_id}/annotations/import?format=qupath|geojson|csv&layer=`` (every
  imported feature goes to ``layer`` when given) and
  ``GET /api/slides/{slide_id}/annotations/export?format=qupath|geojson|csv&layer=``.

Bodies are capped at ``annotation_max_body`` bytes (413 above) and parsed off the event loop.
Researchers see authors as pseudonyms, and notes and imported properties only on layers marked
research-safe. The rules of who may read and write what are :mod:`slideserver.annotations.access`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

from anyio.to_thread import run_sync
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from slideserver.annotations import csv_points, geojson, qupath
from slideserver.annotations.access import (
    Caller,
    can_create_layer,
    can_edit,
    can_manage,
    can_read,
    can_write,
)
from slideserver.annotations.measure import NO_MPP, measure
from slideserver.annotations.model import LAYER_KINDS, Annotation, AnnotationIn, Layer, SlideFrame
from slideserver.annotations.store import AnnotationNotFound, AnnotationStore, LayerNotFound
from slideserver.annotations.validate import (
    InvalidAnnotation,
    check_feature,
    check_features,
    check_id,
    features_of,
    known_classes,
    plain_text,
)
from slideserver.api.bodies import BodyTooLarge, parse_json, read_body
from slideserver.api.openapi import INTEGER, Body, Param, Reply, Schema, json_reply, operation, ref
from slideserver.api.params import parse_int
from slideserver.api.state import state_of
from slideserver.db.engine import default_database_url
from slideserver.errors import (
    BackendUnavailable,
    BadRequest,
    Conflict,
    Forbidden,
    PreconditionRequired,
    SlideNotFound,
    TooLarge,
    Unprocessable,
)
from slideserver.security.audit import note_subjects
from slideserver.security.authority import principal_of
from slideserver.security.deidentify import pseudonym
from slideserver.security.principals import ADMIN, PATHOLOGIST, Principal
from slideserver.settings import Settings

MAX_FEATURES = 100_000
"""Most features in one upload or import."""
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
GEOJSON = "application/geo+json"
NO_STORE = {"Cache-Control": "no-store"}
FORMATS = ("qupath", "geojson", "csv")
MAX_KEY = 200
"""Longest ``Idempotency-Key`` accepted."""


# -- the description (docs/architecture.md, "The API description") --

TAG = "annotations"
FEATURE = ref("GeoJsonFeature")
COLLECTION = ref("GeoJsonFeatureCollection")
FEATURE_OR_COLLECTION: dict[str, Any] = {"oneOf": [FEATURE, COLLECTION]}
NO_STORE_HEADER = {"Cache-Control": "no-store"}
VERSIONED = {**NO_STORE_HEADER, "ETag": 'The version, quoted ("3"); send it in If-Match'}
STORED_IDS: dict[str, Any] = {
    "type": "object",
    "required": ["created", "existing"],
    "properties": {
        "created": {"type": "array", "items": {"type": "string"}},
        "existing": {"type": "array", "items": {"type": "string"}},
    },
}
LAYER: dict[str, Any] = {
    "type": "object",
    "required": ["id", "slide", "name", "kind", "owner", "version"],
    "properties": {
        "id": {"type": "string"},
        "slide": {"type": "string"},
        "name": {"type": "string"},
        "kind": {"enum": list(LAYER_KINDS)},
        "owner": {"type": "string", "description": "A pseudonym for researchers"},
        "research_safe": {"type": "boolean"},
        "locked": {"type": "boolean"},
        "grants": {"type": "array", "items": {"type": "string"}},
        "version": {"type": "integer"},
        "writable": {"type": "boolean"},
        "created": {"type": ["string", "null"]},
        "updated": {"type": ["string", "null"]},
    },
}
LAYER_FIELDS: dict[str, Any] = {
    "name": {"type": "string", "minLength": 1, "maxLength": 200},
    "research_safe": {"type": "boolean"},
    "locked": {"type": "boolean"},
    "grants": {"type": "array", "maxItems": 1000, "items": {"type": "string", "maxLength": 200}},
}
LAYER_IN: dict[str, Any] = {
    "type": "object",
    "required": ["name", "kind"],
    "properties": {
        "id": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,64}$"},
        "kind": {"enum": list(LAYER_KINDS)},
        **LAYER_FIELDS,
    },
}
LAYER_CHANGE: dict[str, Any] = {"type": "object", "properties": LAYER_FIELDS}
HISTORY: dict[str, Any] = {
    "type": "object",
    "required": ["id", "items"],
    "properties": {
        "id": {"type": "string"},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "version": {"type": "integer"},
                    "action": {"type": "string"},
                    "actor": {"type": "string"},
                    "at": {"type": "string"},
                    "before": {"type": ["object", "null"]},
                    "after": {"type": ["object", "null"]},
                },
            },
        },
    },
}
LAYERS: dict[str, Any] = {
    "type": "object",
    "required": ["slide", "layers"],
    "properties": {"slide": {"type": "string"}, "layers": {"type": "array", "items": LAYER}},
}
LAYER_PARAM = Param(
    "layer", "Only these layers (repeated or comma-separated layer IDs)", {"type": "string"}
)
FORMAT_PARAM = Param("format", "The file format (default geojson)", {"enum": list(FORMATS)})
IDEMPOTENCY_KEY = Param(
    "Idempotency-Key",
    "A retry with the same key and body gets the first answer; another body, 409",
    {"type": "string", "minLength": 1, "maxLength": MAX_KEY},
    where="header",
)
IF_MATCH = Param(
    "If-Match",
    "The ETag of the version this change replaces (or *)",
    {"type": "string"},
    where="header",
)
IF_MATCH_REQUIRED = Param(
    "If-Match",
    "The ETag of the version this change replaces (or *): 428 without it, 412 when stale",
    {"type": "string"},
    where="header",
    required=True,
)
GEOJSON_BODY = {"application/json": FEATURE_OR_COLLECTION, GEOJSON: FEATURE_OR_COLLECTION}


def _feature_reply(description: str, location: bool = False) -> Reply:
    headers = {**VERSIONED, "Location": "The annotation's URL"} if location else VERSIONED
    return Reply(description, {GEOJSON: FEATURE}, headers)


def open_store(settings: Settings) -> AnnotationStore:
    """Open the annotation store in the catalog database, migrated (the lifespan's; blocking)."""
    return AnnotationStore.open(default_database_url(settings))


def store_of(request: Request) -> AnnotationStore:
    """The annotation store the lifespan opened."""
    store = getattr(request.app.state, "annotations", None)
    if not isinstance(store, AnnotationStore):
        raise BackendUnavailable("the annotation store is not open")
    return store


def caller_of(principal: Principal) -> Caller:
    return Caller(
        subject=principal.subject,
        admin=principal.role == ADMIN,
        clinical=principal.role == PATHOLOGIST,
    )


class Viewer:
    """How one caller sees annotations: pseudonyms and hidden notes for researchers."""

    def __init__(self, caller: Caller, key: bytes) -> None:
        self.caller = caller
        self.key = key

    def person(self, subject: str) -> str:
        if not self.caller.researcher or subject == self.caller.subject:
            return subject
        return pseudonym(subject, self.key)

    def feature(self, annotation: Annotation, layer: Layer) -> dict[str, Any]:
        safe = not self.caller.researcher or layer.research_safe
        return geojson.feature(
            annotation,
            author=self.person(annotation.author),
            show_note=safe,
            show_extra=safe,
        )

    def layer(self, layer: Layer) -> dict[str, Any]:
        return {
            "id": layer.id,
            "slide": layer.slide_id,
            "name": layer.name,
            "kind": layer.kind,
            "owner": self.person(layer.owner),
            "research_safe": layer.research_safe,
            "locked": layer.locked,
            "grants": [self.person(g) for g in layer.grants],
            "version": layer.version,
            "writable": can_write(layer, self.caller),
            "created": layer.created_at.isoformat() if layer.created_at else None,
            "updated": layer.updated_at.isoformat() if layer.updated_at else None,
        }


async def viewer_of(request: Request, store: AnnotationStore) -> Viewer:
    caller = caller_of(principal_of(request))
    return Viewer(caller, await run_sync(store.pseudonym_key))


def json_response(
    data: Any, status: int = 200, media_type: str = "application/json", **headers: str
) -> Response:
    body = json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
    return Response(body, status, media_type=media_type, headers={**NO_STORE, **headers})


async def big_json_response(data: Any, media_type: str = GEOJSON) -> Response:
    """Serialize a large answer off the event loop."""
    body = await run_sync(lambda: json.dumps(data, separators=(",", ":"), allow_nan=False))
    return Response(body.encode(), media_type=media_type, headers=NO_STORE)


def etag(version: int) -> str:
    return f'"{version}"'


def if_match(request: Request, current: int, required: bool) -> int | None:
    """The version ``If-Match`` names (``*``: the current one); 428 when required and absent."""
    header = request.headers.get("if-match", "").strip()
    if not header:
        if required:
            raise PreconditionRequired(
                "send If-Match with the ETag of the version this change replaces"
            )
        return None
    if header == "*":
        return current
    for tag in header.split(","):
        tag = tag.strip().removeprefix("W/").strip('"')
        if tag.isdigit() and len(tag) < 10:
            return int(tag)
    return -1  # names no version that exists: a lost update (412)


# -- slides and layers --


async def slide_frame(request: Request, slide_id: str) -> SlideFrame:
    """The slide's size and MPP, from the catalog; 404 when it is not indexed."""
    catalog = state_of(request).catalog
    record = await run_sync(catalog.get, slide_id)
    if record is None or not record.width or not record.height:
        raise SlideNotFound(f"no slide with id {slide_id[:100]!r}")
    return SlideFrame(record.width, record.height, record.mpp_x, record.mpp_y)


async def see_slide(request: Request, slide_id: str) -> None:
    """For routes that name an annotation or a layer, not a slide: the caller's collections
    must hold the slide, and the audit row names its case and patient."""
    security = request.app.state.security
    principal = principal_of(request)
    if principal.collections and not await security.slide_visible(principal, slide_id):
        raise SlideNotFound(f"no slide with id {slide_id[:100]!r}")
    case, patient = await security.slide_subjects(slide_id)
    note_subjects(request.scope, case, patient)


async def readable_layers(store: AnnotationStore, slide_id: str, caller: Caller) -> list[Layer]:
    return [layer for layer in await run_sync(store.layers, slide_id) if can_read(layer, caller)]


def requested_layers(request: Request) -> list[str]:
    values = request.query_params.getlist("layer")
    names = [v.strip() for value in values for v in value.split(",") if v.strip()]
    return [check_id(name, "layer") for name in names]


def parse_bbox(raw: str | None) -> tuple[float, float, float, float] | None:
    if raw is None or raw == "":
        return None
    parts = raw.split(",")
    try:
        x0, y0, x1, y1 = (float(p) for p in parts)
    except ValueError:
        raise BadRequest("bbox must be x0,y0,x1,y1 (level-0 pixels)") from None
    if not all(abs(v) < 1e12 for v in (x0, y0, x1, y1)) or x1 < x0 or y1 < y0:
        raise BadRequest("bbox must be finite x0,y0,x1,y1 with x0 <= x1 and y0 <= y1")
    return x0, y0, x1, y1


# -- reading --


@operation(
    "One page of a slide's annotations, as GeoJSON",
    tag=TAG,
    params=(
        Param("bbox", "Only those meeting x0,y0,x1,y1 (level-0 pixels)", {"type": "string"}),
        LAYER_PARAM,
        Param("class", "Only this class", {"type": "string"}),
        Param(
            "limit", "Features per page", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}
        ),
        Param("cursor", "Where the page starts (from next)", {**INTEGER, "minimum": 0}),
    ),
    replies={200: Reply("The page", {GEOJSON: COLLECTION}, NO_STORE_HEADER)},
    errors=(400, 404, 422, 503),
)
async def list_annotations(request: Request) -> Response:
    slide_id = request.path_params["slide_id"]
    store = store_of(request)
    params = request.query_params
    bbox = parse_bbox(params.get("bbox"))
    limit = parse_int("limit", params.get("limit"), DEFAULT_LIMIT, 1, MAX_LIMIT)
    after = parse_int("cursor", params.get("cursor"), 0, 0, 10**15)
    cls = params.get("class") or None
    frame = await slide_frame(request, slide_id)
    viewer = await viewer_of(request, store)
    layers = {la.id: la for la in await readable_layers(store, slide_id, viewer.caller)}
    wanted = requested_layers(request)
    if wanted:
        missing = [w for w in wanted if w not in layers]
        if missing:
            raise LayerNotFound(f"no annotation layer {missing[0]!r} on this slide")
        layers = {w: layers[w] for w in wanted}
    items, cursor = await run_sync(
        lambda: store.query(slide_id, list(layers), bbox, cls, after, limit)
    )
    features = [viewer.feature(a, layers[a.layer_id]) for a in items]
    members: dict[str, Any] = {"next": None, "links": []}
    if cursor is not None:
        query = [(k, v) for k, v in params.multi_items() if k != "cursor"]
        link = f"{request.url.path}?{urlencode([*query, ('cursor', str(cursor))])}"
        members = {"next": link, "links": [{"rel": "next", "href": link, "type": GEOJSON}]}
    if not frame.has_mpp:
        members["measurements_unavailable"] = NO_MPP
    return await big_json_response(geojson.collection(features, **members))


MAX_CELLS = 65_536
"""Most cells in one density grid (256 x 256)."""
DENSITY_SCHEMA: Schema = {
    "type": "object",
    "required": ["bbox", "cols", "rows", "by", "counts", "total", "max"],
    "properties": {
        "bbox": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4},
        "cols": {"type": "integer"},
        "rows": {"type": "integer"},
        "by": {"const": "centre", "description": "each feature counts in its bbox centre's cell"},
        "counts": {
            "type": "array",
            "items": {"type": "integer", "minimum": 0},
            "description": "cols x rows counts, row by row from the bbox's top left",
        },
        "total": {"type": "integer"},
        "max": {"type": "integer"},
        "layers": {"type": "array", "items": {"type": "string"}},
    },
}


def density_grid(
    params: Mapping[str, str], frame: SlideFrame
) -> tuple[tuple[float, float, float, float], int, int]:
    """The bbox (default: the whole slide) and grid size of a density request; 422 when bad."""
    raw = params.get("bbox")
    if raw:
        try:
            bbox = parse_bbox(raw)
        except BadRequest as error:
            raise Unprocessable(error.detail) from None
        assert bbox is not None
    else:
        bbox = (0.0, 0.0, float(frame.width), float(frame.height))
    if not (bbox[2] > bbox[0] and bbox[3] > bbox[1]):
        raise Unprocessable("bbox must have x0 < x1 and y0 < y1")
    sizes: list[int] = []
    for name in ("cols", "rows"):
        text = params.get(name, "64").strip()
        if not text.isdigit() or not 1 <= len(text) <= 6 or int(text) < 1:
            raise Unprocessable(f"{name} must be a whole number from 1")
        sizes.append(int(text))
    cols, rows = sizes
    if cols * rows > MAX_CELLS:
        raise Unprocessable(f"cols x rows must be at most {MAX_CELLS}")
    return bbox, cols, rows


@operation(
    "Annotation counts per cell of a grid over a region (the viewer's heat map)",
    tag="annotations",
    params=(
        Param("bbox", "x0,y0,x1,y1 in level-0 pixels (default: the whole slide)"),
        Param("cols", "Cells across (default 64)", {"type": "integer", "minimum": 1}),
        Param("rows", "Cells down (default 64); cols x rows at most 65,536", INTEGER),
        Param("layer", "Only these layers (repeated or comma-separated)"),
        Param("class", "Only features of this class (case-insensitive)"),
    ),
    replies={200: json_reply("The counts, row by row", DENSITY_SCHEMA)},
    errors=(404, 422, 503),
)
async def annotation_density(request: Request) -> Response:
    """Counts the live features of the layers the caller may read (the list's rules), each in
    the cell holding its bbox centre, in one GROUP BY over the spatial index: a heat map of
    200,000 detections costs one small answer, not a read of every feature."""
    slide_id = request.path_params["slide_id"]
    store = store_of(request)
    params = request.query_params
    cls = params.get("class") or None
    frame = await slide_frame(request, slide_id)
    bbox, cols, rows = density_grid(params, frame)
    caller = caller_of(principal_of(request))
    layers = [la.id for la in await readable_layers(store, slide_id, caller)]
    wanted = requested_layers(request)
    if wanted:
        missing = [w for w in wanted if w not in layers]
        if missing:
            raise LayerNotFound(f"no annotation layer {missing[0]!r} on this slide")
        layers = wanted
    counts = await run_sync(lambda: store.density(slide_id, layers, bbox, cols, rows, cls))
    answer = {
        "bbox": list(bbox),
        "cols": cols,
        "rows": rows,
        "by": "centre",
        "counts": counts,
        "total": sum(counts),
        "max": max(counts),
        "layers": layers,
    }
    return await big_json_response(answer, "application/json")


async def annotation_and_layer(
    request: Request, store: AnnotationStore, caller: Caller
) -> tuple[Annotation, Layer]:
    """The annotation the URL names and its layer, if the caller may read them (else 404)."""
    annotation_id = check_id(request.path_params["annotation_id"])
    annotation = await run_sync(store.get, annotation_id)
    if annotation is None:
        raise AnnotationNotFound(f"no annotation {annotation_id!r}")
    await see_slide(request, annotation.slide_id)
    layer = await run_sync(store.layer, annotation.layer_id)
    if layer is None or not can_read(layer, caller):
        raise AnnotationNotFound(f"no annotation {annotation_id!r}")
    return annotation, layer


@operation(
    "One annotation, as a GeoJSON Feature",
    tag=TAG,
    replies={200: _feature_reply("The annotation")},
    errors=(404, 422, 503),
)
async def get_annotation(request: Request) -> Response:
    store = store_of(request)
    viewer = await viewer_of(request, store)
    annotation, layer = await annotation_and_layer(request, store, viewer.caller)
    return json_response(
        viewer.feature(annotation, layer), media_type=GEOJSON, ETag=etag(annotation.version)
    )


@operation(
    "Every version of an annotation: who, when, before and after",
    tag=TAG,
    replies={200: json_reply("The history", HISTORY)},
    errors=(404, 422, 503),
)
async def get_history(request: Request) -> Response:
    store = store_of(request)
    viewer = await viewer_of(request, store)
    annotation_id = check_id(request.path_params["annotation_id"])
    slide_id, changes = await run_sync(store.history, annotation_id)
    layer_id = await run_sync(store.layer_of_deleted, annotation_id)
    layer = await run_sync(store.layer_any, layer_id) if layer_id else None
    if slide_id is None or layer is None or not can_read(layer, viewer.caller):
        raise AnnotationNotFound(f"no annotation {annotation_id!r}")
    await see_slide(request, slide_id)
    safe = not viewer.caller.researcher or layer.research_safe

    def shown(state: dict[str, Any] | None) -> dict[str, Any] | None:
        if state is None or safe:
            return state
        return {**state, "note": None, "extra": None}

    items = [
        {
            "version": c.version,
            "action": c.action,
            "actor": viewer.person(c.actor),
            "at": c.at.isoformat(),
            "before": shown(c.before),
            "after": shown(c.after),
        }
        for c in changes
    ]
    return json_response({"id": annotation_id, "items": items})


# -- writing --


async def read_json_body(request: Request) -> Any:
    """The JSON body within the annotation size cap (413 above), parsed off the event loop."""
    limit = state_of(request).settings.annotation_max_body
    try:
        body = await read_body(request, limit)
    except BodyTooLarge:
        raise TooLarge(f"the body is larger than {limit} bytes") from None
    try:
        return await run_sync(parse_json, body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body is not JSON") from None


def idempotency_key(request: Request, caller: Caller, slide_id: str) -> str | None:
    key = request.headers.get("idempotency-key", "").strip()
    if not key:
        return None
    if len(key) > MAX_KEY or not key.isprintable():
        raise BadRequest(f"Idempotency-Key must be 1 to {MAX_KEY} printable characters")
    return hashlib.sha256(f"{caller.subject}\0{slide_id}\0{key}".encode()).hexdigest()


async def resolve_layers(
    store: AnnotationStore, slide_id: str, items: Sequence[AnnotationIn], caller: Caller
) -> list[AnnotationIn]:
    """Give each item its layer (the caller's personal one by default), each writable."""
    named = {i.layer_id for i in items if i.layer_id is not None}
    layers: dict[str, Layer] = {}
    for layer_id in named:
        layer = await run_sync(store.layer, layer_id)
        if layer is None or layer.slide_id != slide_id or not can_read(layer, caller):
            raise LayerNotFound(f"no annotation layer {layer_id!r} on this slide")
        layers[layer_id] = layer
    if any(i.layer_id is None for i in items):
        if caller.researcher:
            raise InvalidAnnotation("name a layer granted to you (properties.layer or ?layer=)")
        mine = await run_sync(store.personal_layer, slide_id, caller.subject)
        layers[mine.id] = mine
        items = [i if i.layer_id else replace(i, layer_id=mine.id) for i in items]
    for layer in layers.values():
        if not can_write(layer, caller):
            raise Forbidden(f"you may not write to the layer {layer.id!r}")
    return list(items)


async def store_features(
    request: Request, slide_id: str, features: list[Any], single: bool, default_layer: str | None
) -> Response:
    """Validate, measure and store features: the body of POST and of import."""
    store = store_of(request)
    viewer = await viewer_of(request, store)
    caller = viewer.caller
    key = idempotency_key(request, caller, slide_id)
    digest = ""
    if key is not None:
        digest = await run_sync(body_digest, features, default_layer)
        recalled = await run_sync(store.recall, key)
        if recalled is not None:
            if recalled[0] != digest:
                raise Conflict("this Idempotency-Key was used for another body")
            return await stored_answer(request, store, viewer, recalled[1], single)
    frame = await slide_frame(request, slide_id)
    settings = state_of(request).settings
    classes = known_classes(settings.annotation_classes)
    items = await run_sync(check_features, features, frame, classes)
    if default_layer is not None:
        items = [replace(i, layer_id=default_layer) for i in items]
    items = await resolve_layers(store, slide_id, items, caller)
    measured = await run_sync(lambda: [measure(i.kind, i.geometry, i.bbox, frame) for i in items])
    result = await run_sync(
        lambda: store.insert(
            slide_id, items, measured, caller.subject, (key, digest) if key else None
        )
    )
    return await stored_answer(request, store, viewer, result.to_json(), single)


def body_digest(features: list[Any], layer: str | None) -> str:
    """What an ``Idempotency-Key`` was used for: the features and the target layer."""
    text = json.dumps([layer, features], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


async def stored_answer(
    request: Request,
    store: AnnotationStore,
    viewer: Viewer,
    result: Mapping[str, Any],
    single: bool,
) -> Response:
    created = list(result.get("created", []))
    existing = list(result.get("existing", []))
    status = 201 if created else 200
    if not single:
        return json_response({"created": created, "existing": existing}, status)
    ids = created or existing
    found = await run_sync(store.many, ids)
    if not found:
        raise AnnotationNotFound("the annotation was deleted since")
    annotation = found[0]
    layer = await run_sync(store.layer, annotation.layer_id)
    assert layer is not None
    return json_response(
        viewer.feature(annotation, layer),
        status,
        media_type=GEOJSON,
        ETag=etag(annotation.version),
        Location=f"/api/annotations/{annotation.id}",
    )


@operation(
    "Add annotations to a slide: one Feature or a FeatureCollection (idempotent)",
    tag=TAG,
    params=(IDEMPOTENCY_KEY,),
    body=Body(GEOJSON_BODY, "A Feature, or a FeatureCollection of up to 100,000"),
    replies={
        200: Reply(
            "Nothing new: the Feature as stored, or the IDs already there",
            {GEOJSON: FEATURE, "application/json": STORED_IDS},
            NO_STORE_HEADER,
        ),
        201: Reply(
            "Stored: the Feature (with ETag and Location), or the IDs created and existing",
            {GEOJSON: FEATURE, "application/json": STORED_IDS},
            NO_STORE_HEADER,
        ),
    },
    errors=(400, 403, 404, 409, 413, 422, 503),
)
async def post_annotations(request: Request) -> Response:
    slide_id = request.path_params["slide_id"]
    body = await read_json_body(request)
    features = features_of(body, MAX_FEATURES)
    single = isinstance(body, Mapping) and body.get("type") == "Feature"
    return await store_features(request, slide_id, features, single, None)


@operation(
    "Replace an annotation (needs If-Match)",
    tag=TAG,
    params=(IF_MATCH_REQUIRED,),
    body=Body({"application/json": FEATURE, GEOJSON: FEATURE}, "The whole Feature"),
    replies={200: _feature_reply("The new version")},
    errors=(400, 403, 404, 412, 413, 422, 428, 503),
)
async def put_annotation(request: Request) -> Response:
    store = store_of(request)
    viewer = await viewer_of(request, store)
    caller = viewer.caller
    current, layer = await annotation_and_layer(request, store, caller)
    expected = if_match(request, current.version, required=True)
    assert expected is not None
    if not can_edit(current, layer, caller):
        raise Forbidden("you may not change this annotation")
    body = await read_json_body(request)
    frame = await slide_frame(request, current.slide_id)
    classes = known_classes(state_of(request).settings.annotation_classes)
    item = await run_sync(check_feature, body, frame, classes)
    if item.id is not None and item.id != current.id:
        raise InvalidAnnotation("the feature's id is not the annotation's")
    target = layer
    if item.layer_id is not None and item.layer_id != layer.id:
        moved = await run_sync(store.layer, item.layer_id)
        if moved is None or moved.slide_id != current.slide_id or not can_read(moved, caller):
            raise LayerNotFound(f"no annotation layer {item.layer_id!r} on this slide")
        if not can_write(moved, caller):
            raise Forbidden(f"you may not write to the layer {moved.id!r}")
        target = moved
    measured = measure(item.kind, item.geometry, item.bbox, frame)
    updated = await run_sync(
        lambda: store.replace(current, item, target.id, measured, caller.subject, expected)
    )
    return json_response(
        viewer.feature(updated, target), media_type=GEOJSON, ETag=etag(updated.version)
    )


@operation(
    "Delete an annotation (soft; needs If-Match)",
    tag=TAG,
    params=(IF_MATCH_REQUIRED,),
    replies={204: Reply("Deleted", headers=NO_STORE_HEADER)},
    errors=(403, 404, 412, 422, 428, 503),
)
async def delete_annotation(request: Request) -> Response:
    store = store_of(request)
    caller = caller_of(principal_of(request))
    current, layer = await annotation_and_layer(request, store, caller)
    expected = if_match(request, current.version, required=True)
    assert expected is not None
    if not can_edit(current, layer, caller):
        raise Forbidden("you may not delete this annotation")
    await run_sync(store.delete, current, caller.subject, expected)
    return Response(status_code=204, headers=NO_STORE)


# -- layers --


@operation(
    "The annotation layers of a slide the caller may read",
    tag=TAG,
    replies={200: json_reply("The layers", LAYERS)},
    errors=(404, 503),
)
async def list_layers(request: Request) -> Response:
    slide_id = request.path_params["slide_id"]
    store = store_of(request)
    await slide_frame(request, slide_id)
    viewer = await viewer_of(request, store)
    layers = await readable_layers(store, slide_id, viewer.caller)
    return json_response({"slide": slide_id, "layers": [viewer.layer(la) for la in layers]})


def _layer_fields(body: Any, current: Layer | None) -> dict[str, Any]:
    """The layer fields a body sets (PUT: only those it names)."""
    if not isinstance(body, Mapping):
        raise InvalidAnnotation("the body must be a JSON object")
    out: dict[str, Any] = {}
    if "name" in body or current is None:
        name = body.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 200 or not plain_text(name):
            raise InvalidAnnotation("name must be 1 to 200 characters")
        out["name"] = name.strip()
    for flag in ("research_safe", "locked"):
        if flag in body:
            if not isinstance(body[flag], bool):
                raise InvalidAnnotation(f"{flag} must be true or false")
            out[flag] = body[flag]
    if "grants" in body:
        grants = body["grants"]
        if (
            not isinstance(grants, list)
            or len(grants) > 1000
            or not all(isinstance(g, str) and 0 < len(g) <= 200 and plain_text(g) for g in grants)
        ):
            raise InvalidAnnotation("grants must be a list of subjects (token:NAME, OIDC sub)")
        out["grants"] = tuple(dict.fromkeys(grants))
    return out


@operation(
    "Create an annotation layer (idempotent by its id)",
    tag=TAG,
    body=Body({"application/json": LAYER_IN}, "The layer"),
    replies={
        200: Reply("The layer existed", {"application/json": LAYER}, VERSIONED),
        201: Reply("Created", {"application/json": LAYER}, VERSIONED),
    },
    errors=(400, 403, 404, 409, 413, 422, 503),
)
async def post_layer(request: Request) -> Response:
    slide_id = request.path_params["slide_id"]
    store = store_of(request)
    await slide_frame(request, slide_id)
    viewer = await viewer_of(request, store)
    body = await read_json_body(request)
    fields = _layer_fields(body, None)
    kind = body.get("kind")
    if kind not in LAYER_KINDS:
        raise InvalidAnnotation(f"kind must be one of {', '.join(LAYER_KINDS)}")
    if not can_create_layer(kind, viewer.caller):
        raise Forbidden(f"you may not create {kind} layers")
    raw_id = body.get("id")
    layer_id = check_id(raw_id, "id") if raw_id is not None else str(uuid.uuid4())
    layer = Layer(id=layer_id, slide_id=slide_id, kind=kind, owner=viewer.caller.subject, **fields)
    stored, created = await run_sync(store.create_layer, layer)
    if not created and stored.owner != viewer.caller.subject and not viewer.caller.admin:
        raise Conflict(f"layer id {layer_id!r} is taken")
    return json_response(viewer.layer(stored), 201 if created else 200, ETag=etag(stored.version))


async def layer_for_change(
    request: Request, store: AnnotationStore, caller: Caller
) -> tuple[Layer, int | None]:
    layer_id = check_id(request.path_params["layer_id"], "layer")
    layer = await run_sync(store.layer, layer_id)
    if layer is None or not can_read(layer, caller):
        raise LayerNotFound(f"no annotation layer {layer_id!r}")
    await see_slide(request, layer.slide_id)
    if not can_manage(layer, caller):
        raise Forbidden("only the layer's owner or an admin may change it")
    return layer, if_match(request, layer.version, required=False)


@operation(
    "Change an annotation layer (its owner or an admin)",
    tag=TAG,
    params=(IF_MATCH,),
    body=Body({"application/json": LAYER_CHANGE}, "The fields to change"),
    replies={200: Reply("The layer", {"application/json": LAYER}, VERSIONED)},
    errors=(400, 403, 404, 412, 413, 422, 503),
)
async def put_layer(request: Request) -> Response:
    store = store_of(request)
    viewer = await viewer_of(request, store)
    layer, expected = await layer_for_change(request, store, viewer.caller)
    changed = replace(layer, **_layer_fields(await read_json_body(request), layer))
    stored = await run_sync(store.update_layer, changed, expected)
    return json_response(viewer.layer(stored), ETag=etag(stored.version))


@operation(
    "Delete an annotation layer and its annotations (its owner or an admin)",
    tag=TAG,
    params=(IF_MATCH,),
    replies={204: Reply("Deleted", headers=NO_STORE_HEADER)},
    errors=(403, 404, 412, 422, 503),
)
async def delete_layer(request: Request) -> Response:
    store = store_of(request)
    caller = caller_of(principal_of(request))
    layer, expected = await layer_for_change(request, store, caller)
    await run_sync(store.delete_layer, layer.id, expected)
    return Response(status_code=204, headers=NO_STORE)


# -- import and export --


def format_of(request: Request) -> str:
    fmt = request.query_params.get("format", "geojson")
    if fmt not in FORMATS:
        raise BadRequest(f"format must be one of {', '.join(FORMATS)}")
    return fmt


@operation(
    "Import annotations from a QuPath, GeoJSON or CSV file (idempotent)",
    tag=TAG,
    params=(
        FORMAT_PARAM,
        Param("layer", "Put every imported feature in this layer", {"type": "string"}),
        IDEMPOTENCY_KEY,
    ),
    body=Body(
        {
            "application/json": {"description": "QuPath or GeoJSON export"},
            GEOJSON: FEATURE_OR_COLLECTION,
            "text/csv": {
                "type": "string",
                "description": "Points: id,x,y,class,label,layer (x and y required)",
            },
        },
        "The file, in the format named by ?format=",
    ),
    replies={
        200: json_reply("Nothing new: the IDs already there", STORED_IDS),
        201: json_reply("Stored: the IDs created and those already there", STORED_IDS),
    },
    errors=(400, 403, 404, 409, 413, 422, 503),
)
async def import_annotations(request: Request) -> Response:
    slide_id = request.path_params["slide_id"]
    fmt = format_of(request)
    layer = request.query_params.get("layer")
    default_layer = check_id(layer, "layer") if layer else None
    if fmt == "csv":
        limit = state_of(request).settings.annotation_max_body
        try:
            raw = await read_body(request, limit)
        except BodyTooLarge:
            raise TooLarge(f"the body is larger than {limit} bytes") from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise BadRequest("the CSV is not UTF-8") from None
        features = await run_sync(csv_points.to_features, text)
    else:
        body = await read_json_body(request)
        convert: Callable[[Any], list[Any]] = (
            qupath.to_features if fmt == "qupath" else lambda b: features_of(b, MAX_FEATURES)
        )
        features = await run_sync(convert, body)
    if len(features) > MAX_FEATURES:
        raise TooLarge(f"at most {MAX_FEATURES} features in one import")
    return await store_features(request, slide_id, features, False, default_layer)


@operation(
    "Export a slide's annotations as QuPath, GeoJSON or CSV (a download)",
    tag=TAG,
    params=(FORMAT_PARAM, LAYER_PARAM),
    replies={
        200: Reply(
            "The file (QuPath and GeoJSON: application/geo+json; CSV: points only)",
            {GEOJSON: {"type": "object"}, "text/csv": {"type": "string"}},
            {**NO_STORE_HEADER, "Content-Disposition": "attachment; the file's name"},
        )
    },
    errors=(400, 404, 422, 503),
)
async def export_annotations(request: Request) -> Response:
    slide_id = request.path_params["slide_id"]
    fmt = format_of(request)
    store = store_of(request)
    await slide_frame(request, slide_id)
    viewer = await viewer_of(request, store)
    layers = {la.id: la for la in await readable_layers(store, slide_id, viewer.caller)}
    wanted = requested_layers(request)
    if wanted:
        if any(w not in layers for w in wanted):
            raise LayerNotFound("no such annotation layer on this slide")
        layers = {w: layers[w] for w in wanted}
    annotations = await run_sync(lambda: list(store.iterate(slide_id, list(layers))))
    name = f"annotations-{slide_id[:40]}"
    if fmt == "csv":
        body = await run_sync(csv_points.export, annotations)
        return Response(
            body,
            media_type="text/csv",
            headers={**NO_STORE, "Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    if fmt == "qupath":
        if viewer.caller.researcher:
            annotations = [deidentified(a, layers[a.layer_id], viewer) for a in annotations]
        data = await run_sync(qupath.export, annotations)
        text = await run_sync(lambda: json.dumps(data, separators=(",", ":")))
        filename = f"{name}.geojson"
    else:
        features = [viewer.feature(a, layers[a.layer_id]) for a in annotations]
        text = await run_sync(
            lambda: json.dumps(geojson.collection(features), separators=(",", ":"))
        )
        filename = f"{name}.geojson"
    return Response(
        text.encode(),
        media_type=GEOJSON,
        headers={**NO_STORE, "Content-Disposition": f'attachment; filename="{filename}"'},
    )


def deidentified(annotation: Annotation, layer: Layer, viewer: Viewer) -> Annotation:
    """An annotation as a researcher may take it away (QuPath export)."""
    if layer.research_safe:
        return replace(annotation, author=viewer.person(annotation.author))
    return replace(annotation, author=viewer.person(annotation.author), note=None, extra={})


def routes() -> list[Route]:
    """Return the annotation routes (their POLICY rows are under issue 16's marker)."""
    return [
        Route("/api/slides/{slide_id}/annotations", list_annotations, methods=["GET"]),
        Route("/api/slides/{slide_id}/annotations", post_annotations, methods=["POST"]),
        Route("/api/slides/{slide_id}/annotations/density", annotation_density, methods=["GET"]),
        Route("/api/slides/{slide_id}/annotations/import", import_annotations, methods=["POST"]),
        Route("/api/slides/{slide_id}/annotations/export", export_annotations, methods=["GET"]),
        Route("/api/annotations/{annotation_id}", get_annotation, methods=["GET"]),
        Route("/api/annotations/{annotation_id}", put_annotation, methods=["PUT"]),
        Route("/api/annotations/{annotation_id}", delete_annotation, methods=["DELETE"]),
        Route("/api/annotations/{annotation_id}/history", get_history, methods=["GET"]),
        Route("/api/slides/{slide_id}/annotation-layers", list_layers, methods=["GET"]),
        Route("/api/slides/{slide_id}/annotation-layers", post_layer, methods=["POST"]),
        Route("/api/annotation-layers/{layer_id}", put_layer, methods=["PUT"]),
        Route("/api/annotation-layers/{layer_id}", delete_layer, methods=["DELETE"]),
    ]


__all__ = ["routes"]
