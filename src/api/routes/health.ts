/** Liveness and readiness. */
import type { Hono } from "hono";
import type { ApiDeps } from "../deps.ts";

export function registerHealth(app: Hono, deps: ApiDeps): void {
  app.get("/healthz", (c) => c.json({ status: "ok" }));

  app.get("/readyz", async (c) => {
    const redis = await deps.redis
      .ping()
      .then(() => true)
      .catch(() => false);
    const models = deps.registry
      .names()
      .map((name) => ({ name, activeVersion: deps.active.get(name) ?? null }));
    const ready = redis && models.every((m) => m.activeVersion !== null);
    return c.json({ status: ready ? "ready" : "not_ready", redis, models }, ready ? 200 : 503);
  });
}
