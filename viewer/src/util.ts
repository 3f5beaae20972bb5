// Small DOM and formatting helpers shared by the pages.
import { imageUrl } from "./api";

type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, string | number | boolean | null | undefined | EventListener>;

/** Create an element: h("a.cls", {href: "/"}, "text", child). Text is never parsed as HTML. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tagAndClasses: K | `${K}.${string}`,
  attrs: Attrs = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const [tag, ...classes] = tagAndClasses.split(".");
  const el = document.createElement(tag as K);
  if (classes.length) el.className = classes.join(" ");
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (typeof v === "function") el.addEventListener(k.replace(/^on/, ""), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

/** Format a length given in micrometres: "250 µm", "1.5 mm". */
export function formatLength(um: number): string {
  if (!isFinite(um)) return "–";
  if (um >= 1000) {
    const mm = um / 1000;
    return (mm >= 10 ? mm.toFixed(1) : mm.toFixed(2)).replace(/\.?0+$/, "") + " mm";
  }
  if (um >= 10) return Math.round(um) + " µm";
  return um.toFixed(um >= 1 ? 1 : 2).replace(/\.?0+$/, "") + " µm";
}

/** Largest 1-2-5 series value not above x. */
export function niceBelow(x: number): number {
  const p = Math.pow(10, Math.floor(Math.log10(x)));
  for (const m of [5, 2, 1]) if (m * p <= x) return m * p;
  return p;
}

export function formatBytes(n: number): string {
  return n >= 1e9 ? (n / 1e9).toFixed(1) + " G" : n >= 1e6 ? (n / 1e6).toFixed(1) + " M" : String(n);
}

const visibleTasks = new WeakMap<Element, () => void>();

const observer =
  typeof IntersectionObserver !== "undefined"
    ? new IntersectionObserver(
        (entries) => {
          for (const e of entries) {
            if (!e.isIntersecting) continue;
            observer?.unobserve(e.target);
            const task = visibleTasks.get(e.target);
            visibleTasks.delete(e.target);
            if (task) task();
            else void loadInto(e.target as HTMLImageElement);
          }
        },
        { rootMargin: "200px" },
      )
    : null;

async function loadInto(img: HTMLImageElement): Promise<void> {
  const src = img.dataset.src;
  if (!src) return;
  const url = await imageUrl(src);
  if (url) {
    img.addEventListener("load", () => URL.revokeObjectURL(url), { once: true });
    img.src = url;
    img.classList.add("loaded");
  } else {
    img.classList.add("missing");
    img.dispatchEvent(new Event("missing"));
  }
}

/** An <img> filled lazily, with credentials, when it scrolls into view. */
export function lazyImage(src: string, alt: string, cls = ""): HTMLImageElement {
  const img = h("img", { alt, class: cls, draggable: "false" });
  img.dataset.src = src;
  if (observer) observer.observe(img);
  else void loadInto(img);
  return img;
}

/** Run ``task`` once ``el`` scrolls into view (now, without IntersectionObserver). */
export function whenVisible(el: Element, task: () => void): void {
  if (!observer) return task();
  visibleTasks.set(el, task);
  observer.observe(el);
}

/** An <img> filled now, with credentials; resolves false (and leaves it empty) on 403/404. */
export async function fillImage(img: HTMLImageElement, src: string): Promise<boolean> {
  img.dataset.src = src;
  await loadInto(img);
  return img.classList.contains("loaded");
}

export function debounce<A extends unknown[]>(fn: (...a: A) => void, ms: number): (...a: A) => void {
  let t: number | undefined;
  return (...a: A) => {
    window.clearTimeout(t);
    t = window.setTimeout(() => fn(...a), ms);
  };
}

const TEXT_INPUTS = new Set(["text", "search", "number", "email", "password", "url", "tel", "date"]);

/** True when a key press goes to a text field, not to the page's shortcuts. */
export function isTyping(e: KeyboardEvent): boolean {
  const t = e.target as HTMLElement | null;
  if (!t) return false;
  if (t.tagName === "INPUT") return TEXT_INPUTS.has((t as HTMLInputElement).type);
  return t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable;
}

/** A person's name for display; DICOM's "FAMILY^GIVEN^MIDDLE" becomes "FAMILY, GIVEN MIDDLE". */
export function personName(name: string | null | undefined): string | null {
  if (!name) return null;
  if (!name.includes("^")) return name;
  const [family, given, middle, prefix, suffix] = name.split("^");
  const rest = [prefix, given, middle, suffix].filter(Boolean).join(" ");
  return rest ? `${family}, ${rest}` : family;
}

/** A date for display: ISO strings as they are, DICOM's "YYYYMMDD[HHMMSS]" made readable. */
export function formatDate(value: string | null | undefined): string | null {
  if (!value) return null;
  const m = /^(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})(\d{2})?)?/.exec(value);
  if (m && !value.includes("-")) return `${m[1]}-${m[2]}-${m[3]}` + (m[4] ? ` ${m[4]}:${m[5]}` : "");
  return value.replace("T", " ").replace(/(:\d{2})(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$/, "$1");
}
