// One pane's annotation layer: a canvas over OpenSeadragon, redrawn whenever the viewport moves,
// in screen pixels from level-0 coordinates through one affine transform (rotation included).
// Shapes are batched by colour into one path each; dense layers at low zoom are one heat-map
// image. The overlay also turns pointer input into the editor's actions while a tool is on.
import OpenSeadragon from "openseadragon";
import { debounce } from "../util";
import { classColor } from "./classes";
import { hexToRgb } from "./density";
import type { Editor } from "./editor";
import type { Mpp } from "./measure";
import { type Annotation, type BBox, contains, type Geometry, type Position, translate } from "./model";
import { hits, moveVertex, vertices } from "./shapes";
import { type AnnotationStore, layerOf, storeFor, type ViewMode } from "./store";

/** What the overlay needs of a pane (pane.ts implements it). */
export interface PaneLike {
  readonly el: HTMLElement;
  readonly osd: OpenSeadragon.Viewer;
  readonly slide: { id: string; width: number; height: number; mpp_x: number | null; mpp_y: number | null } | null;
}

interface Affine {
  ox: number;
  oy: number;
  xx: number;
  xy: number;
  yx: number;
  yy: number;
}

const HIT_PX = 6;
const HANDLE_PX = 4;
const HEAT_COLOR = hexToRgb("#ff3b00");

export class PaneOverlay {
  readonly canvas: HTMLCanvasElement;
  store: AnnotationStore | null = null;
  mode: ViewMode = "features";
  /** Shapes drawn in the last frame (for the tests: bounded whatever the slide holds). */
  drawnShapes = 0;
  /** How long the last frames' drawing took (ms), newest last, for the tests and the curious. */
  readonly drawTimes: number[] = [];
  private readonly ctx: CanvasRenderingContext2D;
  private unsubscribe: (() => void) | null = null;
  private frameRequested = false;
  private drag: { kind: "move" | "vertex" | "box" | "freehand"; from: Position; ring?: number; index?: number } | null = null;
  private readonly requestData = debounce(() => void this.load(), 120);

  constructor(
    readonly pane: PaneLike,
    private readonly editor: Editor,
  ) {
    this.canvas = document.createElement("canvas");
    this.canvas.className = "annotation-layer";
    this.canvas.setAttribute("aria-hidden", "true");
    this.ctx = this.canvas.getContext("2d")!;
    pane.el.querySelector(".osd")!.after(this.canvas);
    this.installInput();
  }

  get mpp(): Mpp | null {
    const s = this.pane.slide;
    return s?.mpp_x && s.mpp_x > 0 ? { x: s.mpp_x, y: s.mpp_y && s.mpp_y > 0 ? s.mpp_y : s.mpp_x } : null;
  }

  /** The pane opened a slide: show that slide's annotations. */
  slideOpened(): void {
    const s = this.pane.slide;
    this.unsubscribe?.();
    this.store = s ? storeFor(s.id, s.width, s.height) : null;
    this.unsubscribe = this.store ? this.store.subscribe(() => this.requestFrame()) : null;
    void this.store?.loadLayers();
    this.viewChanged();
  }

  /** The viewport moved (every animation frame while it does). */
  viewChanged(): void {
    this.draw();
    this.requestData();
  }

  requestFrame(): void {
    if (this.frameRequested) return;
    this.frameRequested = true;
    requestAnimationFrame(() => {
      this.frameRequested = false;
      this.draw();
    });
  }

  private async load(): Promise<void> {
    const store = this.store;
    const box = this.viewBBox();
    if (!store || !box) return;
    try {
      await store.ensure(this, box);
    } catch {
      /* a failed read leaves what is drawn; the next view change retries */
    }
    this.requestFrame(); // the frame decides the mode (store.modeFor) and says it in data-annotation-mode
  }

  // ---- coordinates ----

  private affine(): Affine | null {
    const s = this.pane.slide;
    const vp = this.pane.osd.viewport;
    if (!s || !this.pane.osd.world.getItemAt(0)) return null;
    const o = vp.imageToViewerElementCoordinates(new OpenSeadragon.Point(0, 0));
    const ax = vp.imageToViewerElementCoordinates(new OpenSeadragon.Point(s.width, 0));
    const ay = vp.imageToViewerElementCoordinates(new OpenSeadragon.Point(0, s.height));
    return { ox: o.x, oy: o.y, xx: (ax.x - o.x) / s.width, xy: (ax.y - o.y) / s.width, yx: (ay.x - o.x) / s.height, yy: (ay.y - o.y) / s.height };
  }

  /** The level-0 box the pane shows now. */
  viewBBox(): BBox | null {
    const s = this.pane.slide;
    if (!s || !this.pane.osd.world.getItemAt(0)) return null;
    const vp = this.pane.osd.viewport;
    const size = vp.getContainerSize();
    const corners = [[0, 0], [size.x, 0], [0, size.y], [size.x, size.y]].map(([x, y]) => vp.viewerElementToImageCoordinates(new OpenSeadragon.Point(x, y)));
    const xs = corners.map((p) => p.x);
    const ys = corners.map((p) => p.y);
    return [Math.max(0, Math.min(...xs)), Math.max(0, Math.min(...ys)), Math.min(s.width, Math.max(...xs)), Math.min(s.height, Math.max(...ys))];
  }

  private toL0(e: PointerEvent | MouseEvent): Position {
    const r = this.canvas.getBoundingClientRect();
    const p = this.pane.osd.viewport.viewerElementToImageCoordinates(new OpenSeadragon.Point(e.clientX - r.left, e.clientY - r.top));
    return [p.x, p.y];
  }

  /** Level-0 pixels per screen pixel. */
  private l0PerPx(): number {
    const a = this.affine();
    return a ? 1 / Math.hypot(a.xx, a.xy) : 1;
  }

  // ---- drawing ----

  draw(): void {
    const t0 = performance.now();
    this.paint();
    this.drawTimes.push(performance.now() - t0);
    if (this.drawTimes.length > 2000) this.drawTimes.splice(0, 1000);
  }

  private paint(): void {
    const ctx = this.ctx;
    const dpr = window.devicePixelRatio || 1;
    const w = this.canvas.clientWidth;
    const hgt = this.canvas.clientHeight;
    if (this.canvas.width !== Math.round(w * dpr) || this.canvas.height !== Math.round(hgt * dpr)) {
      this.canvas.width = Math.round(w * dpr);
      this.canvas.height = Math.round(hgt * dpr);
    }
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    const store = this.store;
    const a = this.affine();
    const box = this.viewBBox();
    this.drawnShapes = 0;
    if (!store || !a || !box) return;
    const mode = store.modeFor(box);
    this.mode = mode;
    if (mode === "density") {
      ctx.setTransform(dpr * a.xx, dpr * a.xy, dpr * a.yx, dpr * a.yy, dpr * a.ox, dpr * a.oy);
      ctx.imageSmoothingEnabled = true;
      const heat = store.viewHeats.get(this);
      const layers = store.denseShown();
      if (heat && heat.layers === layers && contains(heat.bbox, box)) {
        const [x0, y0, x1, y1] = heat.bbox;
        ctx.drawImage(heat.heatImage(HEAT_COLOR), x0, y0, x1 - x0, y1 - y0);
      } else {
        // until this view's counts come: the whole-slide grids
        for (const [name, grid] of store.grids) {
          if (!store.layer(name).visible || !store.isDenseLayer(name)) continue;
          ctx.drawImage(grid.heatImage(HEAT_COLOR), 0, 0, grid.width, grid.height);
        }
        if (layers && heat?.layers !== layers) this.requestData();
      }
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const sel = this.editor.selection?.store === store ? this.editor.selection.id : null;
    const byColor = new Map<string, Annotation[]>();
    for (const ann of store.inView(box, mode)) {
      if (ann.id === sel) continue;
      const p = ann.feature.properties;
      const c = classColor(p.class, p.colour ?? p.color);
      let list = byColor.get(c);
      if (!list) byColor.set(c, (list = []));
      list.push(ann);
    }
    for (const [color, list] of byColor) {
      this.drawnShapes += list.length;
      this.strokeShapes(list.map((x) => x.feature.geometry), a, color, false);
    }
    const selected = this.editor.selected();
    if (sel && selected) {
      const g = this.editor.preview ?? selected.feature.geometry;
      const p = selected.feature.properties;
      this.strokeShapes([g], a, classColor(p.class, p.colour ?? p.color), true);
      this.drawHandles(g, a);
      this.drawnShapes++;
    }
    const d = this.editor.draft;
    if (d && d.store === store) {
      const g = this.editor.draftGeometry(true);
      if (g) this.strokeShapes([g], a, classColor(this.editor.className), true);
      for (const v of d.points) this.handle(v, a);
    }
    this.pane.el.dataset.annotationMode = mode;
    this.pane.el.dataset.annotationShapes = String(this.drawnShapes);
  }

  private strokeShapes(list: Geometry[], a: Affine, color: string, emphasis: boolean): void {
    const ctx = this.ctx;
    const lines = new Path2D();
    const areas = new Path2D();
    const dots = new Path2D();
    const X = (p: Position) => a.ox + p[0] * a.xx + p[1] * a.yx;
    const Y = (p: Position) => a.oy + p[0] * a.xy + p[1] * a.yy;
    const ring = (path: Path2D, pts: Position[], close: boolean) => {
      if (!pts.length) return;
      path.moveTo(X(pts[0]), Y(pts[0]));
      for (let i = 1; i < pts.length; i++) path.lineTo(X(pts[i]), Y(pts[i]));
      if (close) path.closePath();
    };
    const r = emphasis ? 4 : 2.5;
    for (const g of list) {
      if (g.type === "Point") dots.rect(X(g.coordinates) - r, Y(g.coordinates) - r, 2 * r, 2 * r);
      else if (g.type === "MultiPoint") for (const c of g.coordinates) dots.rect(X(c) - r, Y(c) - r, 2 * r, 2 * r);
      else if (g.type === "LineString") ring(lines, g.coordinates, false);
      else for (const rg of g.coordinates) ring(areas, rg, true);
    }
    ctx.fillStyle = color + (emphasis ? "40" : "22");
    ctx.fill(areas, "evenodd");
    ctx.strokeStyle = color;
    ctx.lineWidth = emphasis ? 2.5 : 1.5;
    ctx.stroke(areas);
    ctx.stroke(lines);
    ctx.fillStyle = color;
    ctx.fill(dots);
  }

  private handle(p: Position, a: Affine): void {
    const x = a.ox + p[0] * a.xx + p[1] * a.yx;
    const y = a.oy + p[0] * a.xy + p[1] * a.yy;
    this.ctx.fillStyle = "#fff";
    this.ctx.strokeStyle = "#111";
    this.ctx.lineWidth = 1;
    this.ctx.fillRect(x - HANDLE_PX, y - HANDLE_PX, 2 * HANDLE_PX, 2 * HANDLE_PX);
    this.ctx.strokeRect(x - HANDLE_PX, y - HANDLE_PX, 2 * HANDLE_PX, 2 * HANDLE_PX);
  }

  private drawHandles(g: Geometry, a: Affine): void {
    const vs = vertices(g);
    if (vs.length > 400) return;
    for (const v of vs) this.handle(v.at, a);
  }

  // ---- pointer input (capture phase, before OpenSeadragon sees it) ----

  private hitTest(p: Position): Annotation | null {
    const store = this.store;
    const box = this.viewBBox();
    if (!store || !box) return null;
    const tol = HIT_PX * this.l0PerPx();
    let found: Annotation | null = null;
    for (const a of store.inView(box, this.mode)) {
      if (a.bbox[0] - tol > p[0] || a.bbox[2] + tol < p[0] || a.bbox[1] - tol > p[1] || a.bbox[3] + tol < p[1]) continue;
      if (store.layer(layerOf(a.feature)).locked) continue;
      if (hits(a.feature.geometry, p, tol)) found = a; // the last drawn is on top
    }
    return found;
  }

  private installInput(): void {
    const el = this.pane.el;
    const ed = this.editor;
    const stop = (e: Event) => {
      e.stopPropagation();
      e.preventDefault();
    };
    el.addEventListener("pointerdown", (e) => {
      if (!ed.tool || e.button !== 0 || !this.store || !(e.target instanceof Node) || !this.pane.el.querySelector(".osd")!.contains(e.target)) return;
      const p = this.toL0(e);
      if (ed.tool === "select") {
        const sel = ed.selected();
        const tol = HANDLE_PX * 2 * this.l0PerPx();
        if (sel && ed.selection?.store === this.store) {
          const v = vertices(sel.feature.geometry).find((v) => Math.hypot(v.at[0] - p[0], v.at[1] - p[1]) <= tol);
          if (v && sel.feature.geometry.type !== "Point") {
            this.drag = { kind: "vertex", from: p, ring: v.ring, index: v.index };
            el.setPointerCapture(e.pointerId);
            return stop(e);
          }
        }
        const hit = this.hitTest(p);
        if (!hit) {
          if (ed.selection) ed.select(null);
          return; // a drag on nothing pans, as usual
        }
        ed.select({ store: this.store, id: hit.id, mpp: this.mpp });
        this.drag = { kind: "move", from: p };
        el.setPointerCapture(e.pointerId);
        return stop(e);
      }
      stop(e);
      el.setPointerCapture(e.pointerId);
      if (ed.tool === "rectangle" || ed.tool === "ellipse") {
        ed.draft = null;
        ed.begin(this.store, this.mpp, p);
        ed.begin(this.store, this.mpp, p);
        this.drag = { kind: "box", from: p };
      } else if (ed.tool === "freehand") {
        ed.draft = null;
        ed.begin(this.store, this.mpp, p);
        this.drag = { kind: "freehand", from: p };
      } else if (ed.tool === "point") {
        ed.draft = null;
        ed.begin(this.store, this.mpp, p);
        void ed.finish();
      } else {
        // polyline, polygon: one vertex per click; a click on the last vertex (the second click of
        // a double-click) finishes the shape
        const d = ed.draft;
        const last = d?.store === this.store ? d.points[d.points.length - 1] : null;
        if (last && Math.hypot(last[0] - p[0], last[1] - p[1]) <= 3 * this.l0PerPx()) {
          void ed.finish();
          return;
        }
        ed.begin(this.store, this.mpp, p);
      }
    }, { capture: true });

    el.addEventListener("pointermove", (e) => {
      const ed = this.editor;
      if (!ed.tool || !this.store) return;
      const p = this.toL0(e);
      const d = ed.draft;
      if (this.drag) {
        stop(e);
        if (this.drag.kind === "box" && d) d.points[d.points.length - 1] = p;
        else if (this.drag.kind === "freehand" && d) {
          const last = d.points[d.points.length - 1];
          if (Math.hypot(last[0] - p[0], last[1] - p[1]) >= 3 * this.l0PerPx()) d.points.push(p);
        } else if (this.drag.kind === "move") {
          const sel = ed.selected();
          ed.previewKind = "move";
          if (sel) ed.preview = translate(sel.feature.geometry, p[0] - this.drag.from[0], p[1] - this.drag.from[1]);
        } else if (this.drag.kind === "vertex") {
          const sel = ed.selected();
          ed.previewKind = "vertex";
          if (sel) ed.preview = moveVertex(sel.feature.geometry, this.drag.ring!, this.drag.index!, p);
        }
        ed.changed();
      } else if (d && d.store === this.store) {
        d.hover = p;
        ed.changed();
      }
    }, { capture: true });

    const end = (e: PointerEvent) => {
      const drag = this.drag;
      if (!drag) return;
      this.drag = null;
      stop(e);
      if (el.hasPointerCapture(e.pointerId)) el.releasePointerCapture(e.pointerId);
      if (drag.kind === "box" || drag.kind === "freehand") void this.editor.finish();
      else if (this.editor.preview) void this.editor.commitPreview();
    };
    el.addEventListener("pointerup", end, { capture: true });
    el.addEventListener("pointercancel", end, { capture: true });
    // clicks and double-clicks that draw must not zoom
    for (const ev of ["click", "dblclick"]) {
      el.addEventListener(ev, (e) => {
        if (!this.editor.tool || this.editor.tool === "select") return;
        if (!(e.target instanceof Node) || !el.querySelector(".osd")!.contains(e.target)) return;
        stop(e);
        if (ev === "dblclick" && this.editor.draft) void this.editor.finish();
      }, { capture: true });
    }
  }
}
