// Who is signed in. The viewer never keeps a token: signing in trades it once for the server's
// HttpOnly, SameSite=Strict session cookie (POST /api/session), and every later request rides on
// that cookie. GET /api/session says who the cookie belongs to (401: nobody; in auth=open the
// anonymous demo principal); DELETE /api/session signs out.
import { ApiError, apiFetch } from "./api";

export interface Session {
  /** token:NAME for API tokens, the OIDC subject, or "anonymous" in open mode. */
  subject: string;
  role: string;
  /** token, oidc, session (the cookie) or open (the local demo without authentication). */
  via: string;
  collections: string[];
}

/** Roles whose answers carry patient and case fields (the server de-identifies the others). */
const PHI_ROLES = new Set(["admin", "pathologist", "lis"]);

let current: Session | null = null;
const teardowns: (() => void)[] = [];

export function currentSession(): Session | null {
  return current;
}

/** True in open mode: no authentication, a local demo. */
export function isOpenMode(): boolean {
  return current?.via === "open";
}

/** Whether this user's role sees patient, case and label data (unknown: assume it may). */
export function seesPhi(): boolean {
  return !current || PHI_ROLES.has(current.role);
}

/** The name to show for the signed-in user: the token's name or the OIDC subject. */
export function displayName(s: Session): string {
  return s.subject.replace(/^(token|oidc):/, "");
}

function asSession(body: unknown): Session {
  const b = (body ?? {}) as Partial<Session>;
  return {
    subject: typeof b.subject === "string" ? b.subject : "",
    role: typeof b.role === "string" ? b.role : "",
    via: typeof b.via === "string" ? b.via : "",
    collections: Array.isArray(b.collections) ? b.collections.map(String) : [],
  };
}

/**
 * Ask the server who is signed in: the session, or null when nobody is (401). Throws ApiError for
 * other failures (404/405 from a server without the session route, 503, ...).
 */
export async function checkSession(): Promise<Session | null> {
  try {
    const resp = await apiFetch("/api/session", { headers: { Accept: "application/json" } }, { expectUnauthorized: true });
    current = asSession(await resp.json());
    return current;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      current = null;
      return null;
    }
    throw err;
  }
}

/** Trade a bearer token (API token or OIDC access token) for the session cookie. */
export async function signIn(token: string): Promise<Session> {
  const resp = await apiFetch(
    "/api/session",
    { method: "POST", headers: { Authorization: "Bearer " + token, Accept: "application/json" } },
    { expectUnauthorized: true },
  );
  current = asSession(await resp.json());
  return current;
}

const SIGNED_OUT_KEY = "slideserver.signedOut";

/** End the session (the server clears the cookie) and forget what this tab remembered. */
export async function signOut(): Promise<void> {
  try {
    await apiFetch("/api/session", { method: "DELETE" }, { expectUnauthorized: true });
  } finally {
    current = null;
    forgetTabState();
    try {
      sessionStorage.setItem(SIGNED_OUT_KEY, "1");
    } catch {
      /* storage disabled */
    }
  }
}

/** True once after signOut: the sign-in panel then says "You are signed out". */
export function consumeSignedOut(): boolean {
  try {
    const v = sessionStorage.getItem(SIGNED_OUT_KEY);
    sessionStorage.removeItem(SIGNED_OUT_KEY);
    return v !== null;
  } catch {
    return false;
  }
}

/** Drop the per-tab memory of result lists (slide names, accessions) at sign-out. */
export function forgetTabState(): void {
  try {
    for (const key of Object.keys(sessionStorage)) if (key.startsWith("slideserver.")) sessionStorage.removeItem(key);
  } catch {
    /* storage disabled */
  }
}

/** Register clean-up to run when the page gives way to the sign-in panel (stop tile loading). */
export function onTeardown(fn: () => void): void {
  teardowns.push(fn);
}

export function teardown(): void {
  for (const fn of teardowns.splice(0)) {
    try {
      fn();
    } catch {
      /* already gone */
    }
  }
}
