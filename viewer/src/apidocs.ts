// The API reference page (/api/docs): Swagger UI over the server's own /openapi.json, bundled
// here so the page works offline (no CDN, no validator badge, no telemetry).
import SwaggerUI from "swagger-ui-dist/swagger-ui-es-bundle.js";
import "swagger-ui-dist/swagger-ui.css";

SwaggerUI({
  url: "/openapi.json",
  dom_id: "#api-docs",
  deepLinking: true,
  validatorUrl: null,
  tryItOutEnabled: false,
  showExtensions: true, // x-roles, x-phi, x-audit
  // Same-origin calls send the viewer's session cookie; writes also need this header (CSRF).
  requestInterceptor: (request: { headers: Record<string, string> }) => {
    request.headers["X-Requested-With"] = "XMLHttpRequest";
    return request;
  },
});
