// One slide's annotations as the viewer knows them, shared by every pane showing that slide (so a
// shape saved in one pane appears in the others). It loads what a view needs by bbox, remembers
// which boxes are fully loaded, and switches a view to the density grid when more features are in
// it than FEATURE_BUDGET. Every change goes to the server first and is applied when it answers.
import { ApiError } from "../api";
import * as client from "./client";
import { DensityGrid, GRID, ViewHeat } from "./density";
import { type Annotation, type BBox, contains, type Feature } from "./model";
import { SpatialIndex } from "./spatial";

/** Most features a view may load and draw as shapes; above, dense layers show as a heat map. */
export const FEATURE_BUDGET = 10_000;
/** A layer with more features than this over the slide is shown as a heat map at low zoom. */
export const DENSE_LAYER = 5_000;
/** Cells along the longer side of a view's heat map. */
const VIEW_GRID = 192;
/** Features kept in memory before the cache is emptied (views reload what they need). */
const CACHE_LIMIT = 60_000;
/** The layer of features the server sends without one. */
export const NO_LAYER = "(default)";

export type ViewMode = "features" | "density";

export interface LayerState {
  /** The layer's id (what features carry in properties.layer). */
  name: string;
  /** Its name for people, when the server told it. */
  label?: string;
  visible: boolean;
  locked: boolean;
  /** Whether the caller may add to it (from the server; unknown: assume so). */
  writable?: boolean;
}

export interface StoreStats {
  /** Features received for views (shape mode), since the store was made. */
  featuresFetched: number;
  /** Features read only to count them into the density grid (none since the server counts). */
  densityFetched: number;
  /** Density requests (whole-slide grids per layer, then one per view change at low zoom). */
  densityRequests: number;
  viewRequests: number;
}

export function layerOf(f: Feature): string {
  const l = f.properties.layer;
  return l === undefined || l === null || l === "" ? NO_LAYER : String(l);
}

export class AnnotationStore {
  readonly annotations = new Map<string, Annotation>();
  readonly layers = new Map<string, LayerState>();
  readonly grids = new Map<string, DensityGrid>();
  /** Each pane's heat map of its view (the server's counts over it). */
  readonly viewHeats = new Map<object, ViewHeat>();
  private readonly pendingHeats = new Map<object, { bbox: BBox; layers: string; done: Promise<void>; ctl: AbortController }>();
  readonly stats: StoreStats = { featuresFetched: 0, densityFetched: 0, viewRequests: 0, densityRequests: 0 };
  /** Whether the density grids count every feature of the slide. */
  gridComplete = false;
  /** Why this slide's annotations cannot be read (not allowed, no such API): stop asking. */
  unavailable: string | null = null;
  private gridLoading: Promise<void> | null = null;
  private loaded: BBox[] = [];
  /** Layers held entirely in memory (sparse layers, after the grid was counted). */
  private readonly wholeLayers = new Set<string>();
  private readonly listeners = new Set<() => void>();
  private readonly index: SpatialIndex;
  private readonly inflight = new Map<object, AbortController>();
  private denseHint = 0; // features per level-0 px² at least, from a truncated view query

  constructor(
    readonly slideId: string,
    readonly width: number,
    readonly height: number,
  ) {
    this.index = new SpatialIndex(width, height);
  }

  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  changed(): void {
    for (const fn of this.listeners) fn();
  }

  layer(name: string): LayerState {
    let l = this.layers.get(name);
    if (!l) {
      l = { name, visible: true, locked: false };
      this.layers.set(name, l);
      // a layer we have not heard of (made since, e.g. one's own on the first save): ask its name
      if (this.layersRead && !this.readingLayers) {
        this.layersRead = false;
        void this.loadLayers();
      }
    }
    return l;
  }

  private layersRead = false;
  private readingLayers = false;

  /** Names, locks and write rights of the slide's layers, from the server (once). */
  async loadLayers(): Promise<void> {
    if (this.layersRead || this.unavailable) return;
    this.layersRead = true;
    try {
      const infos = await client.getLayers(this.slideId);
      this.readingLayers = true;
      for (const info of infos) {
        const l = this.layer(info.id);
        l.label = info.name;
        l.writable = info.writable !== false && !info.locked;
        if (info.locked) l.locked = true;
      }
      this.changed();
    } catch {
      this.layersRead = false; // shown by id until a later try succeeds
    } finally {
      this.readingLayers = false;
    }
  }

  setLayer(name: string, patch: Partial<Omit<LayerState, "name">>): void {
    Object.assign(this.layer(name), patch);
    this.changed();
  }

  isDenseLayer(name: string): boolean {
    const g = this.grids.get(name);
    return !!g && g.total > DENSE_LAYER && !this.wholeLayers.has(name);
  }

  /** How a view of ``bbox`` is drawn: shapes, or the heat map for its dense layers. */
  modeFor(bbox: BBox): ViewMode {
    const area = Math.max(1, (bbox[2] - bbox[0]) * (bbox[3] - bbox[1]));
    if (this.gridComplete) {
      let n = 0;
      for (const [name, g] of this.grids) if (!this.wholeLayers.has(name) && this.layer(name).visible) n += g.countIn(...bbox);
      return n > FEATURE_BUDGET ? "density" : "features";
    }
    return this.denseHint * area >= FEATURE_BUDGET ? "density" : "features";
  }

  private isLoaded(bbox: BBox): boolean {
    return this.loaded.some((r) => contains(r, bbox));
  }

  /**
   * Make sure what ``owner``'s view (``bbox``, level-0) needs is here: the features in it, or the
   * density grid. A new call from the same owner cancels its previous request.
   */
  async ensure(owner: object, bbox: BBox): Promise<ViewMode> {
    if (!this.gridComplete && !this.unavailable) await this.loadGrid();
    const mode = this.modeFor(bbox);
    if (this.unavailable) return mode;
    if (mode === "density") {
      await this.loadViewHeat(owner, bbox);
      return mode;
    }
    if (this.isLoaded(bbox)) return mode;
    this.inflight.get(owner)?.abort();
    const ctl = new AbortController();
    this.inflight.set(owner, ctl);
    // ask for a margin around the view, so small pans need nothing new; if that is too much,
    // for the view alone; if even that is, the view is dense
    const w = bbox[2] - bbox[0];
    const hgt = bbox[3] - bbox[1];
    const padded: BBox = [
      Math.max(0, bbox[0] - w / 4),
      Math.max(0, bbox[1] - hgt / 4),
      Math.min(this.width, bbox[2] + w / 4),
      Math.min(this.height, bbox[3] + hgt / 4),
    ];
    const whole = (b: BBox) => b[0] <= 0 && b[1] <= 0 && b[2] >= this.width && b[3] >= this.height;
    const tries = contains(bbox, padded) ? [bbox] : [padded, bbox];
    try {
      for (const want of tries) {
        this.stats.viewRequests++;
        const res = await client.fetchInBBox(this.slideId, want, FEATURE_BUDGET, ctl.signal, (page) => {
          this.stats.featuresFetched += page.length;
          this.addFeatures(page);
          this.changed();
        });
        if (!res.truncated) {
          this.loaded.push(want);
          if (this.loaded.length > 64) this.loaded.splice(0, this.loaded.length - 64);
          return mode;
        }
        if (whole(want)) break;
      }
      this.switchToDensity(bbox);
      this.changed();
      return "density";
    } catch (err) {
      if ((err as Error).name === "AbortError") return mode;
      if (err instanceof ApiError && [401, 403, 404, 405].includes(err.status)) this.unavailable = err.message || err.code;
      throw err;
    } finally {
      if (this.inflight.get(owner) === ctl) this.inflight.delete(owner);
    }
  }

  private switchToDensity(bbox: BBox): void {
    const area = (bbox[2] - bbox[0]) * (bbox[3] - bbox[1]);
    this.denseHint = Math.max(this.denseHint, FEATURE_BUDGET / Math.max(1, area));
  }

  private addFeatures(features: Feature[]): void {
    if (this.annotations.size + features.length > CACHE_LIMIT) {
      this.annotations.clear();
      this.index.clear();
      this.loaded = [];
    }
    for (const f of features) {
      const a = client.toAnnotation(f);
      if (!a) continue;
      const old = this.annotations.get(a.id);
      if (old && (old.feature.properties.version ?? 0) > (a.feature.properties.version ?? 0)) continue;
      if (old?.etag && old.feature.properties.version === a.feature.properties.version) a.etag = old.etag;
      this.annotations.set(a.id, a);
      this.index.put(a);
      this.layer(layerOf(f));
    }
  }

  /**
   * The per-layer whole-slide grids, counted by the server (one density request per layer, no
   * feature read); layers that turn out sparse are then read whole and drawn as shapes.
   */
  loadGrid(): Promise<void> {
    if (this.gridLoading) return this.gridLoading;
    const all: BBox = [0, 0, this.width, this.height];
    this.gridLoading = (async () => {
      const infos = await client.getLayers(this.slideId);
      const sparse: string[] = [];
      this.grids.clear(); // a retry after a failed read counts from nothing again
      await Promise.all(
        infos.map(async (info) => {
          this.stats.densityRequests++;
          const d = await client.fetchDensity(this.slideId, all, GRID, GRID, [info.id]);
          this.layer(info.id);
          const g = new DensityGrid(this.width, this.height);
          g.setCounts(d.counts);
          this.grids.set(info.id, g);
          if (g.total > 0 && g.total <= DENSE_LAYER) sparse.push(info.id);
        }),
      );
      if (sparse.length) {
        this.stats.viewRequests++;
        const res = await client.fetchInBBox(this.slideId, all, Infinity, undefined, undefined, undefined, sparse);
        this.stats.featuresFetched += res.features.length;
        for (const name of sparse) this.wholeLayers.add(name);
        this.addFeatures(res.features);
      }
      this.gridComplete = true;
      this.changed();
    })().catch((err) => {
      if (err instanceof ApiError && [401, 403, 404, 405].includes(err.status)) this.unavailable = err.message || err.code;
      else this.gridLoading = null;
    });
    return this.gridLoading;
  }

  /** The dense layers shown, as the key of a view's heat map ("" when none). */
  denseShown(): string {
    return [...this.grids.keys()].filter((n) => this.layer(n).visible && this.isDenseLayer(n)).join(",");
  }

  /**
   * One density request for ``owner``'s view (with a margin of a quarter view each side), unless
   * its heat map already covers the view at a sharp enough grid and for the layers shown.
   */
  private async loadViewHeat(owner: object, bbox: BBox): Promise<void> {
    const layers = this.denseShown();
    if (!layers) {
      this.viewHeats.delete(owner);
      return;
    }
    const w = bbox[2] - bbox[0];
    const h = bbox[3] - bbox[1];
    const want: BBox = [
      Math.max(0, Math.floor(bbox[0] - w / 4)),
      Math.max(0, Math.floor(bbox[1] - h / 4)),
      Math.min(this.width, Math.ceil(bbox[2] + w / 4)),
      Math.min(this.height, Math.ceil(bbox[3] + h / 4)),
    ];
    if (want[2] <= want[0] || want[3] <= want[1]) return;
    const area = (b: BBox) => (b[2] - b[0]) * (b[3] - b[1]);
    const current = this.viewHeats.get(owner);
    if (current && current.layers === layers && contains(current.bbox, bbox) && area(current.bbox) <= 4 * area(want)) return;
    // the same view asked again (frames while the answer comes): wait for that answer
    const pending = this.pendingHeats.get(owner);
    if (pending && pending.layers === layers && contains(pending.bbox, bbox) && area(pending.bbox) <= 4 * area(want)) {
      return pending.done;
    }
    this.inflight.get(owner)?.abort();
    const ctl = new AbortController();
    this.inflight.set(owner, ctl);
    const done = this.fetchViewHeat(owner, want, layers, ctl);
    this.pendingHeats.set(owner, { bbox: want, layers, done, ctl });
    return done;
  }

  private async fetchViewHeat(owner: object, want: BBox, layers: string, ctl: AbortController): Promise<void> {
    const ww = want[2] - want[0];
    const wh = want[3] - want[1];
    const cols = ww >= wh ? VIEW_GRID : Math.max(1, Math.round((VIEW_GRID * ww) / wh));
    const rows = wh >= ww ? VIEW_GRID : Math.max(1, Math.round((VIEW_GRID * wh) / ww));
    try {
      this.stats.densityRequests++;
      const d = await client.fetchDensity(this.slideId, want, cols, rows, layers.split(","), ctl.signal);
      this.viewHeats.set(owner, new ViewHeat(want, d.cols, d.rows, d.counts, layers));
      this.changed();
    } catch (err) {
      if ((err as Error).name !== "AbortError") throw err;
    } finally {
      if (this.inflight.get(owner) === ctl) this.inflight.delete(owner);
      if (this.pendingHeats.get(owner)?.ctl === ctl) this.pendingHeats.delete(owner);
    }
  }

  /** Annotations whose box meets ``bbox``, of visible layers; dense layers left out in density mode. */
  inView(bbox: BBox, mode: ViewMode): Annotation[] {
    const out: Annotation[] = [];
    const shown = new Map<string, boolean>();
    this.index.query(bbox, (a) => {
      const name = layerOf(a.feature);
      let ok = shown.get(name);
      if (ok === undefined) {
        ok = this.layer(name).visible && !(mode === "density" && !this.wholeLayers.has(name) && this.grids.has(name));
        shown.set(name, ok);
      }
      if (ok) out.push(a);
    });
    return out;
  }

  // ---- changes: server first, then here ----

  private put(a: Annotation): void {
    const before = this.annotations.get(a.id);
    this.annotations.set(a.id, a);
    this.index.put(a);
    this.layer(layerOf(a.feature));
    const grid = this.grids.get(layerOf(a.feature));
    if (grid) {
      if (before) grid.add((before.bbox[0] + before.bbox[2]) / 2, (before.bbox[1] + before.bbox[3]) / 2, -1);
      grid.add((a.bbox[0] + a.bbox[2]) / 2, (a.bbox[1] + a.bbox[3]) / 2);
    }
    this.changed();
  }

  async create(f: Feature): Promise<Annotation> {
    const a = await client.createFeature(this.slideId, f);
    this.put(a);
    return a;
  }

  async update(id: string, f: Feature): Promise<Annotation> {
    const current = this.annotations.get(id) ?? (await client.getFeature(id));
    try {
      const a = await client.updateFeature(current, f);
      this.put(a);
      return a;
    } catch (err) {
      if (err instanceof client.ConflictError) await this.reload(id);
      throw err;
    }
  }

  async remove(id: string): Promise<void> {
    const current = this.annotations.get(id);
    if (!current) return;
    try {
      await client.deleteFeature(current);
    } catch (err) {
      if (err instanceof client.ConflictError) await this.reload(id);
      throw err;
    }
    this.annotations.delete(id);
    this.index.remove(id);
    this.grids.get(layerOf(current.feature))?.add((current.bbox[0] + current.bbox[2]) / 2, (current.bbox[1] + current.bbox[3]) / 2, -1);
    this.changed();
  }

  /** Replace our copy with the server's (after a 412), or drop it when it is gone. */
  async reload(id: string): Promise<void> {
    try {
      this.put(await client.getFeature(id));
    } catch {
      this.annotations.delete(id);
      this.index.remove(id);
      this.changed();
    }
  }
}

const stores = new Map<string, AnnotationStore>();

/** The one store of a slide, shared by all panes that show it. */
export function storeFor(slideId: string, width: number, height: number): AnnotationStore {
  let s = stores.get(slideId);
  if (!s) stores.set(slideId, (s = new AnnotationStore(slideId, width, height)));
  return s;
}

/**
 * The ids of a slide's annotation layers shown now (a report figure draws those), or null when
 * the viewer has not read the slide's layers (the server then draws its default ones).
 */
export function visibleLayers(slideId: string): string[] | null {
  const s = stores.get(slideId);
  if (!s || s.unavailable || !s.layers.size) return null;
  return [...s.layers.values()].filter((l) => l.visible && l.name !== NO_LAYER).map((l) => l.name);
}

export function allStores(): AnnotationStore[] {
  return [...stores.values()];
}

