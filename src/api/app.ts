/** Composes the HTTP API: every route group registers itself on one Hono app. */
import { Hono } from "hono";
import type { ApiDeps } from "./deps.ts";
import { errorBody, handleError } from "./errors.ts";
import { registerHealth } from "./routes/health.ts";
import { registerJobs } from "./routes/jobs.ts";
import { registerModels } from "./routes/models.ts";
import { registerPredict } from "./routes/predict.ts";
import { registerTables } from "./routes/tables.ts";

export function createApp(deps: ApiDeps): Hono {
  const app = new Hono();
  app.onError(handleError(deps.log));
  app.notFound((c) =>
    c.json(errorBody("not_found", `no route ${c.req.method} ${c.req.path.slice(0, 200)}`), 404),
  );
  registerHealth(app, deps);
  registerModels(app, deps);
  registerPredict(app, deps);
  registerJobs(app, deps);
  registerTables(app, deps);
  return app;
}
