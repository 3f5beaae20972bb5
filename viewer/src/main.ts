// Entry point: one page, three views chosen by the path the server answered with index.html for.
// First it asks the server who is signed in (GET /api/session): nobody (401, auth=tokens or oidc)
// gets the sign-in panel and no page data; a session or open mode's demo principal gets the page.
import "./style.css";
import { ApiError, onUnauthorized } from "./api";
import { renderBrowser } from "./browser";
import { renderCase } from "./case";
import { checkSession, consumeSignedOut, teardown } from "./session";
import { renderSignIn } from "./signin";
import { h } from "./util";
import { parseViewPath, renderViewer } from "./viewer";

function route(root: HTMLElement): void {
  document.title = "slideserver";
  const path = location.pathname;
  if (path.startsWith("/view/")) {
    const ids = parseViewPath(path);
    if (ids.length) {
      document.body.classList.add("page-viewer");
      void renderViewer(root, ids);
      return;
    }
  } else if (path.startsWith("/case/")) {
    const accession = decodeURIComponent(path.slice("/case/".length).replace(/\/$/, ""));
    if (accession) {
      void renderCase(root, accession);
      return;
    }
  } else if (path === "/" || path === "/index.html" || path.startsWith("/static/viewer")) {
    renderBrowser(root);
    return;
  }
  root.replaceChildren(h("main.browser", {}, h("p", {}, "Nothing here. "), h("a", { href: "/" }, "Back to the slides")));
}

async function start(): Promise<void> {
  const root = document.getElementById("app")!;
  let signedIn = false;
  let showingSignIn = false;
  // A 401 after the page is up: the session expired or was revoked. Stop the page, ask again, and
  // reload the same address once signed in (the page starts afresh, with the new cookie).
  onUnauthorized(() => {
    if (!signedIn || showingSignIn) return;
    showingSignIn = true;
    teardown();
    renderSignIn(root, "expired", () => location.reload());
  });

  let session;
  try {
    session = await checkSession();
  } catch (err) {
    if (err instanceof ApiError && (err.status === 404 || err.status === 405)) {
      // a server without the session route: no authentication to speak of
      signedIn = true;
      route(root);
      return;
    }
    const retry = h("button.primary", { type: "button", onclick: () => location.reload() }, "Try again");
    const why = err instanceof ApiError ? `${err.message || err.code} (${err.status})` : "the server cannot be reached";
    root.replaceChildren(h("main.browser", {}, h("p.status.error", { role: "alert" }, `Cannot check who is signed in: ${why}.`), retry));
    return;
  }
  if (session === null) {
    renderSignIn(root, consumeSignedOut() ? "signed-out" : null, () => {
      signedIn = true;
      route(root);
    });
    return;
  }
  signedIn = true;
  route(root);
}

void start();
