// What the user is doing with annotations, across all panes: the tool, the class, the selection,
// the shape being drawn, and the actions (save, move, edit, delete, undo, redo). Panes' overlays
// draw from this state and send pointer input to it; the panel shows it.
import { ApiError } from "../api";
import { CLASSES, classColor } from "./classes";
import { ConflictError } from "./client";
import { History, writableFeature } from "./history";
import { describe, measure, type Mpp } from "./measure";
import { type Annotation, cloneGeometry, type Feature, type Geometry, type Position } from "./model";
import { closeRing, ellipse, rectangle } from "./shapes";
import type { AnnotationStore } from "./store";

export const TOOLS = ["select", "point", "polyline", "polygon", "freehand", "rectangle", "ellipse"] as const;
export type Tool = (typeof TOOLS)[number];

/** The shape being drawn, in one store (slide), in level-0 pixels. */
export interface Draft {
  store: AnnotationStore;
  mpp: Mpp | null;
  tool: Exclude<Tool, "select">;
  points: Position[];
  /** Where the pointer is: the rubber band of click-by-click tools, the far corner of boxes. */
  hover: Position | null;
}

export interface Selection {
  store: AnnotationStore;
  id: string;
  mpp: Mpp | null;
}

export class Editor {
  tool: Tool | null = null;
  className: string = CLASSES[0].name;
  /** The layer new shapes go to; null lets the server choose (the author's own layer). */
  layer: string | null = null;
  draft: Draft | null = null;
  selection: Selection | null = null;
  /** A moved or reshaped copy of the selection while the pointer drags it. */
  preview: Geometry | null = null;
  /** What the preview is: the selection moved whole, or one of its vertices moved. */
  previewKind: "move" | "vertex" = "move";
  readonly history: History;
  private readonly listeners = new Set<() => void>();
  private saving = false;

  constructor(private readonly notify: (text: string, kind?: "info" | "error") => void) {
    this.history = new History(() => this.changed());
  }

  subscribe(fn: () => void): void {
    this.listeners.add(fn);
  }

  changed(): void {
    for (const fn of this.listeners) fn();
  }

  setTool(tool: Tool | null): void {
    this.tool = tool;
    this.draft = null;
    this.preview = null;
    this.changed();
  }

  setClass(name: string): void {
    this.className = name;
    const sel = this.selected();
    if (sel && sel.feature.properties.class !== name) {
      const f = writableFeature(sel.feature);
      f.properties = { ...f.properties, class: name, colour: classColor(name) };
      void this.saveUpdate(this.selection!.store, sel, f);
    }
    this.changed();
  }

  selected(): Annotation | null {
    return this.selection ? (this.selection.store.annotations.get(this.selection.id) ?? null) : null;
  }

  select(s: Selection | null): void {
    this.selection = s;
    this.preview = null;
    const a = this.selected();
    if (a?.feature.properties.class) this.className = String(a.feature.properties.class);
    this.changed();
  }

  /** The measurement readout: live while drawing or dragging, the server's once saved. */
  readout(): string {
    if (this.draft) {
      const g = this.draftGeometry(true);
      return g ? describe(measure(g, this.draft.mpp)) : "";
    }
    const a = this.selected();
    if (!a) return "";
    if (this.preview) return describe(measure(this.preview, this.selection!.mpp));
    const p = a.feature.properties;
    const m = p.measurements;
    if (p.measurements_unavailable || m === null || (m === undefined && !this.selection!.mpp)) return "no MPP: no measurements";
    return describe(m ?? measure(a.feature.geometry, this.selection!.mpp));
  }

  // ---- drawing ----

  begin(store: AnnotationStore, mpp: Mpp | null, at: Position): void {
    if (!this.tool || this.tool === "select") return;
    if (this.draft && this.draft.store !== store) this.draft = null;
    this.selection = null;
    if (!this.draft) this.draft = { store, mpp, tool: this.tool, points: [], hover: at };
    this.draft.points.push(at);
    this.changed();
  }

  /** The geometry drawn so far; with ``live`` the pointer's position counts as the next vertex. */
  draftGeometry(live = false): Geometry | null {
    const d = this.draft;
    if (!d) return null;
    const pts = live && d.hover && d.tool !== "freehand" ? [...d.points, d.hover] : d.points;
    const first = pts[0];
    const last = pts[pts.length - 1];
    switch (d.tool) {
      case "point":
        return first ? { type: "Point", coordinates: first } : null;
      case "polyline":
        return pts.length >= 2 ? { type: "LineString", coordinates: pts } : null;
      case "polygon":
      case "freehand":
        return pts.length >= 3 ? { type: "Polygon", coordinates: [closeRing(pts)] } : pts.length === 2 ? { type: "LineString", coordinates: pts } : null;
      case "rectangle":
        return pts.length >= 2 && (first[0] !== last[0] || first[1] !== last[1]) ? rectangle(first, last) : null;
      case "ellipse":
        return pts.length >= 2 && first[0] !== last[0] && first[1] !== last[1] ? ellipse(first, last) : null;
    }
  }

  cancel(): void {
    if (this.draft) this.draft = null;
    else if (this.selection) this.selection = null;
    this.preview = null;
    this.changed();
  }

  undoVertex(): void {
    if (!this.draft) return;
    this.draft.points.pop();
    if (!this.draft.points.length) this.draft = null;
    this.changed();
  }

  /** Save the draft as an annotation (Enter, double-click, the end of a drag). */
  async finish(): Promise<void> {
    const d = this.draft;
    if (!d || this.saving) return;
    const g = this.draftGeometry(false);
    const closedEnough = d.tool === "polygon" || d.tool === "freehand" ? g?.type === "Polygon" : !!g;
    if (!g || !closedEnough) {
      this.notify(d.tool === "polyline" ? "A line needs two points." : "A polygon needs three points.", "error");
      return;
    }
    this.draft = null;
    const properties: Feature["properties"] = { class: this.className, colour: classColor(this.className) };
    if (this.layer && d.store.layers.has(this.layer)) properties.layer = this.layer;
    if (d.tool === "rectangle" || d.tool === "ellipse") properties.shape = d.tool;
    const feature: Feature = { type: "Feature", geometry: g, properties };
    this.saving = true;
    this.changed();
    try {
      const a = await d.store.create(feature);
      this.history.record({ kind: "create", store: d.store, id: a.id, feature: a.feature });
      this.select({ store: d.store, id: a.id, mpp: d.mpp });
      this.notify("Saved.");
    } catch (err) {
      this.fail(err);
    } finally {
      this.saving = false;
      this.changed();
    }
  }

  // ---- editing the selection ----

  async commitPreview(): Promise<void> {
    const a = this.selected();
    const g = this.preview;
    if (!a || !g || !this.selection) return;
    const f = writableFeature(a.feature);
    // a moved vertex makes a rectangle or an ellipse a plain polygon
    if (this.previewKind === "vertex") delete f.properties.shape;
    f.geometry = cloneGeometry(g);
    await this.saveUpdate(this.selection.store, a, f);
  }

  private async saveUpdate(store: AnnotationStore, a: Annotation, f: Feature): Promise<void> {
    const before = a.feature;
    try {
      const saved = await store.update(a.id, f);
      this.history.record({ kind: "update", store, id: a.id, before, after: saved.feature });
      this.notify("Saved.");
    } catch (err) {
      this.fail(err);
    } finally {
      this.preview = null;
      this.changed();
    }
  }

  /** Bring the selected annotation back to an earlier version's state (a new version; undoable). */
  async restore(f: Feature): Promise<void> {
    const a = this.selected();
    if (!a || !this.selection) return;
    await this.saveUpdate(this.selection.store, a, f);
  }

  async deleteSelected(): Promise<void> {
    const a = this.selected();
    const s = this.selection;
    if (!a || !s) return;
    this.selection = null;
    try {
      await s.store.remove(a.id);
      this.history.record({ kind: "delete", store: s.store, id: a.id, feature: a.feature });
      this.notify("Deleted.");
    } catch (err) {
      this.fail(err);
    }
    this.changed();
  }

  async undo(): Promise<void> {
    if (!this.history.canUndo) return;
    this.selection = null;
    try {
      await this.history.undo();
      this.notify("Undone.");
    } catch (err) {
      this.fail(err);
    }
  }

  async redo(): Promise<void> {
    if (!this.history.canRedo) return;
    this.selection = null;
    try {
      await this.history.redo();
      this.notify("Redone.");
    } catch (err) {
      this.fail(err);
    }
  }

  private fail(err: unknown): void {
    if (err instanceof ConflictError) {
      this.notify("Someone else changed this annotation: the latest version is shown, your change was not saved.", "error");
    } else if (err instanceof ApiError) {
      this.notify(`Not saved: ${err.message || err.code}`, "error");
    } else {
      this.notify(`Not saved: ${(err as Error).message}`, "error");
    }
  }
}
