/**
 * API documentation:
 *   GET /openapi.json           the OpenAPI 3.1 document (built per request: models and
 *                               versions may change at any time)
 *   GET /docs                   Swagger UI, pointed at /openapi.json
 *   GET /docs/assets/:file      Swagger UI's own files, from node_modules/swagger-ui-dist
 * The document covers every route; the queue dashboard's (bull-board's own pages and API)
 * are read off the app's route table, the rest are described in src/api/openapi.ts.
 * The page loads nothing from any other origin (its Content-Security-Policy says so).
 */
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { join } from "node:path";
import type { Hono } from "hono";
import { PredcacheError } from "../../errors.ts";
import type { ApiDeps } from "../deps.ts";
import { buildOpenApi } from "../openapi.ts";
import { notModified, revalidatedJson } from "../reply.ts";
import { QUEUE_BOARD_PATH, queueBoardRoutes } from "./queue-board.ts";

const require = createRequire(import.meta.url);
// The package's own locator (its index would also load the 1.7 MB bundle into Node).
const getAbsoluteFSPath = require("swagger-ui-dist/absolute-path.js") as () => string;
const SWAGGER_UI_VERSION: string = require("swagger-ui-dist/package.json").version;

/** The only files served from swagger-ui-dist, with their content types. */
const ASSETS: Readonly<Record<string, string>> = {
  "swagger-ui.css": "text/css; charset=utf-8",
  "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
  "favicon-32x32.png": "image/png",
  "favicon-16x16.png": "image/png",
};

const SCRIPT = `window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  validatorUrl: null,
  defaultModelsExpandDepth: 0,
});`;

const CSP = [
  "default-src 'none'",
  `script-src 'self' 'sha256-${createHash("sha256").update(SCRIPT).digest("base64")}'`,
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "font-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>predcache API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" sizes="32x32" href="/docs/assets/favicon-32x32.png">
<link rel="icon" type="image/png" sizes="16x16" href="/docs/assets/favicon-16x16.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>${SCRIPT}</script>
</body>
</html>
`;

const files = new Map<string, Promise<Uint8Array>>();

/** An allow-listed asset's bytes (read once); undefined for any other name. */
function asset(name: string): Promise<Uint8Array> | undefined {
  if (!Object.hasOwn(ASSETS, name)) return undefined;
  let file = files.get(name);
  if (!file) {
    file = readFile(join(getAbsoluteFSPath(), name)).then((b) => new Uint8Array(b));
    file.catch(() => files.delete(name));
    files.set(name, file);
  }
  return file;
}

export function registerDocs(app: Hono, deps: ApiDeps): void {
  const assets = Object.keys(ASSETS);

  app.get("/openapi.json", (c) => {
    // Read per request: the dashboard registers after this route, on an app of its own.
    const dashboard = { base: QUEUE_BOARD_PATH, routes: deps.admin ? queueBoardRoutes(app) : [] };
    const description = buildOpenApi(deps, { assets, dashboard });
    return revalidatedJson(c, description, "public", "application/json; charset=utf-8");
  });

  app.get("/docs", (c) => {
    c.header("Content-Security-Policy", CSP);
    c.header("Cache-Control", "no-cache");
    return c.html(PAGE);
  });

  app.get("/docs/assets/:file", async (c) => {
    const name = c.req.param("file");
    const bytes = asset(name);
    if (!bytes) throw new PredcacheError("not_found", `no documentation file ${name.slice(0, 64)}`);
    const etag = `"swagger-ui-${SWAGGER_UI_VERSION}-${name}"`;
    c.header("ETag", etag);
    c.header("Cache-Control", "public, max-age=86400");
    if (notModified(c, etag)) return c.body(null, 304);
    c.header("Content-Type", ASSETS[name] as string);
    return c.body((await bytes) as Uint8Array<ArrayBuffer>, 200);
  });
}
