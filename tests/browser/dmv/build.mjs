// Build the test page into dist/: our entry bundled by esbuild, plus the library's data-loader
// worker and its WebAssembly codecs, which it loads at run time from window.PUBLIC_LIB_URL.
import { build } from "esbuild"
import { cpSync, mkdirSync } from "node:fs"

const LIB = "node_modules/dicom-microscopy-viewer/dist/dynamic-import"

mkdirSync("dist", { recursive: true })
await build({
  entryPoints: ["src/main.js"],
  bundle: true,
  format: "esm",
  outfile: "dist/main.js",
  logLevel: "warning",
})
cpSync("src/index.html", "dist/index.html")
for (const name of [
  "dataLoader.worker.min.js",
  "charlswasm_decode.wasm",
  "dicomiccwasm.wasm",
  "libjpegturbowasm_decode.wasm",
  "openjpegwasm_decode.wasm",
]) {
  cpSync(`${LIB}/${name}`, `dist/${name}`)
}
