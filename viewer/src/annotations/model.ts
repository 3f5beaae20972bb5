// The annotation model as the viewer holds it: GeoJSON features from the server (level-0 pixel
// coordinates, properties as issue 16 states them) plus what drawing needs (a bounding box).

export type Position = [number, number];

export type Geometry =
  | { type: "Point"; coordinates: Position }
  | { type: "MultiPoint"; coordinates: Position[] }
  | { type: "LineString"; coordinates: Position[] }
  | { type: "Polygon"; coordinates: Position[][] };

export interface Measurements {
  length_um?: number | null;
  area_um2?: number | null;
  perimeter_um?: number | null;
}

export interface FeatureProperties {
  id?: string;
  class?: string;
  layer?: string | null;
  author?: string | null;
  version?: number;
  colour?: string | null;
  color?: string | null;
  label?: string | null;
  note?: string | null;
  /** How the shape was drawn (rectangle and ellipse travel as polygons). */
  shape?: string | null;
  measurements?: Measurements | null;
  /** Set when the slide has no MPP: the server cannot measure. */
  measurements_unavailable?: boolean | string | null;
  [key: string]: unknown;
}

export interface Feature {
  type: "Feature";
  id?: string;
  geometry: Geometry;
  properties: FeatureProperties;
}

export interface FeatureCollection {
  type: "FeatureCollection";
  features: Feature[];
  next?: string | null;
  links?: { rel: string; href: string }[];
}

/** A bounding box in level-0 pixels: [x0, y0, x1, y1]. */
export type BBox = [number, number, number, number];

/** A feature the server knows, with its id, its version's ETag and its bounding box. */
export interface Annotation {
  id: string;
  feature: Feature;
  etag: string | null;
  bbox: BBox;
}

export function featureId(f: Feature): string | null {
  const id = f.properties?.id ?? f.id;
  return id === undefined || id === null ? null : String(id);
}

export function allPositions(g: Geometry): Position[] {
  switch (g.type) {
    case "Point":
      return [g.coordinates];
    case "MultiPoint":
    case "LineString":
      return g.coordinates;
    case "Polygon":
      return g.coordinates.flat();
  }
}

export function geometryBBox(g: Geometry): BBox {
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const [x, y] of allPositions(g)) {
    if (x < x0) x0 = x;
    if (y < y0) y0 = y;
    if (x > x1) x1 = x;
    if (y > y1) y1 = y;
  }
  return [x0, y0, x1, y1];
}

export function intersects(a: BBox, b: BBox): boolean {
  return a[0] <= b[2] && b[0] <= a[2] && a[1] <= b[3] && b[1] <= a[3];
}

export function contains(outer: BBox, inner: BBox): boolean {
  return outer[0] <= inner[0] && outer[1] <= inner[1] && outer[2] >= inner[2] && outer[3] >= inner[3];
}

/** A deep copy of a geometry, so edits never change what undo keeps. */
export function cloneGeometry<G extends Geometry>(g: G): G {
  return JSON.parse(JSON.stringify(g)) as G;
}

export function translate(g: Geometry, dx: number, dy: number): Geometry {
  const move = (p: Position): Position => [p[0] + dx, p[1] + dy];
  switch (g.type) {
    case "Point":
      return { type: "Point", coordinates: move(g.coordinates) };
    case "MultiPoint":
      return { type: "MultiPoint", coordinates: g.coordinates.map(move) };
    case "LineString":
      return { type: "LineString", coordinates: g.coordinates.map(move) };
    case "Polygon":
      return { type: "Polygon", coordinates: g.coordinates.map((r) => r.map(move)) };
  }
}
