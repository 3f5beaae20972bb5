// The annotation controls: a tool palette (every button labelled, with its key), the class picker,
// undo/redo/delete, the live measurement, a status line, and the layer panel (show, hide, lock).
import { h } from "../util";
import { CLASSES, classColor } from "./classes";
import { type Editor, type Tool, TOOLS } from "./editor";
import type { AnnotationStore } from "./store";
import { historyView } from "./versions";

export const TOOL_KEYS: Record<Tool, string> = {
  select: "v",
  point: "o",
  polyline: "u",
  polygon: "g",
  freehand: "h",
  rectangle: "t",
  ellipse: "e",
};

const TOOL_LABELS: Record<Tool, [string, string]> = {
  select: ["Select", "⬚"],
  point: ["Point", "•"],
  polyline: ["Polyline", "╱"],
  polygon: ["Polygon", "⬠"],
  freehand: ["Freehand", "✎"],
  rectangle: ["Rectangle", "▭"],
  ellipse: ["Ellipse", "◯"],
};

export interface AnnotationPanel {
  el: HTMLElement;
  /** The status line, read by screen readers. */
  say(text: string, kind?: "info" | "error"): void;
  /** Show the active pane's slide's layers. */
  showLayers(store: AnnotationStore | null): void;
}

export function annotationPanel(editor: Editor, toggleTool: (t: Tool) => void): AnnotationPanel {
  const toolButtons = TOOLS.map((t) => {
    const [label, glyph] = TOOL_LABELS[t];
    return h("button.tool", { type: "button", "data-tool": t, "aria-label": label, "aria-pressed": "false", title: `${label} (${TOOL_KEYS[t]})`, onclick: () => toggleTool(t) }, glyph);
  });
  const classSelect = h("select.annot-class", { "aria-label": "Annotation class", title: "Class of new shapes (and of the selected one)" });
  for (const c of CLASSES) classSelect.append(h("option", { value: c.name }, "● " + c.label));
  const swatch = h("span.swatch", { "aria-hidden": "true" });
  classSelect.addEventListener("change", () => editor.setClass(classSelect.value));
  const undoBtn = h("button", { type: "button", "aria-label": "Undo", title: "Undo (Ctrl+Z)", onclick: () => void editor.undo() }, "↶");
  const redoBtn = h("button", { type: "button", "aria-label": "Redo", title: "Redo (Ctrl+Shift+Z)", onclick: () => void editor.redo() }, "↷");
  const deleteBtn = h("button", { type: "button", "aria-label": "Delete annotation", title: "Delete the selected annotation (Delete)", onclick: () => void editor.deleteSelected() }, "✕");
  const history = historyView(editor);
  const historyBtn = h("button", { type: "button", "aria-label": "History", "aria-pressed": "false", title: "The selected annotation's versions: who changed what, when" }, "⟲");
  historyBtn.addEventListener("click", () => historyBtn.setAttribute("aria-pressed", String(history.toggle())));
  const layersBtn = h("button", { type: "button", "aria-label": "Layers", "aria-pressed": "false", title: "Annotation layers" }, "☰");
  const measure = h("output.annot-measure", { "aria-label": "Measurement", "aria-live": "polite" });
  const status = h("div.annot-status", { role: "status", "aria-live": "polite" });
  const layerList = h("section.annot-layers", { "aria-label": "Annotation layers", hidden: true });
  const el = h(
    "div.annot-bar",
    {},
    h(
      "div.annot-tools",
      { role: "toolbar", "aria-label": "Annotation tools", "aria-orientation": "vertical" },
      ...toolButtons,
      h("label.annot-class-row", {}, swatch, classSelect),
      h("div.annot-row", {}, undoBtn, redoBtn, deleteBtn, historyBtn, layersBtn),
    ),
    measure,
    status,
    history.el,
    layerList,
  );
  let shownStore: AnnotationStore | null = null;
  layersBtn.addEventListener("click", () => {
    layerList.hidden = !layerList.hidden;
    layersBtn.setAttribute("aria-pressed", String(!layerList.hidden));
    renderLayers();
  });

  let statusTimer = 0;
  function say(text: string, kind: "info" | "error" = "info"): void {
    status.textContent = text;
    status.dataset.kind = kind;
    window.clearTimeout(statusTimer);
    if (kind === "info") statusTimer = window.setTimeout(() => (status.textContent = ""), 4000);
  }

  function renderLayers(): void {
    if (layerList.hidden) return;
    const store = shownStore;
    const rows = store ? [...store.layers.values()] : [];
    layerList.replaceChildren(
      h("h3", {}, "Layers"),
      ...(rows.length
        ? rows.map((l) => {
            const count = store!.grids.get(l.name)?.total;
            const title = l.label ?? l.name;
            const show = h("input", { type: "checkbox", "aria-label": `Show layer ${title}`, checked: l.visible });
            const lock = h("input", { type: "checkbox", "aria-label": `Lock layer ${title}`, checked: l.locked, disabled: l.writable === false });
            show.addEventListener("change", () => store!.setLayer(l.name, { visible: show.checked }));
            lock.addEventListener("change", () => store!.setLayer(l.name, { locked: lock.checked }));
            const target = h("input", { type: "radio", name: "annot-target", "aria-label": `Draw in layer ${title}`, checked: editor.layer === l.name, disabled: l.writable === false });
            target.addEventListener("change", () => (editor.layer = l.name));
            return h("div.layer-row", { "data-layer": l.name }, show, h("span.name", { title: l.name }, title, count !== undefined ? h("span.muted", {}, ` ${count.toLocaleString("en")}`) : ""), h("label", { title: "Locked layers cannot be selected or edited" }, lock, "lock"), target);
          })
        : [h("p.muted", {}, "No annotations loaded.")]),
    );
  }

  function refresh(): void {
    for (const b of toolButtons) b.setAttribute("aria-pressed", String(editor.tool === b.dataset.tool));
    classSelect.value = editor.className;
    swatch.style.background = classColor(editor.className);
    undoBtn.disabled = !editor.history.canUndo;
    redoBtn.disabled = !editor.history.canRedo;
    deleteBtn.disabled = !editor.selection;
    historyBtn.disabled = !editor.selection;
    history.refresh();
    measure.textContent = editor.readout();
  }
  editor.subscribe(refresh);
  refresh();

  return {
    el,
    say,
    showLayers(store) {
      shownStore = store;
      renderLayers();
    },
  };
}
