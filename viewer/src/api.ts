// Client for the slideserver HTTP API (DESIGN.md section 3).
// Every request goes through apiFetch: same-origin credentials (the HttpOnly session cookie) and
// the auth headers, never a token in a URL. Images (thumbnails, labels) are fetched the same way and
// shown from blob URLs. A 401 from any call (the session expired, was revoked or signed out
// elsewhere) goes to the handler main.ts installs, which shows the sign-in panel.

export interface Patient {
  id: string | null;
  name: string | null;
  birth_date: string | null;
}

export interface CaseLink {
  accession: string | null;
  specimen: string | null;
  block: string | null;
  stain: string | null;
  patient: Patient | null;
}

export interface SlideSummary {
  id: string;
  name: string;
  path?: string | null;
  format?: string | null;
  vendor?: string | null;
  width: number;
  height: number;
  mpp_x: number | null;
  mpp_y: number | null;
  objective_power: number | null;
  status?: string | null;
  /** Why the slide cannot be served, when ``status`` is not ``ok`` (no path or file name). */
  error?: string | null;
  links?: { dzi?: string; thumbnail?: string; iiif?: string; viewer?: string };
  case?: CaseLink | null;
}

export interface Level {
  width: number;
  height: number;
  downsample: number;
}

export interface SlideDetail extends SlideSummary {
  levels?: Level[];
  associated?: string[];
  properties?: Record<string, unknown>;
  scan_date?: string | null;
}

export interface SlidePage {
  items: SlideSummary[];
  next: string | null;
}

export interface CaseDetail {
  accession: string;
  patient: Patient | null;
  specimens: { id: string; blocks: { id: string; slides: SlideSummary[] }[] }[];
  slides: SlideSummary[];
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    detail: string,
  ) {
    super(detail);
  }
}

/**
 * Headers added to every API and tile request. The session cookie authenticates; the server wants
 * X-Requested-With on every change made with it (CSRF), and it is harmless on reads.
 */
export function authHeaders(): Record<string, string> {
  return { "X-Requested-With": "slideserver" };
}

let unauthorizedHandler: ((detail: string) => void) | null = null;

/** Set what happens when the server answers 401 to a request (main.ts: the sign-in panel). */
export function onUnauthorized(handler: (detail: string) => void): void {
  unauthorizedHandler = handler;
}

/** Report a 401 seen outside apiFetch (OpenSeadragon's tile requests). */
export function notifyUnauthorized(detail = ""): void {
  unauthorizedHandler?.(detail);
}

export interface FetchOptions {
  /** A 401 is an answer the caller handles (the session check, signing in), not an expiry. */
  expectUnauthorized?: boolean;
}

/** Fetch a same-origin URL with the user's credentials; throw ApiError on a non-2xx answer. */
export async function apiFetch(url: string, init: RequestInit = {}, opts: FetchOptions = {}): Promise<Response> {
  const resp = await fetch(url, {
    ...init,
    credentials: "same-origin",
    headers: { ...authHeaders(), ...(init.headers as Record<string, string> | undefined) },
  });
  if (!resp.ok) {
    let code = "http_" + resp.status;
    let detail = resp.statusText;
    try {
      const body = await resp.json();
      if (body && typeof body.error === "string") code = body.error;
      if (body && typeof body.detail === "string") detail = body.detail;
    } catch {
      /* not JSON */
    }
    if (resp.status === 401 && !opts.expectUnauthorized) notifyUnauthorized(detail);
    throw new ApiError(resp.status, code, detail);
  }
  return resp;
}

export async function getJson<T>(url: string): Promise<T> {
  const resp = await apiFetch(url, { headers: { Accept: "application/json" } });
  return (await resp.json()) as T;
}

export function listSlides(params: Record<string, string | number | undefined>): Promise<SlidePage> {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== "") qs.set(k, String(v));
  }
  return getJson<SlidePage>("/api/slides?" + qs.toString());
}

const detailCache = new Map<string, Promise<SlideDetail>>();

export function getSlide(id: string): Promise<SlideDetail> {
  let p = detailCache.get(id);
  if (!p) {
    p = getJson<SlideDetail>("/api/slides/" + encodeURIComponent(id));
    p.catch(() => detailCache.delete(id));
    detailCache.set(id, p);
  }
  return p;
}

export function getCase(accession: string): Promise<CaseDetail> {
  return getJson<CaseDetail>("/api/cases/" + encodeURIComponent(accession));
}

/** The cases' slides: /api/cases when the catalog answers, else a search by accession. */
export async function getCaseOrSearch(accession: string): Promise<CaseDetail> {
  try {
    return await getCase(accession);
  } catch (err) {
    if (!(err instanceof ApiError) || (err.status !== 404 && err.status !== 405)) throw err;
  }
  const page = await listSlides({ accession, limit: 200 });
  const slides = page.items.filter((s) => s.case?.accession === accession);
  return {
    accession,
    patient: slides.find((s) => s.case?.patient)?.case?.patient ?? null,
    specimens: [],
    slides: slides.length ? slides : page.items,
  };
}

export interface DziInfo {
  tileSize: number;
  overlap: number;
  format: string;
  width: number;
  height: number;
}

/** Fetch and parse a Deep Zoom descriptor. */
export async function getDzi(id: string): Promise<DziInfo> {
  const resp = await apiFetch("/dz/" + encodeURIComponent(id) + ".dzi");
  const xml = new DOMParser().parseFromString(await resp.text(), "application/xml");
  const image = xml.getElementsByTagName("Image")[0];
  const size = xml.getElementsByTagName("Size")[0];
  if (!image || !size) throw new ApiError(502, "bad_dzi", "malformed Deep Zoom descriptor");
  return {
    tileSize: Number(image.getAttribute("TileSize")),
    overlap: Number(image.getAttribute("Overlap") ?? 0),
    format: image.getAttribute("Format") ?? "jpeg",
    width: Number(size.getAttribute("Width")),
    height: Number(size.getAttribute("Height")),
  };
}

/** Fetch an image with credentials and return an object URL (revoke it when done), or null. */
export async function imageUrl(url: string): Promise<string | null> {
  try {
    const resp = await apiFetch(url);
    const blob = await resp.blob();
    if (!blob.type.startsWith("image/")) return null;
    return URL.createObjectURL(blob);
  } catch {
    return null;
  }
}

/** Whether the slide's pixels can be served: only ``ok`` slides (or ones with no status given).
 * The catalog marks a slide ``unreadable`` when no reader decodes its tiles and ``missing`` when
 * its file is gone; asking for a thumbnail or tiles of those would only fail. */
export function isViewable(s: Pick<SlideSummary, "status">): boolean {
  return !s.status || s.status === "ok";
}

/** A badge standing in for the thumbnail of a slide that cannot be shown. */
export function statusLabel(s: Pick<SlideSummary, "status">): string {
  return s.status === "missing" ? "File missing" : s.status === "unreadable" ? "Unreadable" : String(s.status);
}

export function thumbnailUrl(s: SlideSummary, max = 256): string {
  const base = s.links?.thumbnail ?? "/api/slides/" + encodeURIComponent(s.id) + "/thumbnail";
  return base + (base.includes("?") ? "&" : "?") + "max=" + max;
}
