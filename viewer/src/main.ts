// Entry point: one page, three views chosen by the path the server answered with index.html for.
import "./style.css";
import { renderBrowser } from "./browser";
import { renderCase } from "./case";
import { parseViewPath, renderViewer } from "./viewer";
import { h } from "./util";

function route(): void {
  const root = document.getElementById("app")!;
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

route();
