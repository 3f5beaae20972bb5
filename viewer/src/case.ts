// The case view at /case/{accession}: the patient, then every slide of the accession grouped by
// specimen and block, with thumbnails; open one, or compare 2-4 side by side.
import { ApiError, type CaseDetail, getCaseOrSearch, isViewable, type SlideSummary, statusLabel, thumbnailUrl } from "./api";
import { renderReportPanel } from "./report";
import { currentSession, seesPhi } from "./session";
import { appHeader, ctx, rememberContext, setHelpPage, showHelp, viewerHref } from "./shell";
import { h, isTyping, lazyImage, personName } from "./util";

export function caseSlides(c: CaseDetail): SlideSummary[] {
  const fromSpecimens = c.specimens.flatMap((sp) => sp.blocks.flatMap((b) => b.slides));
  const seen = new Set<string>();
  const all: SlideSummary[] = [];
  for (const s of [...fromSpecimens, ...c.slides]) {
    if (!seen.has(s.id)) {
      seen.add(s.id);
      all.push(s);
    }
  }
  return all;
}

export async function renderCase(root: HTMLElement, accession: string): Promise<void> {
  setHelpPage("case");
  document.title = `Case ${accession} · slideserver`;
  const status = h("div.status", { role: "status" }, "Loading case…");
  const body = h("div.case-body");
  const compareBtn = h("button.primary", { type: "button", disabled: true }, "Compare");
  root.replaceChildren(appHeader("Case " + accession, compareBtn), h("main.case-view", {}, status, body));

  if (!seesPhi()) {
    // the server refuses case data to de-identified roles (researcher): do not even ask
    status.textContent = "Case views are not available to the researcher role: slides are de-identified.";
    body.append(h("a", { href: "/" }, "Back to the slides"));
    return;
  }
  let c: CaseDetail;
  try {
    c = await getCaseOrSearch(accession);
  } catch (err) {
    status.textContent = err instanceof ApiError ? `Could not load the case: ${err.message}` : "Could not load the case.";
    status.classList.add("error");
    return;
  }
  const slides = caseSlides(c);
  status.textContent = `${slides.length} slide${slides.length === 1 ? "" : "s"}`;
  const p = c.patient;
  if (p) {
    body.append(
      h("section.patient-card", { "aria-label": "Patient" }, h("h2", {}, personName(p.name) ?? "Patient"), h("div.muted", {}, [p.id ? "ID " + p.id : null, p.birth_date ? "born " + p.birth_date : null].filter(Boolean).join(" · "))),
    );
  }

  const role = currentSession()?.role;
  if (!role || role === "pathologist" || role === "admin") void renderReportPanel(body, c.accession); // issue 14

  // Group by specimen -> block: from the case's structure, else from each slide's case link.
  const groups = new Map<string, SlideSummary[]>();
  for (const s of slides) {
    const sp = s.case?.specimen ?? "";
    const bl = s.case?.block ?? "";
    const key = sp || bl ? [sp ? "Specimen " + sp : null, bl ? "block " + bl : null].filter(Boolean).join(" · ") : "Slides";
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key)!.push(s);
  }
  const selected = new Set<string>();
  for (const [key, list] of [...groups.entries()].sort(([a], [b]) => a.localeCompare(b))) {
    const grid = h("div.cards", { role: "list" });
    for (const s of list) {
      if (!isViewable(s)) {
        // no thumbnail, no viewer link: the pixels of this slide cannot be served
        grid.append(
          h(
            "a.card.unviewable",
            { role: "listitem", "data-id": s.id, "data-status": s.status ?? "", tabindex: "0", "aria-disabled": "true", title: s.error ?? statusLabel(s) },
            h("div.thumb", {}, h("span.badge.slide-status", {}, statusLabel(s))),
            h("div.name", {}, s.name),
            h("div.meta", {}, [s.case?.stain, s.format].filter(Boolean).join(" · ")),
            s.error ? h("div.reason", {}, s.error) : null,
          ),
        );
        continue;
      }
      const box = h("input", { type: "checkbox", tabindex: "-1", "aria-label": "Select for comparison" });
      const card = h(
        "a.card",
        { href: viewerHref([s.id]), role: "listitem", "data-id": s.id },
        h("label.sel", {}, box),
        h("div.thumb", {}, lazyImage(thumbnailUrl(s, 256), "Thumbnail of " + s.name, "thumbnail")),
        h("div.name", {}, s.name),
        h("div.meta", {}, [s.case?.stain, s.format, `${s.width}×${s.height}`].filter(Boolean).join(" · ")),
      );
      card.addEventListener("click", (e) => {
        if ((e.target as HTMLElement).closest("label.sel")) {
          e.preventDefault();
          box.checked = !box.checked;
          toggle(s.id, box.checked, card);
          return;
        }
        rememberContext(slides.filter(isViewable).map(ctx), { accession });
      });
      grid.append(card);
    }
    body.append(h("section.block", {}, h("h3", {}, key), grid));
  }

  function toggle(id: string, on: boolean, card: HTMLElement): void {
    if (on && selected.size >= 4) {
      (card.querySelector("input") as HTMLInputElement).checked = false;
      return;
    }
    if (on) selected.add(id);
    else selected.delete(id);
    card.classList.toggle("selected", on);
    compareBtn.disabled = selected.size < 2;
    compareBtn.textContent = selected.size >= 2 ? `Compare ${selected.size}` : "Compare";
  }
  const compare = () => {
    if (selected.size >= 2) location.href = viewerHref([...selected]);
  };
  compareBtn.addEventListener("click", compare);

  document.addEventListener("keydown", (e) => {
    if (isTyping(e) || e.ctrlKey || e.metaKey || e.altKey) return;
    const cards = [...body.querySelectorAll<HTMLElement>("a.card")];
    const i = cards.indexOf(document.activeElement as HTMLElement);
    const go = (j: number) => cards[Math.max(0, Math.min(cards.length - 1, j))]?.focus();
    if (e.key === "ArrowRight" || e.key === "ArrowDown") {
      e.preventDefault();
      go(i + 1);
    } else if (e.key === "ArrowLeft" || e.key === "ArrowUp") {
      e.preventDefault();
      go(i < 0 ? 0 : i - 1);
    } else if (e.key === " " && i >= 0) {
      e.preventDefault();
      const box = cards[i].querySelector<HTMLInputElement>("input")!;
      box.checked = !box.checked;
      toggle(cards[i].dataset.id!, box.checked, cards[i]);
    } else if (e.key === "c") compare();
    else if (e.key === "Backspace") location.href = "/?accession=" + encodeURIComponent(accession);
    else if (e.key === "?") showHelp("case");
  });
  cardsFocusFirst(body);
}

function cardsFocusFirst(body: HTMLElement): void {
  body.querySelector<HTMLElement>("a.card")?.focus({ preventScroll: true });
}
