import { defineConfig } from "vite";

// The app serves the build at /static/viewer/ and index.html for /, /view/{ids} and /case/{accession};
// api-docs.html (Swagger UI over /openapi.json) for /api/docs.
export default defineConfig({
  base: "/static/viewer/",
  build: {
    outDir: "../slideserver/static/viewer",
    emptyOutDir: true,
    sourcemap: true,
    chunkSizeWarningLimit: 2000,
    rollupOptions: {
      input: { viewer: "index.html", apidocs: "api-docs.html" },
    },
  },
  server: {
    // `npm run dev` proxies the API to a server started with `slideserver serve ... --port 8000`.
    proxy: {
      "/api": "http://127.0.0.1:8000",
      "/dz": "http://127.0.0.1:8000",
      "/iiif": "http://127.0.0.1:8000",
    },
  },
});
