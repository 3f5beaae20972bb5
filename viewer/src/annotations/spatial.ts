// A uniform grid over the slide that finds the annotations meeting a box without looking at the
// others: a view at 40x on a slide holding 200,000 shapes touches a few cells, not every shape.
import type { Annotation, BBox } from "./model";

/** Cells along the longer side of the slide (at least 512 level-0 pixels each). */
const CELLS = 64;

export class SpatialIndex {
  private readonly size: number;
  private readonly cols: number;
  private readonly rows: number;
  private readonly cells = new Map<number, Map<string, Annotation>>();
  private readonly where = new Map<string, BBox>();

  constructor(width: number, height: number) {
    this.size = Math.max(512, Math.ceil(Math.max(width, height) / CELLS));
    this.cols = Math.max(1, Math.ceil(width / this.size));
    this.rows = Math.max(1, Math.ceil(height / this.size));
  }

  private range(b: BBox): [number, number, number, number] {
    const c = (v: number, n: number) => Math.min(n - 1, Math.max(0, Math.floor(v / this.size)));
    return [c(b[0], this.cols), c(b[1], this.rows), c(b[2], this.cols), c(b[3], this.rows)];
  }

  put(a: Annotation): void {
    this.remove(a.id);
    const [c0, r0, c1, r1] = this.range(a.bbox);
    for (let r = r0; r <= r1; r++) {
      for (let c = c0; c <= c1; c++) {
        const key = r * this.cols + c;
        let cell = this.cells.get(key);
        if (!cell) this.cells.set(key, (cell = new Map()));
        cell.set(a.id, a);
      }
    }
    this.where.set(a.id, a.bbox);
  }

  remove(id: string): void {
    const b = this.where.get(id);
    if (!b) return;
    this.where.delete(id);
    const [c0, r0, c1, r1] = this.range(b);
    for (let r = r0; r <= r1; r++) for (let c = c0; c <= c1; c++) this.cells.get(r * this.cols + c)?.delete(id);
  }

  clear(): void {
    this.cells.clear();
    this.where.clear();
  }

  /** Every annotation whose box meets ``b``, once each. */
  query(b: BBox, visit: (a: Annotation) => void): void {
    const [c0, r0, c1, r1] = this.range(b);
    for (let r = r0; r <= r1; r++) {
      for (let c = c0; c <= c1; c++) {
        const cell = this.cells.get(r * this.cols + c);
        if (!cell) continue;
        for (const a of cell.values()) {
          if (a.bbox[0] > b[2] || a.bbox[2] < b[0] || a.bbox[1] > b[3] || a.bbox[3] < b[1]) continue;
          // an annotation in several cells is reported by the first of them the query visits
          const [ac, ar] = this.range(a.bbox);
          if (Math.max(ac, c0) !== c || Math.max(ar, r0) !== r) continue;
          visit(a);
        }
      }
    }
  }
}
