// Live measurements while drawing, from level-0 coordinates and the slide's MPP. Once saved, the
// server's measurements (properties.measurements) are the ones shown: these are only the preview.
import { formatLength } from "../util";
import type { Geometry, Measurements, Position } from "./model";

export interface Mpp {
  x: number;
  y: number;
}

function ringLength(pts: Position[], mpp: Mpp, closed: boolean): number {
  let sum = 0;
  const n = pts.length;
  for (let i = 1; i < n + (closed ? 1 : 0); i++) {
    const a = pts[i - 1];
    const b = pts[i % n];
    sum += Math.hypot((b[0] - a[0]) * mpp.x, (b[1] - a[1]) * mpp.y);
  }
  return sum;
}

/** Shoelace area of a ring in level-0 pixels² (unsigned). */
function ringArea(pts: Position[]): number {
  let s = 0;
  for (let i = 0, n = pts.length; i < n; i++) {
    const a = pts[i];
    const b = pts[(i + 1) % n];
    s += a[0] * b[1] - b[0] * a[1];
  }
  return Math.abs(s) / 2;
}

/** Length, area and perimeter of a geometry in µm / µm², or null when the slide has no MPP. */
export function measure(g: Geometry, mpp: Mpp | null): Measurements | null {
  if (!mpp) return null;
  if (g.type === "LineString") return { length_um: ringLength(g.coordinates, mpp, false) };
  if (g.type === "Polygon") {
    const [outer, ...holes] = g.coordinates.map((r) => (r.length > 1 && samePoint(r[0], r[r.length - 1]) ? r.slice(0, -1) : r));
    if (!outer || outer.length < 3) return { area_um2: 0, perimeter_um: 0 };
    const area = ringArea(outer) - holes.reduce((s, h) => s + ringArea(h), 0);
    return { area_um2: area * mpp.x * mpp.y, perimeter_um: ringLength(outer, mpp, true) };
  }
  return {};
}

function samePoint(a: Position, b: Position): boolean {
  return a[0] === b[0] && a[1] === b[1];
}

/** An area for display: µm² below 0.01 mm², mm² above. */
export function formatArea(um2: number): string {
  if (!isFinite(um2)) return "–";
  if (um2 >= 10_000) {
    const mm2 = um2 / 1e6;
    return (mm2 >= 10 ? mm2.toFixed(2) : mm2 >= 0.1 ? mm2.toFixed(3) : mm2.toFixed(4)) + " mm²";
  }
  return (um2 >= 100 ? Math.round(um2).toLocaleString("en") : um2.toFixed(1)) + " µm²";
}

/** "area 0.0123 mm² · perimeter 450 µm", or a reason when there is nothing to say. */
export function describe(m: Measurements | null | undefined): string {
  if (!m) return "no MPP: no measurements";
  const parts: string[] = [];
  if (m.length_um != null) parts.push("length " + formatLength(m.length_um));
  if (m.area_um2 != null) parts.push("area " + formatArea(m.area_um2));
  if (m.perimeter_um != null) parts.push("perimeter " + formatLength(m.perimeter_um));
  return parts.join(" · ");
}
