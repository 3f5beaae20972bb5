// The viewer page at /view/{id} or /view/{id1},{id2}[,...] (2-4 panes side by side).
//
// The query string follows the active pane, so the address is a shareable link:
//   x, y   centre of the first pane in level-0 pixels
//   mag    magnification (from the MPP: 40x ~ 0.25 µm/px; else the objective power), or
//   z      screen pixels per level-0 pixel when the slide has neither
//   rot    rotation in degrees (0, 90, 180, 270)
//   lock=0 side-by-side panes move independently
import { getCaseOrSearch, isViewable, type SlideDetail, type SlideSummary, thumbnailUrl } from "./api";
import { installAnnotations } from "./annotations";
import { caseSlides } from "./case";
import { type Adjustments, MAGNIFICATIONS, NEUTRAL, Pane, perfLog } from "./pane";
import { figureButton } from "./report";
import { appHeader, caseHref, type ContextSlide, ctx, recallContext, setHelpPage, showHelp, viewerHref } from "./shell";
import { onTeardown } from "./session";
import { debounce, fillImage, formatDate, formatLength, h, isTyping, lazyImage, personName } from "./util";

interface Offset {
  um_dx: number;
  um_dy: number;
}

export function parseViewPath(pathname: string): string[] {
  const raw = pathname.replace(/^\/view\/?/, "");
  return raw
    .split(",")
    .map((s) => decodeURIComponent(s.trim()))
    .filter(Boolean)
    .slice(0, 4);
}

export async function renderViewer(root: HTMLElement, ids: string[]): Promise<void> {
  setHelpPage("viewer");
  const params = new URLSearchParams(location.search);
  const panesEl = h("div.panes", { "data-count": String(ids.length) });
  // hidden until it has slides to show: the panes must not change size while they open
  const strip = h("nav.strip", { "aria-label": "Slides of the case", hidden: true });
  const panel = h("aside.panel", { "aria-label": "Slide information" });
  const caseLink = h("a.case-link", { href: "/" });
  const magButtons = MAGNIFICATIONS.map((m) =>
    h("button.mag", { type: "button", "data-mag": String(m), title: `${m}× (key ${MAGNIFICATIONS.indexOf(m) + 1})` }, `${m}×`),
  );
  const fitBtn = h("button", { type: "button", title: "Fit the whole slide (0)" }, "Fit");
  const rotL = h("button", { type: "button", title: "Rotate 90° counter-clockwise (R)", "aria-label": "Rotate left" }, "⟲");
  const rotR = h("button", { type: "button", title: "Rotate 90° clockwise (r)", "aria-label": "Rotate right" }, "⟳");
  const rulerBtn = h("button", { type: "button", title: "Ruler: drag to measure (m)", "aria-pressed": "false" }, "Ruler");
  const adjustBtn = h("button", { type: "button", title: "Brightness, contrast, gamma (b)", "aria-pressed": "false" }, "Adjust");
  const lockBtn = h("button.lock", { type: "button", title: "Synchronize panes (l)", "aria-pressed": "true", hidden: ids.length < 2 }, "Locked");
  const infoBtn = h("button", { type: "button", title: "Slide information (i)", "aria-pressed": "false" }, "Info");
  const fsBtn = h("button", { type: "button", title: "Full screen (f)" }, "Full screen");
  const toolbar = h(
    "div.toolbar",
    { role: "toolbar", "aria-label": "Viewer tools" },
    h("div.group", { role: "group", "aria-label": "Magnification" }, ...magButtons, fitBtn),
    h("div.group", {}, rotL, rotR),
    h("div.group", {}, rulerBtn, adjustBtn, lockBtn, infoBtn, fsBtn),
  );
  const adjust = adjustPopover();
  const stage = h("div.stage", {}, panesEl, adjust.el);
  root.replaceChildren(
    h(
      "div.viewer-page",
      {},
      appHeader("", caseLink, toolbar),
      h("div.viewer-body", {}, strip, stage, panel),
    ),
  );

  // The layout is final before the panes exist: OpenSeadragon must not be resized while it opens.
  let panelOpen = ids.length === 1 && window.innerWidth >= 1200;
  panel.hidden = !panelOpen;
  infoBtn.setAttribute("aria-pressed", String(panelOpen));

  const panes: Pane[] = [];
  let active: Pane;
  let locked = params.get("lock") !== "0";
  const offsets = new Map<Pane, Offset>();
  let rulerOn = false;
  let stripSlides: ContextSlide[] = [];

  const activate = (p: Pane) => {
    if (active === p) return;
    active = p;
    for (const q of panes) q.el.classList.toggle("active", q === p);
    adjust.show(p.adjustments);
    annotations.activated(p);
    void renderPanel();
    highlightStrip();
    updateToolbar();
  };

  let ready = false; // views are set up: from now on the active pane leads the others
  const onChange = (p: Pane) => {
    if (ready && p === active) {
      if (locked && panes.length > 1) syncFrom(p);
      updateToolbar();
      saveUrl();
    }
  };

  for (let i = 0; i < ids.length; i++) panes.push(new Pane(panesEl, onChange, activate));
  // when the session ends, stop loading tiles before the sign-in panel replaces the page
  onTeardown(() => panes.forEach((p) => p.osd.destroy()));
  active = panes[0];
  panes[0].el.classList.add("active");
  // annotations: drawn over every pane, saved to the server, shared by panes showing one slide
  const annotations = installAnnotations(panes, () => active);
  stage.append(annotations.el);
  for (const p of panes) {
    p.listeners.open.add(() => annotations.opened(p));
    p.listeners.view.add(() => annotations.viewChanged(p));
  }
  lockBtn.setAttribute("aria-pressed", String(locked));
  lockBtn.textContent = locked ? "Locked" : "Unlocked";

  function syncFrom(leader: Pane): void {
    const v = leader.physicalView(true);
    const lo = offsets.get(leader) ?? { um_dx: 0, um_dy: 0 };
    for (const p of panes) {
      if (p === leader || !p.slide) continue;
      const o = offsets.get(p) ?? { um_dx: 0, um_dy: 0 };
      p.setPhysicalView({ um_cx: v.um_cx - lo.um_dx + o.um_dx, um_cy: v.um_cy - lo.um_dy + o.um_dy, um_per_px: v.um_per_px }, true);
      if (p.rotation() !== leader.rotation()) p.setRotation(leader.rotation());
    }
  }

  /** Remember where each pane is relative to the first, so that locked panes keep their alignment. */
  function captureOffsets(): void {
    const base = panes[0].physicalView(false);
    for (const p of panes) {
      const v = p.physicalView(false);
      offsets.set(p, { um_dx: v.um_cx - base.um_cx, um_dy: v.um_cy - base.um_cy });
    }
  }

  function setLocked(on: boolean): void {
    locked = on;
    lockBtn.setAttribute("aria-pressed", String(on));
    lockBtn.textContent = on ? "Locked" : "Unlocked";
    lockBtn.classList.toggle("off", !on);
    if (on) {
      captureOffsets();
      syncFrom(active);
    }
    saveUrl();
  }

  // ---- the shareable URL ----
  const saveUrl = debounce(() => {
    if (!panes[0].slide) return;
    const lead = panes[0];
    const v = lead.l0View();
    const q = new URLSearchParams();
    q.set("x", String(Math.round(v.l0_x)));
    q.set("y", String(Math.round(v.l0_y)));
    const base = lead.baseMagnification;
    if (base) q.set("mag", String(Math.round(base * v.zoom * 1000) / 1000));
    else q.set("z", String(Math.round(v.zoom * 1e6) / 1e6));
    const rot = Math.round(lead.rotation());
    if (rot) q.set("rot", String(rot));
    if (panes.length > 1 && !locked) q.set("lock", "0");
    const path = viewerHref(panes.map((p) => p.slide?.id ?? "")) + "?" + q.toString();
    if (location.pathname + location.search !== path) history.replaceState(history.state, "", path);
  }, 250);

  function applyUrlView(): void {
    const x = Number(params.get("x"));
    const y = Number(params.get("y"));
    const mag = Number(params.get("mag"));
    const z = Number(params.get("z"));
    const rot = Number(params.get("rot"));
    const lead = panes[0];
    if (!lead.slide) return;
    const base = lead.baseMagnification;
    const zoom = mag > 0 && base ? mag / base : z > 0 ? z : null;
    if (params.has("x") && params.has("y") && isFinite(x) && isFinite(y)) lead.setL0View(x, y, zoom);
    else if (zoom) lead.setL0View(lead.slide.width / 2, lead.slide.height / 2, zoom);
    if (rot) for (const p of panes) p.setRotation(rot);
  }

  // ---- opening and switching slides ----

  async function switchSlide(pane: Pane, id: string): Promise<void> {
    if (pane.slide?.id === id) return;
    const before = panes.length > 1 ? offsets.get(pane) : undefined;
    await pane.open(id, "switch", true);
    if (before) offsets.set(pane, before);
    if (panes.length > 1 && locked) syncFrom(active);
    const path = viewerHref(panes.map((p) => p.slide?.id ?? "")) + location.search;
    history.pushState({ ids: panes.map((p) => p.slide?.id) }, "", path);
    saveUrl();
    document.title = (panes[0].slide?.name ?? "Viewer") + " · slideserver";
    highlightStrip();
    updateToolbar();
    void renderPanel();
  }

  window.addEventListener("popstate", () => {
    const want = parseViewPath(location.pathname);
    if (want.length !== panes.length) {
      location.reload();
      return;
    }
    want.forEach((id, i) => void switchSlide(panes[i], id));
  });

  async function loadStrip(slide: SlideDetail | null): Promise<void> {
    const acc = slide?.case?.accession ?? null;
    let list: ContextSlide[] = [];
    let heading = "Slides";
    if (acc) {
      caseLink.textContent = "Case " + acc;
      caseLink.href = caseHref(acc);
      try {
        list = caseSlides(await getCaseOrSearch(acc)).filter(isViewable).map(ctx);
        heading = "Case " + acc;
      } catch {
        list = [];
      }
    } else {
      caseLink.textContent = "All slides";
      const remembered = recallContext();
      if (remembered && remembered.slides.some((s) => ids.includes(s.id))) {
        list = remembered.slides;
        heading = "Search results";
      }
    }
    stripSlides = list;
    if (list.length < 2) return;
    strip.hidden = false;
    strip.replaceChildren(
      h("h2", {}, heading),
      ...list.map((s) =>
        h(
          "button.strip-item",
          { type: "button", "data-id": s.id, title: `${s.name} (n / p)`, onclick: () => void switchSlide(active, s.id) },
          lazyImage(thumbnailUrl({ id: s.id, links: undefined } as unknown as SlideSummary, 160), "", "thumbnail"),
          h("span", {}, s.stain ? `${s.stain} · ${s.name}` : s.name),
        ),
      ),
    );
    highlightStrip();
  }

  function highlightStrip(): void {
    for (const b of strip.querySelectorAll<HTMLElement>(".strip-item")) {
      const on = b.dataset.id === active.slide?.id;
      b.classList.toggle("current", on);
      b.setAttribute("aria-current", on ? "true" : "false");
      if (on) b.scrollIntoView({ block: "nearest" });
    }
  }

  function step(delta: number): void {
    if (!stripSlides.length) return;
    const i = stripSlides.findIndex((s) => s.id === active.slide?.id);
    const j = (i + delta + stripSlides.length) % stripSlides.length;
    void switchSlide(active, stripSlides[j].id);
  }

  // ---- toolbar ----
  function updateToolbar(): void {
    const mag = active.magnification(false);
    const max = active.maxMagnification();
    for (const b of magButtons) {
      const m = Number(b.dataset.mag);
      b.disabled = !max || m > max * 1.001;
      b.classList.toggle("current", !!mag && Math.abs(mag - m) / m < 0.03);
    }
  }
  magButtons.forEach((b) => b.addEventListener("click", () => active.setMagnification(Number(b.dataset.mag))));
  fitBtn.addEventListener("click", () => active.home());
  rotL.addEventListener("click", () => rotateAll(-90));
  rotR.addEventListener("click", () => rotateAll(90));
  rulerBtn.addEventListener("click", () => toggleRuler());
  adjustBtn.addEventListener("click", () => toggleAdjust());
  lockBtn.addEventListener("click", () => setLocked(!locked));
  infoBtn.addEventListener("click", () => togglePanel());
  fsBtn.addEventListener("click", () => toggleFullScreen());

  function rotateAll(delta: number): void {
    active.rotate(delta);
    if (locked) syncFrom(active);
    saveUrl();
  }

  function toggleRuler(on = !rulerOn): void {
    rulerOn = on;
    rulerBtn.setAttribute("aria-pressed", String(on));
    for (const p of panes) p.setRulerMode(on);
  }

  function toggleAdjust(on = adjust.el.hidden): void {
    adjust.el.hidden = !on;
    adjustBtn.setAttribute("aria-pressed", String(on));
    if (on) adjust.show(active.adjustments);
  }

  function togglePanel(on = !panelOpen): void {
    panelOpen = on;
    panel.hidden = !on;
    infoBtn.setAttribute("aria-pressed", String(on));
  }

  function toggleFullScreen(): void {
    if (document.fullscreenElement) void document.exitFullscreen();
    else void document.documentElement.requestFullscreen?.().catch(() => undefined);
  }

  function adjustPopover() {
    const mk = (name: keyof Adjustments, label: string) => {
      const input = h("input", { type: "range", min: "0.2", max: "3", step: "0.05", value: "1", "aria-label": label, name });
      const out = h("output", {}, "1.00");
      input.addEventListener("input", () => {
        out.textContent = Number(input.value).toFixed(2);
        active.setAdjustments({ ...active.adjustments, [name]: Number(input.value) });
      });
      return { input, out, row: h("label.adj", {}, h("span", {}, label), input, out) };
    };
    const rows = { brightness: mk("brightness", "Brightness"), contrast: mk("contrast", "Contrast"), gamma: mk("gamma", "Gamma") };
    const allBtn = h("button", { type: "button", title: "Use these settings in every pane" }, "All panes");
    const reset = h("button", { type: "button" }, "Reset");
    const el = h("div.popover.adjust", { hidden: true, role: "dialog", "aria-label": "Image adjustments" }, rows.brightness.row, rows.contrast.row, rows.gamma.row, h("div.row", {}, reset, allBtn));
    const show = (a: Adjustments) => {
      for (const k of ["brightness", "contrast", "gamma"] as const) {
        rows[k].input.value = String(a[k]);
        rows[k].out.textContent = a[k].toFixed(2);
      }
    };
    reset.addEventListener("click", () => {
      active.setAdjustments(NEUTRAL);
      show(NEUTRAL);
    });
    allBtn.addEventListener("click", () => panes.forEach((p) => p.setAdjustments(active.adjustments)));
    return { el, show };
  }

  // ---- metadata, label and macro ----
  let panelToken = 0;
  async function renderPanel(): Promise<void> {
    const s = active.slide;
    const token = ++panelToken;
    if (!s) {
      panel.replaceChildren();
      return;
    }
    const c = s.case ?? null;
    const rows: [string, Node | string | null][] = [
      ["Name", s.name],
      ["Case", c?.accession ? h("a", { href: caseHref(c.accession) }, c.accession) : null],
      ["Specimen", c?.specimen || c?.block ? [c.specimen, c.block ? "block " + c.block : null].filter(Boolean).join(" · ") : null],
      ["Stain", c?.stain ?? null],
      ["Patient", c?.patient ? [personName(c.patient.name), c.patient.id ? "ID " + c.patient.id : null, c.patient.birth_date ? "born " + c.patient.birth_date : null].filter(Boolean).join(" · ") : null],
      ["Vendor", s.vendor ?? null],
      ["Format", s.format ?? null],
      ["Scan date", formatDate(s.scan_date)],
      ["MPP", s.mpp_x ? `${s.mpp_x.toFixed(4)} × ${(s.mpp_y ?? s.mpp_x).toFixed(4)} µm/px` : "unknown"],
      ["Objective", s.objective_power ? `${s.objective_power}×` : null],
      ["Size", `${s.width.toLocaleString()} × ${s.height.toLocaleString()} px` + (s.mpp_x ? ` (${formatLength(s.width * s.mpp_x)} × ${formatLength(s.height * (s.mpp_y ?? s.mpp_x))})` : "")],
      ["Levels", s.levels ? s.levels.map((l) => (l.downsample >= 10 ? Math.round(l.downsample) : Number(l.downsample.toFixed(2)))).join(", ") : null],
      ["File", s.path ?? null],
    ];
    const dl = h("dl.meta");
    for (const [k, v] of rows) if (v !== null && v !== "") dl.append(h("dt", {}, k), h("dd", {}, v));
    const assoc = h("div.associated");
    const props = s.properties && Object.keys(s.properties).length
      ? h(
          "details.props",
          {},
          h("summary", {}, `Properties (${Object.keys(s.properties).length})`),
          h("table", {}, ...Object.entries(s.properties).slice(0, 500).map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, typeof v === "string" ? v : JSON.stringify(v))))),
        )
      : null;
    panel.replaceChildren(h("h2", {}, "Slide"), dl, assoc, props ?? "");
    for (const name of (s.associated ?? []).filter((n) => n === "label" || n === "macro")) {
      const img = h("img", { alt: name, class: "assoc-img" });
      const fig = h("figure", { hidden: true }, img, h("figcaption", {}, name === "label" ? "Label" : "Macro"));
      assoc.append(fig);
      const ok = await fillImage(img, "/api/slides/" + encodeURIComponent(s.id) + "/associated/" + encodeURIComponent(name));
      if (token !== panelToken) return;
      fig.hidden = !ok;
      if (!ok) fig.remove();
    }
  }

  // ---- keyboard ----
  document.addEventListener("keydown", (e) => {
    if (isTyping(e) || e.ctrlKey || e.metaKey || e.altKey) return;
    if (document.getElementById("help")) return;
    const k = e.key;
    const magIndex = "123456".indexOf(k);
    let handled = true;
    if (magIndex >= 0 && k.length === 1) active.setMagnification(MAGNIFICATIONS[magIndex]);
    else if (k === "0") active.home();
    else if (k === "+" || k === "=") active.zoomBy(1.5);
    else if (k === "-" || k === "_") active.zoomBy(1 / 1.5);
    else if (k === "ArrowLeft" || k === "a") active.panBy(-0.2, 0);
    else if (k === "ArrowRight" || k === "d") active.panBy(0.2, 0);
    else if (k === "ArrowUp" || k === "w") active.panBy(0, -0.2);
    else if (k === "ArrowDown" || k === "s") active.panBy(0, 0.2);
    else if (k === "r") rotateAll(90);
    else if (k === "R") rotateAll(-90);
    else if (k === "f") toggleFullScreen();
    else if (k === "m") toggleRuler();
    else if (k === "b") toggleAdjust();
    else if (k === "i") togglePanel();
    else if (k === "l" && panes.length > 1) setLocked(!locked);
    else if (k === "n" || k === "PageDown") step(1);
    else if (k === "p" || k === "PageUp") step(-1);
    else if (k === "Tab" && panes.length > 1) {
      const i = panes.indexOf(active);
      activate(panes[(i + (e.shiftKey ? panes.length - 1 : 1)) % panes.length]);
    } else if (k === "?") showHelp("viewer");
    else if (k === "Escape") {
      if (rulerOn) {
        panes.forEach((p) => p.clearRuler());
        toggleRuler(false);
      } else if (!adjust.el.hidden) toggleAdjust(false);
      else if (panelOpen) togglePanel(false);
    } else handled = false;
    if (handled) e.preventDefault();
  });

  window.addEventListener("resize", debounce(() => updateToolbar(), 200));

  // ---- open the slides ----
  performance.mark("viewer-start");
  const opened = await Promise.allSettled(panes.map((p, i) => p.open(ids[i], "open")));
  if (opened.every((r) => r.status === "rejected")) {
    document.title = "Slide not found · slideserver";
    return;
  }
  await nextFrames(2); // let OpenSeadragon settle its size before views are set
  if (panes.length > 1 && !params.has("x")) {
    // one physical scale for every pane, the one at which the largest slide fits its pane
    for (const p of panes) if (p.slide) p.osd.viewport.goHome(true);
    const homes = panes.filter((p) => p.slide).map((p) => p.physicalView(false));
    const v = panes[0].physicalView(false);
    panes[0].setPhysicalView({ ...v, um_per_px: Math.max(...homes.map((x) => x.um_per_px)) }, true);
  }
  captureOffsets();
  applyUrlView();
  if (panes.length > 1 && locked) syncFrom(panes[0]);
  ready = true;
  document.title = (panes[0].slide?.name ?? "Viewer") + " · slideserver";
  updateToolbar();
  void renderPanel();
  void loadStrip(panes[0].slide);
  toolbar.lastElementChild?.append(figureButton(() => active)); // issue 14: figures for the report

  // For tests and for scripting from the console.
  Object.assign(window, {
    slideviewer: {
      panes,
      perf: perfLog,
      get active() {
        return active;
      },
      get locked() {
        return locked;
      },
      setLocked,
      switchSlide: (id: string, pane = 0) => switchSlide(panes[pane], id),
      views: () => panes.map((p) => p.physicalView(true)),
    },
  });
  root.dataset.ready = "true";
}

function nextFrames(n: number): Promise<void> {
  return new Promise((resolve) => {
    const step = () => (--n <= 0 ? resolve() : requestAnimationFrame(step));
    requestAnimationFrame(step);
  });
}
