// The slide browser at "/": search by name, patient or accession; results grouped
// patient -> case -> slides with thumbnails; keyboard navigation; pick 2-4 slides to compare.
import { ApiError, getSlide, isViewable, listSlides, type Patient, type SlideSummary, statusLabel, thumbnailUrl } from "./api";
import { seesPhi } from "./session";
import { debounce, fillImage, h, isTyping, lazyImage, personName, whenVisible } from "./util";
import { appHeader, ctx, rememberContext, showHelp, viewerHref } from "./shell";

const NO_PATIENT = "\u0000";
const NO_CASE = "\u0000";

export function renderBrowser(root: HTMLElement): void {
  const params = new URLSearchParams(location.search);
  // Researchers get de-identified answers: no patient, case or label, so no search fields or
  // headings for them either.
  const phi = seesPhi();
  const q = h("input", { type: "search", name: "q", placeholder: phi ? "Slide name or text" : "Slide ID", value: params.get("q") ?? "", "aria-label": "Slide name", autocomplete: "off" });
  const patient = h("input", { type: "search", name: "patient", placeholder: "Patient ID or name", value: params.get("patient") ?? "", "aria-label": "Patient", autocomplete: "off" });
  const accession = h("input", { type: "search", name: "accession", placeholder: "Accession", value: params.get("accession") ?? "", "aria-label": "Accession", autocomplete: "off" });
  const showLabels = h("input", { type: "checkbox", id: "show-labels" });
  showLabels.checked = phi && sessionStorage.getItem("slideserver.labels") === "1";
  const compareBtn = h("button.primary", { type: "button", disabled: true, title: "Open the selected slides side by side (c)" }, "Compare");
  const status = h("div.status", { role: "status", "aria-live": "polite" });
  const results = h("div.results", { id: "results" });
  const more = h("button", { type: "button", hidden: true }, "Load more");
  const form = h(
    "form.search",
    { role: "search" },
    q,
    phi ? patient : null,
    phi ? accession : null,
    h("button.primary", { type: "submit" }, "Search"),
    phi ? h("label.check", { for: "show-labels", title: "Show slide label images (if your role allows)" }, showLabels, "Labels") : null,
    compareBtn,
  );

  root.replaceChildren(
    appHeader("Slides"),
    h("main.browser", {}, form, status, results, h("div.more", {}, more)),
  );

  let next: string | null = null;
  let items: SlideSummary[] = [];
  let generation = 0;
  const selected = new Set<string>();

  const query = (): Record<string, string> =>
    phi ? { q: q.value.trim(), patient: patient.value.trim(), accession: accession.value.trim() } : { q: q.value.trim() };

  async function search(append: boolean): Promise<void> {
    const gen = ++generation;
    const qp = query();
    if (!append) {
      const usp = new URLSearchParams();
      for (const [k, v] of Object.entries(qp)) if (v) usp.set(k, v);
      history.replaceState(null, "", usp.toString() ? "/?" + usp.toString() : "/");
    }
    status.textContent = "Searching…";
    try {
      const page = await listSlides({ ...qp, limit: 100, cursor: append && next ? next : undefined });
      if (gen !== generation) return;
      items = append ? items.concat(page.items) : page.items;
      next = page.next;
      more.hidden = !next;
      status.textContent = items.length
        ? `${items.length} slide${items.length === 1 ? "" : "s"}${next ? " (more available)" : ""}`
        : "No slides match.";
      draw();
    } catch (err) {
      if (gen !== generation) return;
      status.textContent = err instanceof ApiError ? `Search failed: ${err.message} (${err.code})` : "Search failed.";
      status.classList.add("error");
      return;
    }
    status.classList.remove("error");
  }

  function draw(): void {
    // cases first (a case's patient is the one any of its slides names), then cases by patient
    const byCase = new Map<string, SlideSummary[]>();
    for (const s of items) {
      const ck = s.case?.accession ?? NO_CASE;
      if (!byCase.has(ck)) byCase.set(ck, []);
      byCase.get(ck)!.push(s);
    }
    const byPatient = new Map<string, Map<string, SlideSummary[]>>();
    const patientOf = new Map<string, Patient | null>();
    for (const [ck, slides] of byCase) {
      const p = slides.find((s) => s.case?.patient)?.case?.patient ?? null;
      const pk = ck === NO_CASE ? NO_PATIENT : (p?.id ?? p?.name ?? NO_PATIENT);
      if (!byPatient.has(pk)) byPatient.set(pk, new Map());
      byPatient.get(pk)!.set(ck, slides);
      if (p) patientOf.set(pk, p);
    }
    const frag = document.createDocumentFragment();
    const patientKeys = [...byPatient.keys()].sort((a, b) => (a === NO_PATIENT ? 1 : b === NO_PATIENT ? -1 : a.localeCompare(b)));
    for (const pk of patientKeys) {
      const cases = byPatient.get(pk)!;
      const p = patientOf.get(pk) ?? null;
      const title = !phi
        ? h("h2", {}, "Slides", h("span.muted", {}, " · de-identified"))
        : pk === NO_PATIENT
          ? h("h2", {}, "No patient linked")
          : h("h2", {}, personName(p?.name) ?? "Patient", p?.id ? h("span.muted", {}, " · ID " + p.id) : null, p?.birth_date ? h("span.muted", {}, " · born " + p.birth_date) : null);
      const section = h("section.patient", { "aria-label": !phi ? "Slides" : pk === NO_PATIENT ? "No patient" : "Patient " + (personName(p?.name) ?? p?.id ?? "") }, title);
      const caseKeys = [...cases.keys()].sort((a, b) => (a === NO_CASE ? 1 : b === NO_CASE ? -1 : a.localeCompare(b)));
      for (const ck of caseKeys) {
        const slides = cases.get(ck)!;
        const header = !phi
          ? null
          : ck === NO_CASE
            ? h("h3", {}, pk === NO_PATIENT ? "Slides not linked to a case" : "No accession")
            : h("h3", {}, h("a", { href: "/case/" + encodeURIComponent(ck), class: "case-link" }, "Case " + ck), h("span.muted", {}, ` · ${slides.length} slide${slides.length === 1 ? "" : "s"}`));
        const grid = h("div.cards", { role: "list" });
        for (const s of slides) grid.append(card(s));
        section.append(h("div.case", { "data-accession": ck === NO_CASE ? "" : ck }, header, grid));
      }
      frag.append(section);
    }
    results.replaceChildren(frag);
  }

  function card(s: SlideSummary): HTMLElement {
    if (!isViewable(s)) return unviewableCard(s);
    const c = s.case;
    const box = h("input", { type: "checkbox", tabindex: "-1", "aria-label": "Select for comparison" });
    box.checked = selected.has(s.id);
    box.addEventListener("click", (e) => {
      e.stopPropagation();
      toggle(s.id, box.checked);
    });
    const thumb = h("div.thumb", {}, lazyImage(thumbnailUrl(s, 256), "Thumbnail of " + s.name, "thumbnail"));
    if (showLabels.checked && phi) {
      // only slides that list a label have one to fetch (the summary does not say: ask the detail)
      whenVisible(thumb, () => {
        getSlide(s.id).then(
          async (d) => {
            if (!d.associated?.includes("label") || !thumb.isConnected) return;
            const lbl = h("img", { alt: "Label", class: "label-img", draggable: "false" });
            thumb.append(lbl);
            if (!(await fillImage(lbl, "/api/slides/" + encodeURIComponent(s.id) + "/associated/label"))) lbl.remove();
          },
          () => undefined,
        );
      });
    }
    const meta = [c?.stain, c?.block ? "block " + c.block : c?.specimen ? "specimen " + c.specimen : null, s.format, s.width && s.height ? `${s.width}×${s.height}` : null]
      .filter(Boolean)
      .join(" · ");
    const a = h(
      "a.card",
      { href: viewerHref([s.id]), role: "listitem", "data-id": s.id, title: s.path ?? s.name },
      thumb,
      h("div.name", {}, s.name),
      h("div.meta", {}, meta),
    );
    a.prepend(h("label.sel", { title: "Select for comparison (space)" }, box));
    a.addEventListener("click", (e) => {
      if ((e.target as HTMLElement).closest("label.sel")) {
        e.preventDefault();
        box.checked = !box.checked;
        toggle(s.id, box.checked);
        return;
      }
      rememberContext(items.filter(isViewable).map(ctx), query());
    });
    if (selected.has(s.id)) a.classList.add("selected");
    return a;
  }

  /** A slide whose pixels cannot be served: a badge with the reason, no thumbnail, no link. */
  function unviewableCard(s: SlideSummary): HTMLElement {
    const reason = s.error ? `${statusLabel(s)}: ${s.error}` : statusLabel(s);
    const meta = [s.case?.stain, s.format].filter(Boolean).join(" · ");
    return h(
      "a.card.unviewable",
      { role: "listitem", "data-id": s.id, "data-status": s.status ?? "", tabindex: "0", "aria-disabled": "true", title: reason },
      h("div.thumb", {}, h("span.badge.slide-status", {}, statusLabel(s))),
      h("div.name", {}, s.name),
      h("div.meta", {}, meta),
      s.error ? h("div.reason", {}, s.error) : null,
    );
  }

  function toggle(id: string, on: boolean): void {
    if (on && selected.size >= 4) {
      status.textContent = "At most 4 slides side by side.";
      const el = results.querySelector<HTMLInputElement>(`a.card[data-id="${CSS.escape(id)}"] input`);
      if (el) el.checked = false;
      return;
    }
    if (on) selected.add(id);
    else selected.delete(id);
    results.querySelector(`a.card[data-id="${CSS.escape(id)}"]`)?.classList.toggle("selected", on);
    compareBtn.disabled = selected.size < 2;
    compareBtn.textContent = selected.size >= 2 ? `Compare ${selected.size}` : "Compare";
  }

  function compare(): void {
    if (selected.size < 2) return;
    rememberContext(items.filter(isViewable).map(ctx), query());
    location.href = viewerHref([...selected]);
  }

  const live = debounce(() => void search(false), 250);
  for (const inp of [q, patient, accession]) inp.addEventListener("input", live);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    void search(false);
  });
  more.addEventListener("click", () => void search(true));
  compareBtn.addEventListener("click", compare);
  showLabels.addEventListener("change", () => {
    sessionStorage.setItem("slideserver.labels", showLabels.checked ? "1" : "0");
    draw();
  });

  // Keyboard: "/" search, arrows move between slides, Enter opens, Space selects, "c" compares.
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (isTyping(e)) {
      if (e.key === "ArrowDown" || (e.key === "Enter" && e.target !== q && e.target !== patient && e.target !== accession)) {
        const firstCard = results.querySelector<HTMLElement>("a.card");
        if (e.key === "ArrowDown" && firstCard) {
          e.preventDefault();
          firstCard.focus();
        }
      } else if (e.key === "Escape") (e.target as HTMLElement).blur();
      return;
    }
    const cards = [...results.querySelectorAll<HTMLElement>("a.card")];
    const i = cards.indexOf(document.activeElement as HTMLElement);
    const move = (j: number) => {
      const t = cards[Math.max(0, Math.min(cards.length - 1, j))];
      if (t) {
        t.focus();
        t.scrollIntoView({ block: "nearest" });
      }
    };
    switch (e.key) {
      case "/":
        e.preventDefault();
        q.focus();
        q.select();
        break;
      case "ArrowRight":
        e.preventDefault();
        move(i + 1);
        break;
      case "ArrowLeft":
        e.preventDefault();
        move(i < 0 ? 0 : i - 1);
        break;
      case "ArrowDown":
      case "ArrowUp": {
        e.preventDefault();
        if (i < 0) return move(0);
        const cur = cards[i].getBoundingClientRect();
        const down = e.key === "ArrowDown";
        // the nearest card in the next row below (or above), by horizontal distance
        let best = -1;
        let bestScore = Infinity;
        cards.forEach((c, j) => {
          const r = c.getBoundingClientRect();
          const dy = down ? r.top - cur.bottom : cur.top - r.bottom;
          if (dy < -2) return;
          const score = dy * 10 + Math.abs(r.left - cur.left);
          if (j !== i && score < bestScore) {
            bestScore = score;
            best = j;
          }
        });
        if (best >= 0) move(best);
        break;
      }
      case " ":
        if (i >= 0) {
          e.preventDefault();
          const box = cards[i].querySelector<HTMLInputElement>("input")!;
          box.checked = !box.checked;
          toggle(cards[i].dataset.id!, box.checked);
        }
        break;
      case "c":
        compare();
        break;
      case "?":
        showHelp("browser");
        break;
    }
  });

  void search(false);
}
