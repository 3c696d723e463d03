/** Liveness, readiness and the Prometheus scrape. */
import type { Hono } from "hono";
import { versionOf } from "../../experiment/experiment.ts";
import { processMetrics } from "../../observability/metrics.ts";
import { refuseScrape } from "../../observability/metrics-guard.ts";
import type { ApiDeps } from "../deps.ts";

/** What a paused queue holds up, by queue name. */
const PAUSED: Record<string, string> = {
  live: "misses wait out their wait, then 202",
  precompute: "precompute runs are not started",
  "precompute-chunks": "precompute runs make no progress",
};

/** What a paused queue means, as /readyz (and the start log) says it. */
export function pausedWarning(name: string): string {
  return `the ${name} queue is paused (kept in Redis across restarts; resume it, e.g. at /admin/queues): ${PAUSED[name] ?? "its jobs wait"}`;
}

/** Running experiments with an arm whose version this process has not loaded. */
function unservedArms(deps: ApiDeps): string[] {
  const warnings: string[] = [];
  for (const name of deps.registry.names()) {
    const running = deps.experiments?.running.get(name);
    if (!running) continue;
    for (const arm of ["control", "candidate"] as const) {
      const version = versionOf(running, arm);
      if (!deps.registry.get(name, version))
        warnings.push(
          `experiment ${running.id} of ${name}: its ${arm} version ${version} is not loaded here; control answers those clients, left out of the report (reload, or stop the experiment)`,
        );
    }
  }
  return warnings;
}

export function registerHealth(app: Hono, deps: ApiDeps): void {
  app.get("/healthz", (c) => {
    c.header("Cache-Control", "no-store");
    return c.json({ status: "ok" });
  });

  // Prometheus scrape: every series this process records (API, and workers run in it).
  app.get("/metrics", async (c) => {
    const refused = refuseScrape(deps.metricsTokens ?? [], c.req.header("authorization"));
    if (refused) {
      c.header("WWW-Authenticate", refused.challenge);
      throw refused.error;
    }
    const metrics = processMetrics();
    c.header("Content-Type", metrics.contentType);
    c.header("Cache-Control", "no-store");
    return c.body(await metrics.text());
  });

  // Ready: Redis answers, and every model's active version is one this process has (its
  // manifest, encoding and file). Not whether its session is loaded: an API process alone
  // infers nothing (live workers do), and would otherwise turn unready on every promote.
  app.get("/readyz", async (c) => {
    const started = performance.now();
    const [redis, liveWorkers, pausedQueues] = await Promise.all([
      deps.redis
        .ping()
        .then(() => true)
        .catch(() => false),
      // Workers taking live jobs (any process): with none, misses are never computed.
      deps.live.queue.getWorkersCount().catch(() => null),
      // A BullMQ pause (the queue dashboard has the button) is kept in Redis, across
      // restarts: workers are there, and take nothing.
      Promise.all(
        Object.entries(deps.queues).map(async ([name, queue]) =>
          (await queue.isPaused()) ? [name] : [],
        ),
      ).then(
        (paused) => paused.flat(),
        () => null,
      ),
    ]);
    const models = deps.registry.names().map((name) => {
      const version = deps.active.get(name);
      const model = version ? deps.registry.get(name, version) : undefined;
      return {
        name,
        activeVersion: version ?? null,
        known: Boolean(model),
        loaded: model ? deps.registry.isLoaded(model) : false,
      };
    });
    const ready = redis && models.every((m) => m.known);
    c.header("Cache-Control", "no-store");
    return c.json(
      {
        status: ready ? "ready" : "not_ready",
        redis: { reachable: redis, ms: Math.round((performance.now() - started) * 10) / 10 },
        models,
        // Said, not reasons to be unready: hits are still answered without them.
        liveWorkers,
        pausedQueues,
        warnings: [
          ...(liveWorkers === 0
            ? ["no live worker takes the live queue: misses wait out their wait, then 202"]
            : []),
          ...(pausedQueues ?? []).map(pausedWarning),
          ...unservedArms(deps),
        ],
      },
      ready ? 200 : 503,
    );
  });
}
