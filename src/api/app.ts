/** Composes the HTTP API: every route group registers itself on one Hono app. */
import { Hono } from "hono";
import { RegExpRouter } from "hono/router/reg-exp-router";
import { requireApiKey } from "./access.ts";
import { allowedMethods } from "./allowed-methods.ts";
import { COMPRESSED_PATHS, compression } from "./compression.ts";
import { type CorsOptions, cors } from "./cors.ts";
import type { ApiDeps } from "./deps.ts";
import { type EdgeHook, withEdge } from "./edge.ts";
import { errorBody, handleError } from "./errors.ts";
import { HotLookups } from "./hot-lookups.ts";
import { requestLog } from "./request-log.ts";
import { registerAdmin } from "./routes/admin.ts";
import { registerDocs } from "./routes/docs.ts";
import { registerHealth } from "./routes/health.ts";
import { registerJobs } from "./routes/jobs.ts";
import { registerModels } from "./routes/models.ts";
import { registerPredict } from "./routes/predict.ts";
import { registerQueueBoard } from "./routes/queue-board.ts";
import { registerTables } from "./routes/tables.ts";

/**
 * CORS of the read routes: models, lookups, tables and the jobs a 202 points at. Apps in
 * browsers download tables and ask for fallbacks from their own origin, with their API
 * key, client id (experiments) and request id; they need the validators and the
 * versioned URL, so those headers are exposed too; the RateLimit ones only where API keys
 * are on (nothing sends them otherwise, and every byte of this header is written and
 * checked by node on every answer, hits included).
 */
export function readRoutesCors(
  origins: string[],
  { clientIdHeader = "x-client-id", rateLimited = false } = {},
): CorsOptions {
  return {
    origins,
    paths: ["/v1/models", "/v1/jobs"],
    allowMethods: ["GET", "HEAD", "POST"],
    allowHeaders: [
      "Content-Type",
      "If-None-Match",
      "Range",
      "If-Range",
      "Authorization",
      "X-API-Key",
      "X-Request-Id",
      clientIdHeader,
    ],
    exposeHeaders: [
      "ETag",
      "Location",
      "Retry-After",
      "X-Request-Id",
      ...(rateLimited ? ["RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"] : []),
    ],
    alsoExposed: {
      segment: "/tables",
      headers: ["Content-Location", "Content-Range", "Accept-Ranges", "X-Predcache-Generation"],
    },
    maxAgeSeconds: 600,
  };
}

export function createApp(deps: ApiDeps): Hono {
  const app = new Hono({ router: new RegExpRouter() });
  const edge: EdgeHook[] = [requestLog(deps.log)];
  app.onError(handleError(deps.log));
  const allowed = allowedMethods(app);
  app.notFound((c) => {
    const served = allowed(c.req.path);
    c.header("Cache-Control", "no-store");
    if (served.length === 0)
      return c.json(errorBody("not_found", `no route ${c.req.path.slice(0, 200)}`), 404);
    // OPTIONS (a CORS preflight is answered at the edge) asks what the path serves.
    const methods = [...served, "OPTIONS"];
    c.header("Allow", methods.join(", "));
    if (c.req.method === "OPTIONS") return c.body(null, 204);
    return c.json(
      errorBody("method_not_allowed", `${c.req.method} is not allowed here`, { allow: methods }),
      405,
    );
  });
  const origins = deps.settings.corsOrigins;
  if (origins.length > 0) {
    edge.push(
      cors({
        ...readRoutesCors(origins, {
          clientIdHeader: deps.settings.clientIdHeader,
          rateLimited: deps.access !== undefined,
        }),
        methodsOf: allowed,
      }),
    );
  }
  if (deps.access) {
    // Job polls too: a job id names an input's answer, and ids follow from inputs.
    const guard = requireApiKey(deps.access.limiter, deps.access.options);
    app.use("/v1/models/*", guard);
    app.use("/v1/jobs/*", guard);
  }
  // Before the routes: Hono runs a path's handlers in the order they were added.
  const compressed = compression();
  for (const path of COMPRESSED_PATHS) app.use(path, compressed);
  registerHealth(app, deps);
  registerModels(app, deps);
  // The front answers repeated lookups before Hono (not with API keys: each is checked).
  // Middleware added to lookups must be mirrored there, or keep the front off for them.
  const hot = deps.access ? undefined : new HotLookups(deps);
  registerPredict(app, deps, hot, compressed);
  registerJobs(app, deps);
  registerTables(app, deps);
  registerDocs(app, deps);
  if (deps.admin) {
    registerAdmin(app, { ...deps, admin: deps.admin }, deps.seedRoots ?? []);
    registerQueueBoard(app, deps.admin, deps.log);
  }
  return withEdge(app, edge, hot?.front);
}
