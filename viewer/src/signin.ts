// The sign-in panel, shown when the server wants authentication (auth=tokens or oidc) and this
// browser has no valid session. The token typed here goes once into the Authorization header of
// POST /api/session and is then dropped: it is never stored (no localStorage, no URL, the input
// has no name so even a native form submission could not carry it), only the HttpOnly cookie the
// server sets remains.
import { ApiError } from "./api";
import { type Session, signIn } from "./session";
import { h } from "./util";

export type SignInReason = "expired" | "signed-out" | null;

const MESSAGES: Record<Exclude<SignInReason, null>, string> = {
  expired: "Your session has ended (expired, revoked or signed out elsewhere). Sign in again to continue.",
  "signed-out": "You are signed out.",
};

export function renderSignIn(root: HTMLElement, reason: SignInReason, onSignedIn: (s: Session) => void): void {
  document.body.classList.remove("page-viewer");
  document.title = "Sign in · slideserver";
  const input = h("input", {
    type: "password",
    id: "signin-token",
    autocomplete: "off",
    spellcheck: "false",
    autocapitalize: "off",
    placeholder: "ss_… or an OIDC access token",
    "aria-describedby": "signin-help",
    required: true,
  });
  const button = h("button.primary", { type: "submit" }, "Sign in");
  const error = h("p.signin-error", { role: "alert", hidden: true });
  const form = h(
    "form.signin",
    { "aria-label": "Sign in", novalidate: true },
    h("h1", {}, "Sign in"),
    reason ? h("p.signin-note", { role: "status" }, MESSAGES[reason]) : null,
    h(
      "p.muted",
      { id: "signin-help" },
      "This server requires authentication. Paste an API token (",
      h("code", {}, "slideserver token create"),
      ") or an OIDC access token. It is exchanged for a session cookie and not stored by the page.",
    ),
    h("label", { for: "signin-token" }, "Token"),
    input,
    error,
    h("div.row", {}, button),
  );
  // keep the pages' keyboard shortcuts (if any are still listening) out of the panel
  form.addEventListener("keydown", (e) => e.stopPropagation());
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    void submit();
  });

  async function submit(): Promise<void> {
    const token = input.value.trim().replace(/^bearer\s+/i, "");
    if (!token) {
      showError("Paste a token first.");
      input.focus();
      return;
    }
    button.disabled = true;
    input.disabled = true;
    error.hidden = true;
    button.textContent = "Signing in…";
    try {
      const session = await signIn(token);
      input.value = "";
      onSignedIn(session);
    } catch (err) {
      input.disabled = false;
      button.disabled = false;
      button.textContent = "Sign in";
      if (err instanceof ApiError && err.status === 401) showError("This token was not accepted: it is invalid, expired or revoked.");
      else if (err instanceof ApiError) showError(`Sign-in failed: ${err.message || err.code} (${err.status}).`);
      else showError("Sign-in failed: the server cannot be reached.");
      input.select();
    }
  }

  function showError(text: string): void {
    error.textContent = text;
    error.hidden = false;
  }

  root.replaceChildren(
    h(
      "div.signin-page",
      {},
      h("header.app", {}, h("a.brand", { href: "/", title: "Slide browser" }, "slideserver"), h("span.title", {}, "Sign in"), h("span.spacer")),
      h("main.signin-main", {}, form),
    ),
  );
  input.focus();
}
