/**
 * The admin API under /admin/v1, every route behind a bearer token (src/admin/auth.ts);
 * every change and every refused attempt goes to the audit log.
 *   POST   /admin/v1/models/:model/precompute            start a run → 202 (409: identical run active)
 *   GET    /admin/v1/runs, /admin/v1/runs/:id             runs; one run's state, progress, rate, ETA
 *   DELETE /admin/v1/runs/:id                             cancel
 *   GET    /admin/v1/models/:model/versions               versions, entries, tables, active, rollback target
 *   POST   /admin/v1/models/:model/versions/:v/promote    make v active
 *   POST   /admin/v1/models/:model/rollback               back to the previous active version
 *   POST   /admin/v1/models/:model/reload                 load version folders dropped into the models dir
 *   POST   /admin/v1/models/:model/gc                     delete versions retention does not keep
 *   GET    /admin/v1/models/:model/experiments               experiments, running and past
 *   POST   /admin/v1/models/:model/experiments               start one → 201 (409: one runs)
 *   PATCH  /admin/v1/models/:model/experiments/:id           change its split or shadow rate
 *   POST   /admin/v1/models/:model/experiments/:id/stop      { outcome: promote | revert }
 *   GET    /admin/v1/models/:model/experiments/:id           its report
 *   GET    /admin/v1/stats, /admin/v1/audit
 */
import { realpath } from "node:fs/promises";
import { isAbsolute, relative, resolve } from "node:path";
import type { Context, Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { z } from "zod";
import { auditActions } from "../../admin/audit.ts";
import { type AdminEnv, requireAdmin } from "../../admin/auth.ts";
import type { AdminDeps } from "../../admin/deps.ts";
import {
  listExperiments,
  reportExperiment,
  startExperiment,
  stopExperiment,
  updateExperiment,
} from "../../admin/experiments.ts";
import { collectStats } from "../../admin/stats.ts";
import { collectGarbage, listVersions, promote, rollback } from "../../admin/versions.ts";
import { PredcacheError } from "../../errors.ts";
import type { ApiDeps } from "../deps.ts";
import { isJsonType } from "../headers.ts";

type Deps = ApiDeps & { admin: AdminDeps };

async function jsonBody(c: Context): Promise<Record<string, unknown>> {
  const text = await c.req.text();
  if (!text) return {};
  // As a batch lookup: a body sent as a form or text is refused, not guessed at (no
  // Content-Type at all is taken as JSON).
  const type = c.req.header("content-type");
  if (type && !isJsonType(type))
    throw new PredcacheError(
      "unsupported_media_type",
      "the body must be JSON in UTF-8 (Content-Type: application/json)",
      { contentType: type.slice(0, 100) },
    );
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new PredcacheError("bad_request", "the body must be a JSON object");
  }
  if (typeof body !== "object" || body === null || Array.isArray(body))
    throw new PredcacheError("bad_request", "the body must be a JSON object");
  return body as Record<string, unknown>;
}

/**
 * The body of an action that takes no fields, or only `fields`: none, `{}`, or a JSON object
 * of those. Anything else is refused (400) before the action runs: a field it does not
 * know (a rollback "to" a version, a mistyped option) would otherwise be ignored and the
 * action done as if it had not been sent.
 */
async function actionBody<T extends z.ZodRawShape>(
  c: Context,
  fields: T,
): Promise<z.infer<z.ZodObject<T>>> {
  const parsed = z.strictObject(fields).safeParse(await jsonBody(c));
  if (parsed.success) return parsed.data;
  const issues = parsed.error.issues.map((i) => ({ path: i.path.join("."), message: i.message }));
  const known = Object.keys(fields);
  throw new PredcacheError(
    "bad_request",
    `${issues.map((i) => `${i.path || "body"}: ${i.message}`).join("; ")} (this action takes ${known.length ? `only ${known.join(", ")}` : "no fields"})`,
    { issues },
  );
}

/** The route pattern a request matched (e.g. /runs/:id), for the audit log. */
function routeOf(c: Context): string {
  const route = c.req.matchedRoutes.filter((r) => r.method !== "ALL").at(-1)?.path ?? c.req.path;
  return route.replace(/^\/admin\/v1/, "");
}

/** Seed files the server may read: under one of the configured roots, nowhere else. */
async function checkSeedPath(source: unknown, roots: readonly string[]): Promise<void> {
  const file = (source as { kind?: unknown; file?: unknown })?.file;
  if ((source as { kind?: unknown })?.kind !== "seed" || typeof file !== "string") return;
  // Where the file really is: a symbolic link under a root may point anywhere.
  const real = (path: string) => realpath(path).catch(() => resolve(path));
  const path = await real(file);
  const inside = (await Promise.all(roots.map(real))).some((root) => {
    const rel = relative(root, path);
    return rel !== "" && !rel.startsWith("..") && !isAbsolute(rel);
  });
  if (!inside)
    throw new PredcacheError(
      "bad_request",
      "seed files must lie under the seeds, models or data folder; upload other inputs inline",
      { roots },
    );
}

/**
 * The query parameters each admin route reads; every other route reads none. Options go
 * in the JSON body: one put in the URL instead (`gc?dryRun=true`) is refused, not ignored,
 * so a dry run meant is never a real one done, nor a filter meant (`runs?state=`) a list
 * of everything.
 */
const QUERY_PARAMETERS: Record<string, readonly string[]> = {
  "GET /runs": ["limit"],
  "GET /audit": ["limit", "refused"],
};

function onlyKnownQuery(c: Context): void {
  const url = c.req.url;
  const at = url.indexOf("?");
  // No route here at all: the 404 says so first.
  if (at === -1 || !c.req.matchedRoutes.some((r) => r.method !== "ALL")) return;
  const route = `${c.req.method === "HEAD" ? "GET" : c.req.method} ${routeOf(c)}`;
  const known = QUERY_PARAMETERS[route] ?? [];
  const names = [...new URLSearchParams(url.slice(at + 1)).keys()];
  const unknown = [...new Set(names.filter((name) => !known.includes(name)))];
  if (unknown.length === 0) return;
  throw new PredcacheError(
    "bad_request",
    known.length > 0
      ? `unknown query parameter ${unknown[0]?.slice(0, 64)}: this route reads only ${known.join(", ")}`
      : `unknown query parameter ${unknown[0]?.slice(0, 64)}: this route reads none${c.req.method === "POST" ? " (options go in the JSON body)" : ""}`,
    { unknown: unknown.slice(0, 20).map((name) => name.slice(0, 64)), known },
  );
}

/** ?limit=: a whole number from 1 to `max` (larger is taken as `max`), else 400. */
function limitParameter(raw: string | undefined, fallback: number, max: number): number {
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw) || Number(raw) < 1)
    throw new PredcacheError(
      "bad_request",
      `limit must be a whole number from 1 (more than ${max} is taken as ${max})`,
      { limit: raw.slice(0, 32) },
    );
  return Math.min(Number(raw), max);
}

export function registerAdmin(app: Hono, deps: Deps, seedRoots: readonly string[]): void {
  const admin = app.basePath("/admin/v1") as unknown as Hono<AdminEnv>;
  const { audit } = deps.admin;
  // Outermost: record every change and every refused attempt, whatever the outcome.
  admin.use(
    "*",
    auditActions(audit, (c) => `${c.req.method} ${routeOf(c)}`),
  );
  admin.use("*", requireAdmin(deps.admin.tokens));
  admin.use("*", async (c, next) => {
    onlyKnownQuery(c);
    await next();
  });
  // Admin answers (runs, audit, versions) are for the token holder, and change: no cache
  // may keep them.
  admin.use("*", async (c, next) => {
    await next();
    if (!c.res.headers.has("Cache-Control")) c.res.headers.set("Cache-Control", "no-store");
  });
  admin.use(
    "*",
    bodyLimit({
      maxSize: deps.admin.bodyMaxBytes,
      onError: () => {
        throw new PredcacheError(
          "payload_too_large",
          `the body is larger than ${deps.admin.bodyMaxBytes} bytes`,
        );
      },
    }),
  );

  admin.post("/models/:model/precompute", async (c) => {
    const body = await jsonBody(c);
    await checkSeedPath(body.source, seedRoots);
    // A traffic run plans from the counts in Redis: this process's latest go there first.
    await deps.traffic.flush();
    const { runId, version } = await deps.admin.precompute.enqueue({
      ...(body as object),
      model: c.req.param("model"),
    } as Parameters<typeof deps.admin.precompute.enqueue>[0]);
    c.set(
      "auditDetail",
      `run ${runId} of version ${version}${(body as { promote?: unknown }).promote === true ? ", to promote when done" : ""}`,
    );
    c.header("Location", `/admin/v1/runs/${runId}`);
    return c.json(
      { runId, model: c.req.param("model"), version, url: `/admin/v1/runs/${runId}` },
      202,
    );
  });

  admin.get("/runs", async (c) => {
    const limit = limitParameter(c.req.query("limit"), 50, 1_000);
    return c.json({ runs: await deps.admin.precompute.runs.list(limit) });
  });

  admin.get("/runs/:id", async (c) => {
    const status = await deps.admin.precompute.status(c.req.param("id"));
    if (!status) throw new PredcacheError("not_found", `no run ${c.req.param("id").slice(0, 64)}`);
    return c.json(status);
  });

  admin.delete("/runs/:id", async (c) => {
    const id = c.req.param("id");
    const status = await deps.admin.precompute.status(id);
    if (!status) throw new PredcacheError("not_found", `no run ${id.slice(0, 64)}`);
    if (status.state === "completed" || status.state === "failed")
      throw new PredcacheError("conflict", `run ${id} already ${status.state}`, {
        state: status.state,
      });
    const cancelled = await deps.admin.precompute.cancel(id);
    c.set("auditDetail", `${id}: ${status.state} → ${cancelled.state}`);
    return c.json(cancelled);
  });

  admin.get("/models/:model/versions", async (c) => {
    const model = c.req.param("model");
    return c.json({ model, versions: await listVersions(deps, model) });
  });

  admin.post("/models/:model/versions/:version/promote", async (c) => {
    await actionBody(c, {});
    const switched = await promote(deps, c.req.param("model"), c.req.param("version"));
    c.set("auditDetail", `${switched.previous ?? "none"} → ${switched.active}`);
    return c.json(switched);
  });

  admin.post("/models/:model/rollback", async (c) => {
    await actionBody(c, {});
    const switched = await rollback(deps, c.req.param("model"));
    c.set("auditDetail", `${switched.previous ?? "none"} → ${switched.active}`);
    return c.json(switched);
  });

  admin.post("/models/:model/reload", async (c) => {
    await actionBody(c, {});
    const model = c.req.param("model");
    const { added, failed } = await deps.registry.reload();
    // A model seen for the first time gets its active version now, not at the next poll
    // (which does it anyway: a failure here does not undo the reload).
    await deps.active.refresh().catch((error: unknown) => {
      deps.log.warn({ err: error, model }, "active versions not refreshed after a reload");
    });
    await deps.admin.announceModels();
    if (deps.registry.versions(model).length === 0)
      throw new PredcacheError(
        "model_not_found",
        `no model named "${model.slice(0, 64)}" in the models folder`,
        {
          failed,
        },
      );
    const ours = added.filter((v) => v.name === model);
    c.set(
      "auditDetail",
      `added ${ours.map((v) => v.version).join(", ") || "none"}${failed.length > 0 ? `; ${failed.length} failed` : ""}`,
    );
    return c.json({
      model,
      added: ours.map((v) => ({ version: v.version, directory: v.directory })),
      failed,
      versions: deps.registry.versions(model).map((v) => v.version),
    });
  });

  admin.post("/models/:model/gc", async (c) => {
    const { dryRun } = await actionBody(c, { dryRun: z.boolean().optional() });
    const report = await collectGarbage(deps, c.req.param("model"), { dryRun: dryRun === true });
    const versions = report.collected.map((v) => v.version).join(", ") || "none";
    const keys = report.collected.reduce((sum, v) => sum + v.keysDeleted, 0);
    c.set(
      "auditDetail",
      `${report.dryRun ? "dry run: would collect" : "collected"} ${versions} (${keys} keys); ` +
        `${report.olderTablesDeleted} older tables of kept versions; ${report.bytesFreedOnDisk} bytes of tables in all`,
    );
    return c.json(report);
  });

  admin.get("/models/:model/experiments", async (c) => {
    const model = c.req.param("model");
    return c.json({ model, experiments: await listExperiments(deps, model) });
  });

  admin.post("/models/:model/experiments", async (c) => {
    const model = c.req.param("model");
    const experiment = await startExperiment(deps, model, await jsonBody(c));
    c.set(
      "auditDetail",
      `${experiment.id}: ${experiment.control} vs ${experiment.candidate}, fraction ${experiment.fraction}, shadow ${experiment.shadowRate}`,
    );
    const url = `/admin/v1/models/${model}/experiments/${experiment.id}`;
    c.header("Location", url);
    return c.json({ ...experiment, url }, 201);
  });

  admin.patch("/models/:model/experiments/:id", async (c) => {
    const changed = await updateExperiment(
      deps,
      c.req.param("model"),
      c.req.param("id"),
      await jsonBody(c),
    );
    c.set(
      "auditDetail",
      `${changed.id}: fraction ${changed.fraction}, shadow ${changed.shadowRate}`,
    );
    return c.json(changed);
  });

  admin.post("/models/:model/experiments/:id/stop", async (c) => {
    const stopped = await stopExperiment(
      deps,
      c.req.param("model"),
      c.req.param("id"),
      await jsonBody(c),
    );
    c.set("auditDetail", `${stopped.id}: ${stopped.state}, active ${stopped.active}`);
    return c.json(stopped);
  });

  admin.get("/models/:model/experiments/:id", async (c) =>
    c.json(await reportExperiment(deps, c.req.param("model"), c.req.param("id"))),
  );

  admin.get("/stats", async (c) => c.json(await collectStats(deps)));

  admin.get("/audit", async (c) => {
    const limit = limitParameter(c.req.query("limit"), 100, 10_000);
    const refused = c.req.query("refused") ?? "true";
    if (refused !== "true" && refused !== "false")
      throw new PredcacheError("bad_request", "refused must be true or false", {
        refused: refused.slice(0, 32),
      });
    return c.json({ entries: await audit.list(limit, refused === "true") });
  });
}
