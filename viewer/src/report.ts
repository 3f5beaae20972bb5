// The report panel of the case view (issue 14): write the case's sign-out report, add figures
// captured in the viewer ("Add to report" keeps the current view's region, in level-0 pixels, for
// the case), preview the PDF, sign, amend, and see where each version was delivered.
import { apiFetch, ApiError, getJson } from "./api";
import { visibleLayers } from "./annotations/store";
import type { Pane } from "./pane";
import { currentSession } from "./session";
import { h } from "./util";

export interface Region {
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface ReportFigure {
  slide_id: string;
  region: Region;
  caption: string;
  /** The annotation layers drawn on the figure (those shown when it was captured). */
  layers?: string[];
}

export interface Delivery {
  target: string;
  state: string;
  detail: string;
  attempts: number;
}

export interface Report {
  id: string;
  accession: string;
  version: number;
  status: string;
  revision: number;
  diagnosis: string;
  microscopic: string;
  synoptic: Record<string, string>;
  figures: ReportFigure[];
  signer: string | null;
  signed_at: string | null;
  reason: string;
  deliveries: Delivery[];
  versions: { version: number; status: string }[];
}

const pendingKey = (accession: string) => `slideserver.report-figures.${accession}`;

/** Keep a figure for the case's report (the viewer's "Add to report"); the panel picks it up. */
export function addPendingFigure(accession: string, figure: ReportFigure): number {
  const list = pendingFigures(accession);
  list.push(figure);
  localStorage.setItem(pendingKey(accession), JSON.stringify(list));
  return list.length;
}

function pendingFigures(accession: string): ReportFigure[] {
  try {
    const list = JSON.parse(localStorage.getItem(pendingKey(accession)) ?? "[]");
    return Array.isArray(list) ? (list as ReportFigure[]) : [];
  } catch {
    return [];
  }
}

function reportUrl(id: string, tail = ""): string {
  return `/api/reports/${encodeURIComponent(id)}${tail}`;
}

async function send(url: string, method: string, body: unknown, headers: Record<string, string> = {}): Promise<{ report: Report; etag: string }> {
  const resp = await apiFetch(url, {
    method,
    headers: { "Content-Type": "application/json", Accept: "application/json", ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { report: (await resp.json()) as Report, etag: resp.headers.get("ETag") ?? "" };
}

async function load(id: string): Promise<{ report: Report; etag: string }> {
  const resp = await apiFetch(reportUrl(id), { headers: { Accept: "application/json" } });
  return { report: (await resp.json()) as Report, etag: resp.headers.get("ETag") ?? "" };
}

export async function renderReportPanel(container: HTMLElement, accession: string): Promise<void> {
  const status = h("div.report-status", { role: "status" });
  const body = h("div.report-body");
  const panel = h("section.report-panel", { "aria-label": "Report" }, h("h2", {}, "Report"), status, body);
  container.append(panel);
  let current: { report: Report; etag: string } | null = null;
  let poll: number | undefined;

  const fail = (err: unknown) => {
    status.textContent = err instanceof ApiError ? err.message : "The report could not be saved.";
    status.classList.add("error");
  };
  const say = (text: string) => {
    status.textContent = text;
    status.classList.remove("error");
  };

  async function start(): Promise<void> {
    const list = await getJson<{ items: Report[] }>(`/api/cases/${encodeURIComponent(accession)}/reports`);
    const newest = list.items[list.items.length - 1];
    if (newest) {
      current = await load(newest.id);
      show();
      return;
    }
    const create = h("button.primary", { type: "button", id: "report-new" }, "Write report");
    create.addEventListener("click", async () => {
      try {
        const key = crypto.randomUUID();
        current = await send(`/api/cases/${encodeURIComponent(accession)}/reports`, "POST", {}, { "Idempotency-Key": key });
        show();
      } catch (err) {
        fail(err);
      }
    });
    body.replaceChildren(create);
  }

  function show(): void {
    if (!current) return;
    const r = current.report;
    window.clearInterval(poll);
    const draft = r.status === "draft";
    const diagnosis = h("textarea", { id: "report-diagnosis", rows: "3", "aria-label": "Diagnosis" });
    diagnosis.value = r.diagnosis;
    const microscopic = h("textarea", { id: "report-microscopic", rows: "4", "aria-label": "Microscopic description" });
    microscopic.value = r.microscopic;
    const synoptic = h("div.synoptic");
    const addRow = (k = "", v = "") => {
      const key = h("input.syn-key", { type: "text", placeholder: "Field", value: k });
      const value = h("input.syn-value", { type: "text", placeholder: "Value", value: v });
      synoptic.append(h("div.syn-row", {}, key, value));
    };
    for (const [k, v] of Object.entries(r.synoptic)) addRow(k, v);
    const addField = h("button", { type: "button" }, "Add field");
    addField.addEventListener("click", () => addRow());
    const figures = [...r.figures];
    const taken = pendingFigures(accession);
    figures.push(...taken);
    const figureList = h("ol.figures");
    const drawFigures = () => {
      figureList.replaceChildren(
        ...figures.map((f, i) => {
          const caption = h("input.fig-caption", { type: "text", placeholder: "Caption", value: f.caption });
          caption.addEventListener("input", () => (figures[i] = { ...f, caption: caption.value }));
          const remove = h("button", { type: "button", "aria-label": `Remove figure ${i + 1}` }, "Remove");
          remove.addEventListener("click", () => {
            figures.splice(i, 1);
            drawFigures();
          });
          const where = `${f.region.width}×${f.region.height} px at ${f.region.x}, ${f.region.y}`;
          return h("li.figure", { "data-slide": f.slide_id }, h("span.muted", {}, where), caption, remove);
        }),
      );
    };
    drawFigures();
    const collect = () => {
      const syn: Record<string, string> = {};
      for (const row of synoptic.querySelectorAll<HTMLElement>(".syn-row")) {
        const k = row.querySelector<HTMLInputElement>(".syn-key")!.value.trim();
        const v = row.querySelector<HTMLInputElement>(".syn-value")!.value;
        if (k) syn[k] = v;
      }
      return { diagnosis: diagnosis.value, microscopic: microscopic.value, synoptic: syn, figures };
    };
    const save = async () => {
      if (!current) return;
      current = await send(reportUrl(r.id), "PUT", collect(), { "If-Match": current.etag });
      localStorage.removeItem(pendingKey(accession));
    };
    const pdfLink = (version: number, label: string) => h("a.pdf", { href: reportUrl(r.id, `/pdf?version=${version}`), target: "_blank", rel: "noopener" }, label);

    const actions = h("div.report-actions");
    // One operation at a time: two saves sent with one ETag would refuse each other (412).
    const busy = (on: boolean) => {
      for (const b of body.querySelectorAll<HTMLButtonElement>(".report-actions button, .amend button")) b.disabled = on;
    };
    const run = (op: () => Promise<void>) => {
      busy(true);
      op()
        .catch(fail)
        .finally(() => busy(false));
    };
    const amendBox = h("div.amend");
    if (draft) {
      const saveBtn = h("button", { type: "button", id: "report-save" }, "Save draft");
      saveBtn.addEventListener("click", () =>
        run(async () => {
          await save();
          say("Draft saved.");
          show();
        }),
      );
      const preview = h("button", { type: "button", id: "report-preview" }, "Preview PDF");
      preview.addEventListener("click", () => {
        // opened now, in the click (a window opened after an await is a blocked popup)
        const win = window.open("about:blank", "_blank");
        if (win) win.opener = null;
        run(async () => {
          try {
            await save();
          } catch (err) {
            win?.close();
            throw err;
          }
          if (win) win.location.href = reportUrl(r.id, "/pdf");
          say("Draft saved; the PDF opens in its own tab.");
          show();
        });
      });
      const sign = h("button.primary", { type: "button", id: "report-sign" }, "Sign");
      sign.addEventListener("click", () =>
        run(async () => {
          await save();
          current = await send(reportUrl(r.id, "/sign"), "POST", undefined, { "If-Match": current!.etag });
          say(`Signed version ${current.report.version}.`);
          show();
        }),
      );
      actions.append(saveBtn, preview, sign);
    } else {
      const kind = h("select", { id: "report-amend-status", "aria-label": "Amendment kind" }, h("option", { value: "amended" }, "Amended"), h("option", { value: "corrected" }, "Corrected"));
      const reason = h("input", { type: "text", id: "report-amend-reason", placeholder: "Reason for the amendment" });
      const amend = h("button.primary", { type: "button", id: "report-amend" }, "Sign amendment");
      amend.addEventListener("click", () =>
        run(async () => {
          current = await send(reportUrl(r.id, "/amend"), "POST", { ...collect(), status: kind.value, reason: reason.value });
          localStorage.removeItem(pendingKey(accession));
          say(`Signed version ${current.report.version} (${current.report.status}).`);
          show();
        }),
      );
      amendBox.append(kind, reason, amend);
      actions.append(pdfLink(r.version, "PDF"));
    }
    const signedLine = r.signed_at ? `signed by ${r.signer} on ${r.signed_at.slice(0, 16).replace("T", " ")}` : "draft";
    const deliveries = h(
      "ul.deliveries",
      { "aria-label": "Deliveries" },
      ...r.deliveries.map((d) =>
        h("li", { "data-target": d.target, "data-state": d.state }, `${d.target === "fhir" ? "EHR (FHIR)" : "LIS (HL7 v2)"}: ${d.state.replace("_", " ")}`, d.detail && d.state !== "delivered" ? h("span.muted", {}, " — " + d.detail) : null),
      ),
    );
    // Admins may send again what the EHR or the LIS refused or never answered (issue 14).
    const stuck = r.deliveries.some((d) => d.state === "failing" || d.state === "given_up");
    const retry = currentSession()?.role === "admin" && stuck ? h("button", { type: "button", id: "report-retry" }, "Retry deliveries") : null;
    retry?.addEventListener("click", () =>
      run(async () => {
        const sent = await send(reportUrl(r.id, "/deliveries/retry"), "POST", undefined);
        current = { report: sent.report, etag: current?.etag ?? sent.etag };
        say("Deliveries will be tried again.");
        show();
      }),
    );
    const versions = h("ul.versions", { "aria-label": "Versions" }, ...r.versions.map((v) => h("li", {}, `v${v.version} ${v.status} `, v.status === "draft" ? null : pdfLink(v.version, "PDF"))));
    const parts: (HTMLElement | null)[] = [
      h("div.report-head", { "data-status": r.status }, `Version ${r.version} · ${r.status} · ${signedLine}`),
      h("label", {}, "Diagnosis", diagnosis),
      h("label", {}, "Microscopic description", microscopic),
      h("div.syn", {}, h("h3", {}, "Synoptic"), synoptic, addField),
      h("div.figs", {}, h("h3", {}, "Figures"), figures.length ? figureList : h("p.muted", {}, "Add figures with “Add to report” in the viewer.")),
      amendBox,
      actions,
      r.deliveries.length ? h("div", {}, h("h3", {}, "Delivered to"), deliveries, retry) : null,
      h("div", {}, h("h3", {}, "Versions"), versions),
    ];
    body.replaceChildren(...parts.filter((p): p is HTMLElement => p !== null));
    if (r.deliveries.some((d) => d.state === "pending" || d.state === "failing")) {
      poll = window.setInterval(async () => {
        if (!current || !panel.isConnected) return window.clearInterval(poll);
        const fresh = await load(current.report.id).catch(() => null);
        if (!fresh) return;
        const states = (x: Report) => x.deliveries.map((d) => d.state + d.attempts).join();
        if (states(fresh.report) !== states(current.report)) {
          current = { report: { ...current.report, deliveries: fresh.report.deliveries }, etag: current.etag };
          deliveries.replaceChildren(
            ...fresh.report.deliveries.map((d) => h("li", { "data-target": d.target, "data-state": d.state }, `${d.target === "fhir" ? "EHR (FHIR)" : "LIS (HL7 v2)"}: ${d.state.replace("_", " ")}`)),
          );
        }
      }, 2000);
    }
  }

  try {
    await start();
  } catch (err) {
    fail(err);
  }
}

/** The level-0 rectangle a pane shows now (clipped to the slide), for a figure. */
export function currentRegion(pane: Pane): Region | null {
  const item = pane.osd.world.getItemAt(0);
  const slide = pane.slide;
  if (!item || !slide) return null;
  const r = item.viewportToImageRectangle(pane.osd.viewport.getBounds(true));
  const x = Math.max(0, Math.round(r.x));
  const y = Math.max(0, Math.round(r.y));
  const width = Math.min(slide.width, Math.round(r.x + r.width)) - x;
  const height = Math.min(slide.height, Math.round(r.y + r.height)) - y;
  return width > 0 && height > 0 ? { x, y, width, height } : null;
}

/** The viewer's "Add to report" button: keeps the active pane's view as a figure of its case. */
export function figureButton(activePane: () => Pane): HTMLButtonElement {
  const button = h("button", { type: "button", id: "add-figure", title: "Add the current view to the case's report" }, "Add to report");
  const session = currentSession();
  button.hidden = session !== null && session.role !== "pathologist";
  button.addEventListener("click", () => {
    const pane = activePane();
    const accession = pane.slide?.case?.accession;
    const region = currentRegion(pane);
    if (!accession || !region || !pane.slide) {
      button.title = "This slide belongs to no case: it cannot go in a report";
      return;
    }
    const figure: ReportFigure = { slide_id: pane.slide.id, region, caption: "" };
    const layers = visibleLayers(pane.slide.id);
    if (layers !== null) figure.layers = layers;
    const count = addPendingFigure(accession, figure);
    button.textContent = `Added (${count})`;
    window.setTimeout(() => (button.textContent = "Add to report"), 1500);
  });
  return button;
}
