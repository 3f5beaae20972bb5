// The annotation classes offered in the class picker, each with the colour it is drawn in (the
// server's defaults, QuPath's where it has one).
// A class the server sends that is not listed here is drawn in its feature's own colour, else grey.

export interface AnnotationClass {
  name: string;
  label: string;
  color: string;
}

export const CLASSES: AnnotationClass[] = [
  { name: "tumour", label: "Tumour", color: "#c83232" },
  { name: "stroma", label: "Stroma", color: "#96c896" },
  { name: "necrosis", label: "Necrosis", color: "#323232" },
  { name: "mitosis", label: "Mitosis", color: "#f0a000" },
  { name: "margin", label: "Margin", color: "#0064c8" },
];

const FALLBACK = "#7a7f8c";

export function classColor(name: string | undefined, own?: string | null): string {
  if (own && /^#[0-9a-f]{6}$/i.test(own)) return own;
  return CLASSES.find((c) => c.name === name)?.color ?? FALLBACK;
}
