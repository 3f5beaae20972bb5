// One slide pane: an OpenSeadragon viewer on a Deep Zoom tile source, with a scale bar, a
// magnification readout, a ruler and brightness/contrast/gamma. Positions shared with other panes
// are physical: micrometres from the slide's origin (level-0 pixel x mpp), so panes of slides with
// different resolutions follow each other by the tissue they show.
//
// Coordinate spaces, named as in the server's code: l0_ level-0 pixels, um_ micrometres,
// vp_ OpenSeadragon viewport units, el_ CSS pixels in the pane's element.
import OpenSeadragon from "openseadragon";
import { authHeaders, getDzi, getSlide, notifyUnauthorized, type SlideDetail } from "./api";
import { formatLength, h, niceBelow } from "./util";

export const MAGNIFICATIONS = [1, 2, 5, 10, 20, 40] as const;

/** A physical view: centre in micrometres and micrometres per screen (CSS) pixel. */
export interface PhysicalView {
  um_cx: number;
  um_cy: number;
  um_per_px: number;
}

export interface Adjustments {
  brightness: number;
  contrast: number;
  gamma: number;
}

export const NEUTRAL: Adjustments = { brightness: 1, contrast: 1, gamma: 1 };

export interface PerfRecord {
  kind: "open" | "switch";
  id: string;
  first_tile_ms: number;
  full_ms: number | null;
}

/** Every first-tile and fully-loaded timing, for the tests and the curious (window.slideviewer.perf). */
export const perfLog: PerfRecord[] = [];

let paneSerial = 0;

export class Pane {
  readonly el: HTMLElement;
  readonly osd: OpenSeadragon.Viewer;
  slide: SlideDetail | null = null;
  adjustments: Adjustments = { ...NEUTRAL };
  private readonly n = ++paneSerial;
  private readonly osdEl: HTMLElement;
  private readonly scaleBar: HTMLElement;
  private readonly scaleLabel: HTMLElement;
  private readonly magLabel: HTMLElement;
  private readonly title: HTMLElement;
  private readonly message: HTMLElement;
  private readonly svg: SVGSVGElement;
  private readonly gammaFilter: SVGFilterElement;
  private ruler: { l0_a: OpenSeadragon.Point; l0_b: OpenSeadragon.Point } | null = null;
  private rulerMode = false;
  private openToken = 0;
  /** Called when a slide is open (annotations: load its layer) and when the viewport moves. */
  readonly listeners = { open: new Set<() => void>(), view: new Set<() => void>() };

  constructor(
    parent: HTMLElement,
    private readonly onChange: (pane: Pane) => void,
    private readonly onActivate: (pane: Pane) => void,
  ) {
    this.osdEl = h("div.osd");
    this.scaleBar = h("div.bar");
    this.scaleLabel = h("span.label");
    this.magLabel = h("div.mag-readout", { title: "Current magnification" });
    this.title = h("div.pane-title");
    this.message = h("div.pane-message", { hidden: true });
    this.svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    this.svg.classList.add("ruler-layer");
    this.el = h(
      "div.pane",
      { "data-pane": String(this.n) },
      this.osdEl,
      this.svg,
      this.title,
      h("div.scalebar", { "aria-label": "Scale bar" }, this.scaleBar, this.scaleLabel),
      this.magLabel,
      this.message,
    );
    parent.append(this.el);

    const defs = document.querySelector("#svg-filters defs")!;
    this.gammaFilter = document.createElementNS("http://www.w3.org/2000/svg", "filter");
    this.gammaFilter.id = `gamma-${this.n}`;
    this.gammaFilter.setAttribute("color-interpolation-filters", "sRGB");
    const transfer = document.createElementNS("http://www.w3.org/2000/svg", "feComponentTransfer");
    for (const c of ["R", "G", "B"]) {
      const f = document.createElementNS("http://www.w3.org/2000/svg", `feFunc${c}`);
      f.setAttribute("type", "gamma");
      f.setAttribute("amplitude", "1");
      f.setAttribute("offset", "0");
      f.setAttribute("exponent", "1");
      transfer.append(f);
    }
    this.gammaFilter.append(transfer);
    defs.append(this.gammaFilter);

    this.osd = OpenSeadragon({
      element: this.osdEl,
      drawer: "canvas",
      showNavigationControl: false,
      showNavigator: true,
      navigatorPosition: "BOTTOM_RIGHT",
      navigatorSizeRatio: 0.18,
      navigatorAutoFade: false,
      navigatorBackground: "#fff",
      loadTilesWithAjax: true,
      ajaxWithCredentials: true,
      ajaxHeaders: authHeaders(),
      keyboardNavEnabled: false,
      maxZoomPixelRatio: 2,
      minZoomImageRatio: 0.5,
      visibilityRatio: 0.3,
      animationTime: 0.4,
      blendTime: 0,
      springStiffness: 9,
      imageLoaderLimit: 8,
      timeout: 30000,
      preserveImageSizeOnResize: true,
      gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true, flickEnabled: false },
    } as OpenSeadragon.Options);

    this.osd.addHandler("update-viewport", () => this.redrawOverlays());
    this.osd.addHandler("viewport-change", () => this.onChange(this));
    // Tiles ride on the session cookie (and X-Requested-With); a 401 means the session is gone.
    this.osd.addHandler("tile-load-failed", (e) => {
      const req = (e as { tileRequest?: XMLHttpRequest | null }).tileRequest;
      if (req && req.status === 401) notifyUnauthorized();
    });
    // A pane becomes the active one (the one the toolbar acts on, the sync leader) on any input.
    for (const ev of ["pointerdown", "wheel", "focusin"]) {
      this.el.addEventListener(ev, () => this.onActivate(this), { capture: true, passive: true });
    }
    this.installRuler();
  }

  get mpp(): number | null {
    return this.slide?.mpp_x && this.slide.mpp_x > 0 ? this.slide.mpp_x : null;
  }

  /** Micrometres per level-0 pixel used for synchronisation: the MPP, else one inferred from the objective. */
  private get um_per_l0(): [number, number] {
    const s = this.slide;
    if (s?.mpp_x && s.mpp_x > 0) return [s.mpp_x, s.mpp_y && s.mpp_y > 0 ? s.mpp_y : s.mpp_x];
    if (s?.objective_power) return [10 / s.objective_power, 10 / s.objective_power];
    return [1, 1];
  }

  /** Magnification at which one level-0 pixel is one screen pixel (40x ~ 0.25 µm/px). */
  get baseMagnification(): number | null {
    const s = this.slide;
    if (s?.mpp_x && s.mpp_x > 0) return 10 / s.mpp_x;
    if (s?.objective_power && s.objective_power > 0) return s.objective_power;
    return null;
  }

  /** Screen pixels per level-0 pixel, now (animating) or at the end of the animation (target). */
  imageZoom(current = true): number {
    const item = this.osd.world.getItemAt(0);
    if (!item) return 1;
    return item.viewportToImageZoom(this.osd.viewport.getZoom(current));
  }

  magnification(current = true): number | null {
    const base = this.baseMagnification;
    return base ? base * this.imageZoom(current) : null;
  }

  /** The largest magnification the viewer will reach (2x digital zoom past the scan). */
  maxMagnification(): number | null {
    const base = this.baseMagnification;
    return base ? base * 2 : null;
  }

  async open(id: string, kind: "open" | "switch", keepView = false): Promise<void> {
    const token = ++this.openToken;
    const t0 = performance.now();
    performance.mark(`slide-${kind}-start:${id}`);
    const previous = keepView && this.slide ? this.relativeView() : null;
    this.showMessage(null);
    let slide: SlideDetail;
    let dzi;
    try {
      [slide, dzi] = await Promise.all([getSlide(id), getDzi(id)]);
    } catch (err) {
      if (token !== this.openToken) return;
      this.showMessage(`Cannot open slide ${id}: ${(err as Error).message}`);
      throw err;
    }
    if (token !== this.openToken) return;
    this.slide = slide;
    this.title.textContent = [slide.name, slide.case?.stain].filter(Boolean).join(" · ");
    this.title.title = slide.path ?? slide.name;
    this.clearRuler();
    const tileSource = {
      Image: {
        xmlns: "http://schemas.microsoft.com/deepzoom/2008",
        Url: "/dz/" + encodeURIComponent(id) + "_files/",
        Format: dzi.format,
        Overlap: String(dzi.overlap),
        TileSize: String(dzi.tileSize),
        Size: { Width: String(dzi.width), Height: String(dzi.height) },
      },
    };
    let firstTile = -1;
    const onDrawn = () => {
      if (firstTile >= 0 || token !== this.openToken) return;
      firstTile = performance.now() - t0;
      performance.mark(`slide-${kind}-first-tile:${id}`);
      performance.measure(`slide-${kind}-first-tile`, `slide-${kind}-start:${id}`, `slide-${kind}-first-tile:${id}`);
      const rec: PerfRecord = { kind, id, first_tile_ms: Math.round(firstTile), full_ms: null };
      perfLog.push(rec);
      this.osd.removeHandler("tile-drawn", onDrawn);
      this.el.dataset.firstTile = String(rec.first_tile_ms);
      const item = this.osd.world.getItemAt(0);
      const onFull = (e: { fullyLoaded: boolean }) => {
        if (!e.fullyLoaded) return;
        item?.removeHandler("fully-loaded-change", onFull as never);
        rec.full_ms = Math.round(performance.now() - t0);
        performance.mark(`slide-${kind}-loaded:${id}`);
      };
      if (item?.getFullyLoaded()) rec.full_ms = rec.first_tile_ms;
      else item?.addHandler("fully-loaded-change", onFull as never);
    };
    this.osd.addHandler("tile-drawn", onDrawn);
    await new Promise<void>((resolve, reject) => {
      const ok = () => {
        this.osd.removeHandler("open-failed", bad);
        resolve();
      };
      const bad = (e: { message?: string }) => {
        this.osd.removeHandler("open", ok);
        this.showMessage(`Cannot show slide ${id}: ${e.message ?? "open failed"}`);
        reject(new Error(e.message ?? "open failed"));
      };
      this.osd.addOnceHandler("open", ok);
      this.osd.addOnceHandler("open-failed", bad as never);
      this.osd.open(tileSource as never);
    });
    this.el.dataset.slide = id;
    if (previous) this.setRelativeView(previous);
    this.applyAdjustments();
    for (const fn of this.listeners.open) fn();
    this.redrawOverlays();
  }

  private showMessage(text: string | null): void {
    this.message.hidden = !text;
    this.message.textContent = text ?? "";
  }

  // ---- views ----

  physicalView(current = false): PhysicalView {
    const vp = this.osd.viewport;
    const item = this.osd.world.getItemAt(0);
    const [mx, my] = this.um_per_l0;
    if (!item) return { um_cx: 0, um_cy: 0, um_per_px: 1 };
    const l0_c = item.viewportToImageCoordinates(vp.getCenter(current));
    return { um_cx: l0_c.x * mx, um_cy: l0_c.y * my, um_per_px: mx / this.imageZoom(current) };
  }

  setPhysicalView(v: PhysicalView, immediately = false): void {
    const vp = this.osd.viewport;
    const item = this.osd.world.getItemAt(0);
    if (!item) return;
    const [mx, my] = this.um_per_l0;
    const vp_c = item.imageToViewportCoordinates(new OpenSeadragon.Point(v.um_cx / mx, v.um_cy / my));
    vp.zoomTo(item.imageToViewportZoom(mx / v.um_per_px), undefined, immediately);
    vp.panTo(vp_c, immediately);
  }

  /** Centre as a fraction of the slide, and magnification-independent zoom (µm per pixel). */
  relativeView(): { fx: number; fy: number; um_per_px: number } {
    const v = this.physicalView();
    const [mx, my] = this.um_per_l0;
    const s = this.slide!;
    return { fx: v.um_cx / mx / s.width, fy: v.um_cy / my / s.height, um_per_px: v.um_per_px };
  }

  setRelativeView(r: { fx: number; fy: number; um_per_px: number }): void {
    const [mx, my] = this.um_per_l0;
    const s = this.slide!;
    this.setPhysicalView({ um_cx: r.fx * s.width * mx, um_cy: r.fy * s.height * my, um_per_px: r.um_per_px }, true);
  }

  /** Centre in level-0 pixels and image zoom, for the shareable URL. */
  l0View(): { l0_x: number; l0_y: number; zoom: number } {
    const item = this.osd.world.getItemAt(0);
    const l0_c = item ? item.viewportToImageCoordinates(this.osd.viewport.getCenter(false)) : { x: 0, y: 0 };
    return { l0_x: l0_c.x, l0_y: l0_c.y, zoom: this.imageZoom(false) };
  }

  setL0View(l0_x: number, l0_y: number, zoom: number | null): void {
    const item = this.osd.world.getItemAt(0);
    if (!item) return;
    if (zoom && zoom > 0) this.osd.viewport.zoomTo(item.imageToViewportZoom(zoom), undefined, true);
    this.osd.viewport.panTo(item.imageToViewportCoordinates(new OpenSeadragon.Point(l0_x, l0_y)), true);
  }

  setMagnification(mag: number): void {
    const base = this.baseMagnification;
    const item = this.osd.world.getItemAt(0);
    if (!base || !item) return;
    this.osd.viewport.zoomTo(item.imageToViewportZoom(mag / base));
  }

  zoomBy(factor: number): void {
    this.osd.viewport.zoomBy(factor);
    this.osd.viewport.applyConstraints();
  }

  panBy(dx: number, dy: number): void {
    // a fraction of the visible width/height, in the screen's direction whatever the rotation
    const vp = this.osd.viewport;
    const size = this.osd.viewport.getContainerSize();
    const delta = vp.deltaPointsFromPixels(new OpenSeadragon.Point(dx * size.x, dy * size.y));
    vp.panBy(delta);
    vp.applyConstraints();
  }

  home(): void {
    this.osd.viewport.goHome();
  }

  rotation(): number {
    return this.osd.viewport.getRotation();
  }

  rotate(deltaDeg: number): void {
    this.setRotation((((this.rotation() + deltaDeg) % 360) + 360) % 360);
  }

  setRotation(deg: number): void {
    this.osd.viewport.setRotation(deg, true);
    this.redrawOverlays();
  }

  // ---- overlays: scale bar, magnification, ruler ----

  redrawOverlays(): void {
    if (!this.osd.world.getItemAt(0)) return;
    const mpp = this.mpp;
    const mag = this.magnification(true);
    this.magLabel.textContent = mag ? (mag >= 10 ? mag.toFixed(0) : mag.toFixed(1)) + "×" : "";
    if (mpp) {
      const um_per_px = mpp / this.imageZoom(true);
      const um_len = niceBelow(um_per_px * 180);
      this.scaleBar.style.width = Math.round(um_len / um_per_px) + "px";
      this.scaleLabel.textContent = formatLength(um_len);
      this.scaleBar.parentElement!.hidden = false;
    } else {
      this.scaleLabel.textContent = "no MPP";
      this.scaleBar.style.width = "0";
    }
    this.drawRuler();
    for (const fn of this.listeners.view) fn();
  }

  setRulerMode(on: boolean): void {
    this.rulerMode = on;
    this.el.classList.toggle("ruler-mode", on);
  }

  clearRuler(): void {
    this.ruler = null;
    this.drawRuler();
  }

  rulerLength(): number | null {
    if (!this.ruler) return null;
    const [mx, my] = this.um_per_l0;
    const dx = (this.ruler.l0_b.x - this.ruler.l0_a.x) * mx;
    const dy = (this.ruler.l0_b.y - this.ruler.l0_a.y) * my;
    return Math.hypot(dx, dy);
  }

  private installRuler(): void {
    let dragging = false;
    const toL0 = (e: PointerEvent) => {
      const r = this.osdEl.getBoundingClientRect();
      return this.osd.viewport.viewerElementToImageCoordinates(new OpenSeadragon.Point(e.clientX - r.left, e.clientY - r.top));
    };
    this.svg.addEventListener("pointerdown", (e) => {
      if (!this.rulerMode || e.button !== 0 || !this.slide) return;
      e.preventDefault();
      e.stopPropagation();
      this.svg.setPointerCapture(e.pointerId);
      dragging = true;
      const p = toL0(e);
      this.ruler = { l0_a: p, l0_b: p };
      this.drawRuler();
    });
    this.svg.addEventListener("pointermove", (e) => {
      if (!dragging || !this.ruler) return;
      this.ruler.l0_b = toL0(e);
      this.drawRuler();
    });
    const end = (e: PointerEvent) => {
      if (!dragging) return;
      dragging = false;
      this.svg.releasePointerCapture(e.pointerId);
    };
    this.svg.addEventListener("pointerup", end);
    this.svg.addEventListener("pointercancel", end);
    // zooming with the wheel still works in ruler mode
    this.svg.addEventListener("wheel", (e) => {
      if (!this.rulerMode) return;
      e.preventDefault();
      const r = this.osdEl.getBoundingClientRect();
      const at = this.osd.viewport.pointFromPixel(new OpenSeadragon.Point(e.clientX - r.left, e.clientY - r.top));
      this.osd.viewport.zoomBy(e.deltaY < 0 ? 1.2 : 1 / 1.2, at);
      this.osd.viewport.applyConstraints();
    }, { passive: false });
  }

  private drawRuler(): void {
    const svg = this.svg;
    svg.replaceChildren();
    if (!this.ruler) return;
    const vp = this.osd.viewport;
    const a = vp.imageToViewerElementCoordinates(this.ruler.l0_a);
    const b = vp.imageToViewerElementCoordinates(this.ruler.l0_b);
    const ns = "http://www.w3.org/2000/svg";
    const line = document.createElementNS(ns, "line");
    line.setAttribute("x1", String(a.x));
    line.setAttribute("y1", String(a.y));
    line.setAttribute("x2", String(b.x));
    line.setAttribute("y2", String(b.y));
    line.classList.add("ruler-line");
    const halo = line.cloneNode() as SVGLineElement;
    halo.setAttribute("class", "ruler-halo");
    const len = this.rulerLength() ?? 0;
    const text = document.createElementNS(ns, "text");
    text.setAttribute("x", String(b.x + 8));
    text.setAttribute("y", String(b.y - 8));
    text.classList.add("ruler-text");
    text.textContent = this.mpp ? formatLength(len) : `${Math.round(len)} px (no MPP)`;
    svg.append(halo, line, text);
    for (const p of [a, b]) {
      const c = document.createElementNS(ns, "circle");
      c.setAttribute("cx", String(p.x));
      c.setAttribute("cy", String(p.y));
      c.setAttribute("r", "3");
      c.classList.add("ruler-end");
      svg.append(c);
    }
    this.el.dataset.ruler = this.mpp ? String(Math.round(len * 100) / 100) : "";
  }

  // ---- brightness, contrast, gamma ----

  setAdjustments(a: Adjustments): void {
    this.adjustments = { ...a };
    this.applyAdjustments();
  }

  private applyAdjustments(): void {
    const { brightness, contrast, gamma } = this.adjustments;
    for (const f of this.gammaFilter.querySelectorAll("feFuncR, feFuncG, feFuncB")) {
      f.setAttribute("exponent", String(1 / gamma));
    }
    const parts: string[] = [];
    if (brightness !== 1) parts.push(`brightness(${brightness})`);
    if (contrast !== 1) parts.push(`contrast(${contrast})`);
    if (Math.abs(gamma - 1) > 1e-3) parts.push(`url(#${this.gammaFilter.id})`);
    const canvas = this.osd.drawer?.canvas as HTMLElement | undefined;
    const target = canvas ?? (this.osd.canvas as HTMLElement);
    target.style.filter = parts.join(" ");
  }

  destroy(): void {
    this.osd.destroy();
    this.gammaFilter.remove();
    this.el.remove();
  }
}
