// Annotations in the viewer: one editor for the page, one overlay per pane, the panel, and the
// keyboard shortcuts. viewer.ts calls installAnnotations once with its panes.
import { debounce, isTyping } from "../util";
import { Editor, type Tool, TOOLS } from "./editor";
import { PaneOverlay, type PaneLike } from "./overlay";
import { annotationPanel, TOOL_KEYS } from "./panel";
import { allStores } from "./store";

export interface Annotations {
  el: HTMLElement;
  editor: Editor;
  overlays: PaneOverlay[];
  /** The active pane changed: the layer panel shows its slide. */
  activated(pane: PaneLike): void;
  /** A pane opened a slide (or switched to another). */
  opened(pane: PaneLike): void;
  /** A pane's viewport moved. */
  viewChanged(pane: PaneLike): void;
}

export function installAnnotations(panes: PaneLike[], active: () => PaneLike): Annotations {
  let panel: ReturnType<typeof annotationPanel> | null = null;
  const editor = new Editor((text, kind) => panel?.say(text, kind));
  const toggleTool = (t: Tool) => editor.setTool(editor.tool === t ? null : t);
  panel = annotationPanel(editor, toggleTool);
  const overlays = panes.map((p) => new PaneOverlay(p, editor));
  const overlayOf = (p: PaneLike) => overlays.find((o) => o.pane === p) ?? null;
  const refreshLayers = debounce(() => panel!.showLayers(overlayOf(active())?.store ?? null), 200);
  const subscribed = new Set<object>();

  editor.subscribe(() => {
    for (const o of overlays) o.requestFrame();
    for (const p of panes) p.el.classList.toggle("annotating", !!editor.tool);
  });

  const opened = (o: PaneOverlay) => {
    o.slideOpened();
    if (o.store && !subscribed.has(o.store)) {
      subscribed.add(o.store);
      o.store.subscribe(refreshLayers);
    }
    refreshLayers();
  };

  document.addEventListener("keydown", (e) => {
    if (isTyping(e) || e.altKey || document.getElementById("help")) return;
    const k = e.key;
    let handled = true;
    if ((e.ctrlKey || e.metaKey) && (k === "z" || k === "Z")) void (e.shiftKey ? editor.redo() : editor.undo());
    else if ((e.ctrlKey || e.metaKey) && k === "y") void editor.redo();
    else if (e.ctrlKey || e.metaKey) handled = false;
    else if (k === "Enter" && editor.draft) void editor.finish();
    else if (k === "Escape" && (editor.draft || editor.selection)) editor.cancel();
    else if (k === "Backspace" && editor.draft) editor.undoVertex();
    else if ((k === "Delete" || k === "Backspace") && editor.selection) void editor.deleteSelected();
    else {
      const tool = TOOLS.find((t) => TOOL_KEYS[t] === k);
      if (tool) toggleTool(tool);
      else handled = false;
    }
    if (handled) {
      e.preventDefault();
      e.stopImmediatePropagation();
    }
  }, { capture: true });

  const api: Annotations = {
    el: panel.el,
    editor,
    overlays,
    activated: () => refreshLayers(),
    opened: (p) => {
      const o = overlayOf(p);
      if (o) opened(o);
    },
    viewChanged: (p) => overlayOf(p)?.viewChanged(),
  };
  // For tests and the console: what each pane shows and what the stores fetched.
  Object.assign(window, {
    slideannotations: {
      editor,
      overlays,
      stores: allStores,
      state: () =>
        overlays.map((o) => ({
          slide: o.pane.slide?.id ?? null,
          mode: o.mode,
          drawn: o.drawnShapes,
          loaded: o.store?.annotations.size ?? 0,
          stats: o.store ? { ...o.store.stats } : null,
          gridComplete: o.store?.gridComplete ?? false,
          counted: o.store ? [...o.store.grids.values()].reduce((n, g) => n + g.total, 0) : 0,
          heat: o.store?.viewHeats.has(o) ?? false,
        })),
    },
  });
  return api;
}
