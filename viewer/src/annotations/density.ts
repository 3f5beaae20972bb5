// A coarse count grid over the slide, one per layer, for the heat map shown at low zoom when a
// layer has too many features to draw (an algorithm's 200,000 cell detections). Counts are kept
// per cell of a fixed 256 x 256 grid over the slide; the heat map is a 256 x 256 image drawn with
// the same transform as the shapes, so one drawImage per frame whatever the number of features.

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
    if (this.image) return this.image;
    const canvas = document.createElement("canvas");
    canvas.width = GRID;
    canvas.height = GRID;
    const ctx = canvas.getContext("2d")!;
    const img = ctx.createImageData(GRID, GRID);
    let max = 0;
    for (const v of this.counts) if (v > max) max = v;
    const scale = max > 0 ? 1 / Math.log1p(max) : 0;
    for (let i = 0; i < this.counts.length; i++) {
      const v = this.counts[i];
      if (!v) continue;
      const t = Math.log1p(v) * scale; // 0..1
      img.data[i * 4] = color[0];
      img.data[i * 4 + 1] = color[1];
      img.data[i * 4 + 2] = color[2];
      img.data[i * 4 + 3] = Math.round(25 + 165 * t);
    }
    ctx.putImageData(img, 0, 0);
    this.image = canvas;
    return canvas;
  }
}

export function hexToRgb(hex: string): [number, number, number] {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}
