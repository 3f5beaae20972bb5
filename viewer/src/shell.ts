// What every page shares: the header, the help overlay, links between pages.
import { currentSession, displayName, isOpenMode, signOut, teardown } from "./session";
import { h } from "./util";

/** The viewer URL for one slide or several side by side: /view/a or /view/a,b,c. */
export function viewerHref(ids: string[]): string {
  return "/view/" + ids.map(encodeURIComponent).join(",");
}

export function caseHref(accession: string): string {
  return "/case/" + encodeURIComponent(accession);
}

const CONTEXT_KEY = "slideserver.context";

/** Remember the browser's result list, so the viewer can step through it when there is no case. */
export function rememberContext(slides: ContextSlide[], query: Record<string, string>): void {
  try {
    const list = slides.slice(0, 200).map((s) => ({ id: s.id, name: s.name, stain: s.stain ?? null }));
    sessionStorage.setItem(CONTEXT_KEY, JSON.stringify({ slides: list, query }));
  } catch {
    /* storage full or disabled */
  }
}

export interface ContextSlide {
  id: string;
  name: string;
  stain?: string | null;
}

export function recallContext(): { slides: ContextSlide[]; query: Record<string, string> } | null {
  try {
    const v = JSON.parse(sessionStorage.getItem(CONTEXT_KEY) ?? "null");
    return v && Array.isArray(v.slides) ? v : null;
  } catch {
    return null;
  }
}

export function appHeader(title: string, ...extra: (Node | string)[]): HTMLElement {
  return h(
    "header.app",
    {},
    h("a.brand", { href: "/", title: "Slide browser" }, "slideserver"),
    h("span.title", {}, title),
    ...extra,
    h("span.spacer"),
    sessionBadge(),
    h("button.icon", { type: "button", title: "Keyboard shortcuts (?)", "aria-label": "Help", onclick: () => showHelp(currentHelp) }, "?"),
  );
}

/** Who is signed in (role, name) and Sign out; or the open demo mode badge; or nothing. */
function sessionBadge(): HTMLElement | null {
  const s = currentSession();
  if (!s) return null;
  if (isOpenMode()) {
    return h(
      "span.badge.demo",
      { id: "session-badge", title: "No authentication: a local demo; every visitor sees every slide and all patient data." },
      "open demo mode",
    );
  }
  const name = displayName(s);
  const out = h("button.signout", { type: "button", title: "End this session" }, "Sign out");
  out.addEventListener("click", async () => {
    out.disabled = true;
    teardown(); // stop tile loading first: nothing should be in flight when the cookie goes
    try {
      await signOut();
    } catch {
      /* the cookie is cleared or already invalid either way */
    }
    location.reload();
  });
  return h(
    "span.who",
    { id: "session-badge", title: `Signed in as ${name} (${s.role})` + (s.collections.length ? `; collections: ${s.collections.join(", ")}` : "") },
    h("span.role", { "data-role": s.role }, s.role),
    h("span.user", {}, name),
    out,
  );
}

type HelpPage = "browser" | "viewer" | "case";
let currentHelp: HelpPage = "browser";

const SHORTCUTS: Record<HelpPage, [string, string][]> = {
  browser: [
    ["/", "Search"],
    ["← → ↑ ↓", "Move between slides"],
    ["Enter", "Open the slide"],
    ["Space", "Select for side-by-side comparison (2–4)"],
    ["c", "Compare the selected slides"],
    ["?", "This help"],
  ],
  case: [
    ["← → ↑ ↓", "Move between slides"],
    ["Enter", "Open the slide"],
    ["Space", "Select for comparison"],
    ["c", "Compare the selected slides"],
    ["Backspace", "Back to the slide browser"],
    ["?", "This help"],
  ],
  viewer: [
    ["1 2 3 4 5 6", "Magnification 1× 2× 5× 10× 20× 40×"],
    ["0", "Fit the whole slide"],
    ["+ / −", "Zoom in / out"],
    ["w a s d, arrows", "Pan"],
    ["r / R", "Rotate 90° clockwise / counter-clockwise"],
    ["f", "Full screen"],
    ["m", "Ruler: drag to measure; Esc clears"],
    ["n / p", "Next / previous slide of the case"],
    ["Tab", "Next pane (side by side)"],
    ["l", "Lock / unlock synchronized panes"],
    ["i", "Metadata panel"],
    ["b", "Brightness, contrast, gamma"],
    ["v o u g h t e", "Annotate: select, point, polyline (ruler), polygon, freehand, rectangle, ellipse"],
    ["Enter / Esc", "Finish / cancel the shape being drawn"],
    ["Delete", "Delete the selected annotation"],
    ["Ctrl+Z / Ctrl+Shift+Z", "Undo / redo"],
    ["?", "This help"],
    ["Esc", "Close panels"],
  ],
};

export function setHelpPage(page: HelpPage): void {
  currentHelp = page;
}

export function showHelp(page: HelpPage = currentHelp): void {
  const existing = document.getElementById("help");
  if (existing) {
    existing.remove();
    return;
  }
  const close = () => overlay.remove();
  const overlay = h(
    "div.overlay",
    { id: "help", role: "dialog", "aria-modal": "true", "aria-label": "Keyboard shortcuts" },
    h(
      "div.dialog",
      {},
      h("h2", {}, "Keyboard shortcuts"),
      h(
        "table",
        {},
        ...SHORTCUTS[page].map(([k, what]) => h("tr", {}, h("td", {}, h("kbd", {}, k)), h("td", {}, what))),
      ),
      page === "viewer"
        ? h(
            "p.muted",
            {},
            "The address bar follows the position and zoom: copy it to share this exact field of view. ",
            "Side by side: /view/id1,id2 (up to 4); panes follow each other by physical position while locked.",
          )
        : null,
      h("button.primary", { type: "button", onclick: close }, "Close"),
    ),
  );
  overlay.addEventListener("click", (e) => {
    if (e.target === overlay) close();
  });
  overlay.addEventListener("keydown", (e) => {
    if (e.key === "Escape" || e.key === "?") {
      e.stopPropagation();
      close();
    }
  });
  document.body.append(overlay);
  overlay.querySelector<HTMLButtonElement>("button")?.focus();
}

export function ctx(s: { id: string; name: string; case?: { stain?: string | null } | null }): ContextSlide {
  return { id: s.id, name: s.name, stain: s.case?.stain ?? null };
}
