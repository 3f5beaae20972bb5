// The annotation API of issue 16, as the viewer calls it. Reads are GeoJSON by bbox, paged;
// writes carry If-Match with the version's ETag, and a 412 (someone else saved first) becomes a
// ConflictError the store answers by reloading the annotation and telling the user.
import { apiFetch, ApiError } from "../api";
import { type Annotation, type BBox, type Feature, type FeatureCollection, featureId, type Geometry, geometryBBox } from "./model";

/** Features asked for in one page of a viewport query. */
export const PAGE_LIMIT = 5000;

export class ConflictError extends Error {
  constructor(readonly id: string) {
    super("this annotation was changed by someone else");
  }
}

function slideBase(slideId: string): string {
  return "/api/slides/" + encodeURIComponent(slideId) + "/annotations";
}

function one(id: string): string {
  return "/api/annotations/" + encodeURIComponent(id);
}

export function toAnnotation(f: Feature, etag: string | null = null): Annotation | null {
  const id = featureId(f);
  if (!id || !f.geometry) return null;
  f.properties = { ...(f.properties ?? {}), id };
  return { id, feature: f, etag, bbox: geometryBBox(f.geometry) };
}

function nextUrl(body: FeatureCollection, current: string): string | null {
  const link = body.links?.find((l) => l.rel === "next")?.href ?? body.next ?? null;
  if (!link) return null;
  if (link.startsWith("/") || link.startsWith("http")) return link;
  // a bare cursor: the same query with cursor=
  const u = new URL(current, location.origin);
  u.searchParams.set("cursor", link);
  return u.pathname + u.search;
}

export interface PageResult {
  features: Feature[];
  /** Whether more features match than were returned (the caller asked for at most ``max``). */
  truncated: boolean;
  /** The next page's URL when truncated. */
  next: string | null;
}

/**
 * Features of a slide inside ``bbox`` (level-0 pixels), following pages until ``max`` are read.
 * ``onPage`` sees each page as it arrives, so callers can draw before the last page.
 */
export async function fetchInBBox(
  slideId: string,
  bbox: BBox,
  max: number,
  signal?: AbortSignal,
  onPage?: (features: Feature[]) => void,
  from?: string,
  layers?: string[],
): Promise<PageResult> {
  const q = new URLSearchParams({ bbox: bbox.map((v) => Math.round(v)).join(","), limit: String(Math.min(PAGE_LIMIT, max)) });
  if (layers) q.set("layer", layers.join(","));
  let url: string | null = from ?? slideBase(slideId) + "?" + q.toString();
  const out: Feature[] = [];
  while (url) {
    const resp = await apiFetch(url, { headers: { Accept: "application/geo+json, application/json" }, signal });
    const body = (await resp.json()) as FeatureCollection;
    const page = body.features ?? [];
    out.push(...page);
    onPage?.(page);
    const next = nextUrl(body, url);
    if (out.length >= max && next !== null) return { features: out, truncated: true, next };
    url = next;
  }
  return { features: out, truncated: false, next: null };
}

/** Feature counts per cell of a ``cols`` x ``rows`` grid over ``bbox`` (by bbox centre, row by row). */
export interface DensityAnswer {
  bbox: BBox;
  cols: number;
  rows: number;
  counts: number[];
  total: number;
  max: number;
  layers: string[];
}

/** The server's density grid of ``layers`` (all readable ones when absent) over ``bbox``. */
export async function fetchDensity(
  slideId: string,
  bbox: BBox,
  cols: number,
  rows: number,
  layers?: string[],
  signal?: AbortSignal,
): Promise<DensityAnswer> {
  const q = new URLSearchParams({ bbox: bbox.join(","), cols: String(cols), rows: String(rows) });
  if (layers) q.set("layer", layers.join(","));
  const resp = await apiFetch(slideBase(slideId) + "/density?" + q.toString(), { signal });
  return (await resp.json()) as DensityAnswer;
}

async function readFeatures(resp: Response): Promise<Annotation[]> {
  const etag = resp.headers.get("ETag");
  const body = (await resp.json()) as Feature | FeatureCollection;
  const feats = body.type === "FeatureCollection" ? body.features : [body as Feature];
  return feats.map((f) => toAnnotation(f, feats.length === 1 ? etag : null)).filter((a): a is Annotation => a !== null);
}

/**
 * Create one feature under an id chosen here, so that a retry after a lost answer finds it stored
 * instead of storing it twice; then read it back (version, ETag, the server's measurements).
 */
export async function createFeature(slideId: string, f: Feature): Promise<Annotation> {
  const id = f.properties.id ?? crypto.randomUUID();
  const body: Feature = { ...f, properties: { ...f.properties, id } };
  const resp = await apiFetch(slideBase(slideId), {
    method: "POST",
    headers: { "Content-Type": "application/geo+json" },
    body: JSON.stringify(body),
  });
  const answer = (await resp.json()) as Partial<Feature & { created: string[]; existing: string[] }>;
  if (answer.type === "Feature" && resp.headers.get("ETag")) {
    const a = toAnnotation(answer as Feature, resp.headers.get("ETag"));
    if (a) return a;
  }
  return getFeature(id);
}

/** A layer as the server describes it (issue 16's layer management). */
export interface LayerInfo {
  id: string;
  name: string;
  kind?: string;
  locked?: boolean;
  writable?: boolean;
}

export async function getLayers(slideId: string): Promise<LayerInfo[]> {
  const resp = await apiFetch("/api/slides/" + encodeURIComponent(slideId) + "/annotation-layers", { headers: { Accept: "application/json" } });
  const body = (await resp.json()) as { layers?: LayerInfo[] };
  return body.layers ?? [];
}

export async function getFeature(id: string): Promise<Annotation> {
  const resp = await apiFetch(one(id), { headers: { Accept: "application/geo+json, application/json" } });
  const [a] = await readFeatures(resp);
  if (!a) throw new ApiError(502, "bad_answer", "the server did not return the annotation");
  return a;
}

/** The ETag to send in If-Match: the one we hold, else the server's if its version is ours. */
async function etagFor(a: Annotation): Promise<string> {
  if (a.etag) return a.etag;
  const fresh = await getFeature(a.id);
  if (fresh.feature.properties.version !== a.feature.properties.version || !fresh.etag) throw new ConflictError(a.id);
  return fresh.etag;
}

function conflict(err: unknown, id: string): unknown {
  return err instanceof ApiError && err.status === 412 ? new ConflictError(id) : err;
}

export async function updateFeature(a: Annotation, f: Feature): Promise<Annotation> {
  try {
    const resp = await apiFetch(one(a.id), {
      method: "PUT",
      headers: { "Content-Type": "application/geo+json", "If-Match": await etagFor(a) },
      body: JSON.stringify(f),
    });
    const [saved] = await readFeatures(resp);
    return saved ?? (await getFeature(a.id));
  } catch (err) {
    throw conflict(err, a.id);
  }
}

export async function deleteFeature(a: Annotation): Promise<void> {
  try {
    await apiFetch(one(a.id), { method: "DELETE", headers: { "If-Match": await etagFor(a) } });
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return; // already gone
    throw conflict(err, a.id);
  }
}

/** An annotation's state as one version recorded it (what a client can change). */
export interface VersionState {
  kind?: string;
  geometry?: Geometry | null;
  class?: string | null;
  label?: string | null;
  note?: string | null;
  colour?: string | null;
  layer?: string | null;
  extra?: Record<string, unknown> | null;
}

/** One version of an annotation: who made it, when, and the state before and after. */
export interface Version {
  version: number;
  action: "create" | "update" | "delete" | string;
  /** The author, or a stable pseudonym for researchers (as the server gives it). */
  actor: string;
  at: string;
  before: VersionState | null;
  after: VersionState | null;
}

/** Every version of an annotation, oldest first (``GET /api/annotations/{id}/history``). */
export async function getHistory(id: string): Promise<Version[]> {
  const resp = await apiFetch(one(id) + "/history", { headers: { Accept: "application/json" } });
  const body = (await resp.json()) as { items?: Version[] };
  return body.items ?? [];
}
