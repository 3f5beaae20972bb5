// Count grids for the heat map shown at low zoom when a layer has too many features to draw (an
// algorithm's 200,000 cell detections). The server counts them (GET .../annotations/density, by
// bbox centre): once per layer over the whole slide in a fixed 256 x 256 grid (which layers are
// dense, how many features a view holds), and once per view change over the view itself (a
// sharper heat map of what is in view). Each is one image drawn with the same transform as the
// shapes, so one drawImage per frame whatever the number of features.

export const GRID = 256;

export class DensityGrid {
  readonly counts = new Uint32Array(GRID * GRID);
  total = 0;
  private readonly cw: number;
  private readonly ch: number;
  private image: HTMLCanvasElement | null = null;

  constructor(
    readonly width: number,
    readonly height: number,
  ) {
    this.cw = Math.max(1, width / GRID);
    this.ch = Math.max(1, height / GRID);
  }

  private cell(x: number, y: number): number {
    const cx = Math.min(GRID - 1, Math.max(0, Math.floor(x / this.cw)));
    const cy = Math.min(GRID - 1, Math.max(0, Math.floor(y / this.ch)));
    return cy * GRID + cx;
  }

  /** Take the server's counts of a GRID x GRID grid over the whole slide. */
  setCounts(counts: number[]): void {
    this.counts.set(counts.slice(0, GRID * GRID));
    this.total = counts.reduce((a, b) => a + b, 0);
    this.image = null;
  }

  add(x: number, y: number, n = 1): void {
    const i = this.cell(x, y);
    if (n < 0 && this.counts[i] < -n) return;
    this.counts[i] += n;
    this.total += n;
    this.image = null;
  }

  /** Features counted in the cells a level-0 box touches (an upper bound of those inside it). */
  countIn(x0: number, y0: number, x1: number, y1: number): number {
    const a = Math.max(0, Math.floor(x0 / this.cw));
    const b = Math.min(GRID - 1, Math.floor(x1 / this.cw));
    const c = Math.max(0, Math.floor(y0 / this.ch));
    const d = Math.min(GRID - 1, Math.floor(y1 / this.ch));
    let n = 0;
    for (let y = c; y <= d; y++) for (let x = a; x <= b; x++) n += this.counts[y * GRID + x];
    return n;
  }

  /** The heat map as a GRID x GRID canvas (cached until the counts change), cells to scale. */
  heatImage(color: [number, number, number]): HTMLCanvasElement {
    if (!this.image) this.image = heatCanvas(this.counts, GRID, GRID, color);
    return this.image;
  }
}

/** A ``cols`` x ``rows`` heat image of counts (row by row): opacity grows with log(count). */
export function heatCanvas(
  counts: ArrayLike<number>,
  cols: number,
  rows: number,
  color: [number, number, number],
): HTMLCanvasElement {
  const canvas = document.createElement("canvas");
  canvas.width = cols;
  canvas.height = rows;
  const ctx = canvas.getContext("2d")!;
  const img = ctx.createImageData(cols, rows);
  let max = 0;
  for (let i = 0; i < counts.length; i++) if (counts[i] > max) max = counts[i];
  const scale = max > 0 ? 1 / Math.log1p(max) : 0;
  for (let i = 0; i < cols * rows; i++) {
    const v = counts[i];
    if (!v) continue;
    const t = Math.log1p(v) * scale; // 0..1
    img.data[i * 4] = color[0];
    img.data[i * 4 + 1] = color[1];
    img.data[i * 4 + 2] = color[2];
    img.data[i * 4 + 3] = Math.round(25 + 165 * t);
  }
  ctx.putImageData(img, 0, 0);
  return canvas;
}

/** The server's counts over one view (a sharper heat map than the whole-slide grid). */
export class ViewHeat {
  private image: HTMLCanvasElement | null = null;

  constructor(
    readonly bbox: [number, number, number, number],
    readonly cols: number,
    readonly rows: number,
    readonly counts: number[],
    readonly layers: string,
  ) {}

  heatImage(color: [number, number, number]): HTMLCanvasElement {
    if (!this.image) this.image = heatCanvas(this.counts, this.cols, this.rows, color);
    return this.image;
  }
}

export function hexToRgb(hex: string): [number, number, number] {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}
