// The selected annotation's history, from the server: every version with who made it (researchers
// see the pseudonyms the server gives), when, and what changed (class, label, note, colour, layer,
// geometry with its measurement before and after). An earlier version can be restored: a PUT of
// its state with If-Match of the current version, recorded for undo like any edit.
import { formatDate, h } from "../util";
import { getHistory, type Version, type VersionState } from "./client";
import type { Editor } from "./editor";
import { describe, measure, type Mpp } from "./measure";
import type { Feature, Geometry } from "./model";

const FIELDS: [keyof VersionState, string][] = [
  ["class", "class"],
  ["label", "label"],
  ["note", "note"],
  ["colour", "colour"],
  ["layer", "layer"],
];

const text = (v: unknown): string => (v === null || v === undefined || v === "" ? "(none)" : String(v));

function measured(g: Geometry | null | undefined, mpp: Mpp | null): string {
  return g ? describe(measure(g, mpp)) : "";
}

/** What one version changed, in words. */
export function changesOf(v: Version, mpp: Mpp | null): string[] {
  if (v.action === "delete") return ["deleted"];
  const after = v.after ?? {};
  if (v.action === "create" || !v.before) {
    const m = measured(after.geometry, mpp);
    return [`created${after.class ? ` as ${after.class}` : ""}${m ? ` (${m})` : ""}`];
  }
  const before = v.before;
  const out: string[] = [];
  for (const [key, name] of FIELDS) {
    if (text(before[key]) !== text(after[key])) out.push(`${name}: ${text(before[key])} → ${text(after[key])}`);
  }
  if (JSON.stringify(before.geometry) !== JSON.stringify(after.geometry)) {
    const a = measured(before.geometry, mpp);
    const b = measured(after.geometry, mpp);
    out.push(a || b ? `geometry: ${a || "?"} → ${b || "?"}` : "geometry changed");
  }
  if (JSON.stringify(before.extra ?? null) !== JSON.stringify(after.extra ?? null)) out.push("other properties changed");
  return out.length ? out : ["no visible change"];
}

/** The feature to PUT to bring back a version's state. */
export function featureOf(state: VersionState): Feature | null {
  if (!state.geometry) return null;
  const properties: Feature["properties"] = { ...(state.extra ?? {}) };
  if (state.class) properties.class = state.class;
  if (state.label) properties.label = state.label;
  if (state.note) properties.note = state.note;
  if (state.colour) properties.colour = state.colour;
  if (state.layer) properties.layer = state.layer;
  if (state.kind === "rectangle" || state.kind === "ellipse") properties.shape = state.kind;
  return { type: "Feature", geometry: state.geometry, properties };
}

export interface HistoryView {
  el: HTMLElement;
  /** Show the history of the selection (or hide it); called when the selection or its version changes. */
  refresh(): void;
  toggle(): boolean;
}

export function historyView(editor: Editor): HistoryView {
  const el = h("section.annot-history", { "aria-label": "Annotation history", hidden: true });
  let shownKey = "";
  let request = 0;

  async function load(): Promise<void> {
    const sel = editor.selection;
    const a = editor.selected();
    if (!sel || !a) {
      el.replaceChildren(h("p.muted", {}, "Select an annotation to see its history."));
      return;
    }
    const mine = ++request;
    el.replaceChildren(h("h3", {}, "History"), h("p.muted", {}, "Loading…"));
    let versions: Version[];
    try {
      versions = await getHistory(a.id);
    } catch (err) {
      if (mine === request) el.replaceChildren(h("h3", {}, "History"), h("p.error", {}, `Cannot read the history: ${(err as Error).message}`));
      return;
    }
    if (mine !== request) return;
    const current = a.feature.properties.version ?? versions[versions.length - 1]?.version;
    const rows = [...versions].reverse().map((v) => {
      const when = formatDate(v.at) ?? v.at;
      const restorable = v.version !== current && v.after && v.action !== "delete" && featureOf(v.after);
      const restore = restorable
        ? h("button", { type: "button", "aria-label": `Restore version ${v.version}`, title: "Make this version the current one (a new version)" }, "Restore")
        : "";
      if (restore) {
        restore.addEventListener("click", () => {
          const f = featureOf(v.after!);
          if (f) void editor.restore(f);
        });
      }
      return h(
        "li.version",
        { "data-version": String(v.version) },
        h("div.head", {}, h("b", {}, `v${v.version}`), " ", h("span.actor", {}, v.actor), " ", h("time", { datetime: v.at }, when), v.version === current ? h("span.muted", {}, " (current)") : "", " ", restore),
        h("ul.changes", {}, ...changesOf(v, sel.mpp).map((c) => h("li", {}, c))),
      );
    });
    el.replaceChildren(h("h3", {}, "History"), rows.length ? h("ol.versions", { reversed: true }, ...rows) : h("p.muted", {}, "No versions recorded."));
  }

  return {
    el,
    refresh() {
      if (el.hidden) return;
      const a = editor.selected();
      const key = a ? `${a.id}@${a.feature.properties.version ?? ""}` : "";
      if (key === shownKey) return;
      shownKey = key;
      void load();
    },
    toggle() {
      el.hidden = !el.hidden;
      shownKey = "";
      this.refresh();
      return !el.hidden;
    },
  };
}
