// Geometry the drawing tools make and the select tool tests against, in level-0 pixels.
import type { Geometry, Position } from "./model";

export const ELLIPSE_VERTICES = 64;

export function rectangle(a: Position, b: Position): Geometry {
  const [x0, x1] = [Math.min(a[0], b[0]), Math.max(a[0], b[0])];
  const [y0, y1] = [Math.min(a[1], b[1]), Math.max(a[1], b[1])];
  return { type: "Polygon", coordinates: [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]] };
}

/** The ellipse inscribed in the box a-b, as a closed polygon. */
export function ellipse(a: Position, b: Position): Geometry {
  const cx = (a[0] + b[0]) / 2;
  const cy = (a[1] + b[1]) / 2;
  const rx = Math.abs(b[0] - a[0]) / 2;
  const ry = Math.abs(b[1] - a[1]) / 2;
  const ring: Position[] = [];
  for (let i = 0; i < ELLIPSE_VERTICES; i++) {
    const t = (i / ELLIPSE_VERTICES) * 2 * Math.PI;
    ring.push([cx + rx * Math.cos(t), cy + ry * Math.sin(t)]);
  }
  ring.push(ring[0]);
  return { type: "Polygon", coordinates: [ring] };
}

export function closeRing(pts: Position[]): Position[] {
  const ring = pts.slice();
  const [f, l] = [ring[0], ring[ring.length - 1]];
  if (f[0] !== l[0] || f[1] !== l[1]) ring.push([f[0], f[1]]);
  return ring;
}

function segDist(p: Position, a: Position, b: Position): number {
  const dx = b[0] - a[0];
  const dy = b[1] - a[1];
  const len2 = dx * dx + dy * dy;
  const t = len2 ? Math.max(0, Math.min(1, ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / len2)) : 0;
  return Math.hypot(p[0] - (a[0] + t * dx), p[1] - (a[1] + t * dy));
}

function inRing(p: Position, ring: Position[]): boolean {
  let inside = false;
  for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
    const [xi, yi] = ring[i];
    const [xj, yj] = ring[j];
    if (yi > p[1] !== yj > p[1] && p[0] < ((xj - xi) * (p[1] - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

/** Whether ``p`` is on the geometry, within ``tol`` level-0 pixels of a point or line. */
export function hits(g: Geometry, p: Position, tol: number): boolean {
  switch (g.type) {
    case "Point":
      return Math.hypot(p[0] - g.coordinates[0], p[1] - g.coordinates[1]) <= tol;
    case "MultiPoint":
      return g.coordinates.some((c) => Math.hypot(p[0] - c[0], p[1] - c[1]) <= tol);
    case "LineString":
      return g.coordinates.some((c, i) => i > 0 && segDist(p, g.coordinates[i - 1], c) <= tol);
    case "Polygon": {
      const [outer, ...holes] = g.coordinates;
      if (inRing(p, outer) && !holes.some((h) => inRing(p, h))) return true;
      return g.coordinates.some((r) => r.some((c, i) => i > 0 && segDist(p, r[i - 1], c) <= tol));
    }
  }
}

/** The editable vertices of a geometry: [ring, index] pairs (a closed ring's last one is its first). */
export function vertices(g: Geometry): { ring: number; index: number; at: Position }[] {
  switch (g.type) {
    case "Point":
      return [{ ring: 0, index: 0, at: g.coordinates }];
    case "MultiPoint":
    case "LineString":
      return g.coordinates.map((at, index) => ({ ring: 0, index, at }));
    case "Polygon":
      return g.coordinates.flatMap((r, ring) => r.slice(0, -1).map((at, index) => ({ ring, index, at })));
  }
}

/** A copy of ``g`` with one vertex moved to ``to`` (a closed ring stays closed). */
export function moveVertex(g: Geometry, ring: number, index: number, to: Position): Geometry {
  const c = JSON.parse(JSON.stringify(g)) as Geometry;
  switch (c.type) {
    case "Point":
      c.coordinates = [to[0], to[1]];
      break;
    case "MultiPoint":
    case "LineString":
      c.coordinates[index] = [to[0], to[1]];
      break;
    case "Polygon": {
      const r = c.coordinates[ring];
      r[index] = [to[0], to[1]];
      if (index === 0) r[r.length - 1] = [to[0], to[1]];
      break;
    }
  }
  return c;
}
