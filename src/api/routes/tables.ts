/**
 * Lookup tables over HTTP:
 *   GET /v1/models/:model/tables                         list (versions, sizes, counts, checksums)
 *   GET /v1/models/:model/tables/latest                  the active version's newest table
 *   GET /v1/models/:model/tables/:generation             the file: strong ETag, 304, Range/206
 *   GET /v1/models/:model/tables/:generation/delta?from= what changed since another generation
 * Versioned URLs are immutable; `latest` names its versioned URL in Content-Location.
 */
import { Readable } from "node:stream";
import type { Context, Hono } from "hono";
import { PredcacheError } from "../../errors.ts";
import { processMetrics } from "../../observability/metrics.ts";
import { BuildGate } from "../../table/build-gate.ts";
import { DeltaCache } from "../../table/delta-cache.ts";
import type { DeltaOutcome } from "../../table/delta-outcome.ts";
import { DeltaThread } from "../../table/delta-thread.ts";
import { isGeneration, type TableInfo } from "../../table/store.ts";
import type { ApiDeps } from "../deps.ts";
import { routeToArm } from "../experiment-routing.ts";
import {
  type ArmLabel,
  cacheControl,
  notModified,
  revalidatedCacheControl,
  revalidatedJson,
} from "../reply.ts";

/** Deltas kept for the clients that will ask for the same one (./delta-cache.ts). */
const DELTA_CACHE_BYTES = 64 * 1024 * 1024;
const TABLE_TYPE = "application/vnd.predcache.table";

function tableUrl(info: TableInfo): string {
  return `/v1/models/${info.model}/tables/${info.generation}`;
}

/** Builds deltas off the event loop; one thread for every app of the process. */
const deltaThread = new DeltaThread();
/**
 * One delta built at a time (the thread builds one at a time anyway), and the tables of
 * at most DELTAS_WAITING more read: past that, the client is told to download the table.
 */
const DELTAS_WAITING = 4;
const deltaGate = new BuildGate(1, DELTAS_WAITING);

/** The delta from one table to another, or why none is served (../../table/delta-outcome.ts). */
async function buildDelta(
  deps: ApiDeps,
  model: string,
  from: TableInfo,
  to: TableInfo,
): Promise<DeltaOutcome> {
  // The tables are read when the build's turn comes, not while it waits.
  return deltaGate.run(
    async () => {
      const [a, b] = await Promise.all([
        deps.tables.read(model, from.generation),
        deps.tables.read(model, to.generation),
      ]);
      return deltaThread.build(a, b);
    },
    () =>
      new PredcacheError(
        "overloaded",
        "too many deltas are being built: download the full table, or retry shortly",
        { waiting: DELTAS_WAITING },
        1,
      ),
  );
}

function known(c: Context, deps: ApiDeps): string {
  const model = c.req.param("model") ?? "";
  if (deps.registry.versions(model).length === 0) {
    throw new PredcacheError("model_not_found", `no model named "${model.slice(0, 64)}"`, {
      models: deps.registry.names(),
    });
  }
  return model;
}

async function find(deps: ApiDeps, model: string, generation: string): Promise<TableInfo> {
  const info = isGeneration(generation) ? await deps.tables.get(model, generation) : undefined;
  if (!info)
    throw new PredcacheError("not_found", `model ${model} has no table ${generation.slice(0, 64)}`);
  return info;
}

/** A version's newest table among a listing (newest first), if it has one. */
function newestOf(tables: readonly TableInfo[], version: string | undefined) {
  return tables.find((t) => t.modelVersion === version);
}

/** The active version's newest table, if it has one. */
export async function latestTable(deps: ApiDeps, model: string): Promise<TableInfo | undefined> {
  const active = deps.active.get(model);
  return newestOf(await deps.tables.list(model), active);
}

/**
 * The version whose tables this client gets: the one its lookups are answered by. That
 * is the active version, or, while an experiment runs, its arm's (routeToArm: by client
 * id or API key, the reply then varying by the client id header), so the answers its
 * table gives are the server's. Read once per request.
 */
function servedVersion(
  c: Context,
  deps: ApiDeps,
  model: string,
): { version: string | undefined; experiment?: ArmLabel } {
  const active = deps.active.get(model);
  const resolved = active === undefined ? undefined : deps.registry.get(model, active);
  if (!resolved) return { version: active };
  const routed = routeToArm(c, deps, resolved);
  const label = routed.assignment?.label;
  return { version: routed.model.version, ...(label ? { experiment: label } : {}) };
}

/** Parses a single `bytes=a-b` range (RFC 9110 §14.1.2); undefined: serve the whole file. */
function parseRange(
  header: string | undefined,
  size: number,
): { start: number; end: number } | "unsatisfiable" | undefined {
  if (!header) return undefined;
  // The unit is case-insensitive (RFC 9110 §14.1).
  const match = /^bytes=(\d*)-(\d*)$/i.exec(header.trim());
  if (!match || (match[1] === "" && match[2] === "")) return undefined; // not one range we serve: ignore it, as the RFC allows
  let start: number;
  let end: number;
  if (match[1] === "") {
    const suffix = Number(match[2]);
    if (suffix === 0) return "unsatisfiable";
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(match[1]);
    if (match[2] !== "" && start > Number(match[2])) return undefined; // invalid: ignored (RFC 9110 §14.2)
    if (start >= size) return "unsatisfiable";
    end = match[2] === "" ? size - 1 : Math.min(Number(match[2]), size - 1);
  }
  return { start, end };
}

/** If-Match's list against a strong ETag: `*`, or a listed tag equal to it (never a weak one). */
function matchesStrongly(header: string, etag: string): boolean {
  if (header.trim() === "*") return true;
  return header.split(",").some((tag) => tag.trim() === etag);
}

function serveTable(c: Context, deps: ApiDeps, info: TableInfo, cacheControl: string): Response {
  const etag = `"${info.checksum}"`;
  c.header("ETag", etag);
  c.header("Cache-Control", cacheControl);
  c.header("Accept-Ranges", "bytes");
  c.header("Content-Location", tableUrl(info));
  c.header("X-Predcache-Generation", info.generation);
  c.header(
    "Content-Disposition",
    `attachment; filename="${info.model}-${info.generation}.pctable"`,
  );
  const downloads = processMetrics().tableDownloads;
  // If-Match first (RFC 9110 §13.2.2), compared strongly: a client resuming or checking
  // a download of one table must not be sent another.
  const ifMatch = c.req.header("if-match");
  if (ifMatch && !matchesStrongly(ifMatch, etag))
    throw new PredcacheError("precondition_failed", "the table is not the one If-Match names", {
      etag,
    });
  if (notModified(c, etag)) {
    downloads.inc({ model: info.model, kind: "not_modified" });
    return c.body(null, 304);
  }
  const ifRange = c.req.header("if-range");
  const range =
    ifRange && ifRange !== etag ? undefined : parseRange(c.req.header("range"), info.bytes);
  if (range === "unsatisfiable") {
    c.header("Content-Range", `bytes */${info.bytes}`);
    throw new PredcacheError("range_not_satisfiable", `the table has ${info.bytes} bytes`);
  }
  c.header("Content-Type", TABLE_TYPE);
  if (c.req.method === "HEAD") {
    // Hono answers HEAD with the GET route's headers and drops the body: open no file for it.
    if (range) c.header("Content-Range", `bytes ${range.start}-${range.end}/${info.bytes}`);
    c.header("Content-Length", String(range ? range.end - range.start + 1 : info.bytes));
    return c.body(null, range ? 206 : 200);
  }
  const body = Readable.toWeb(
    deps.tables.stream(info.model, info.generation, range),
  ) as ReadableStream;
  downloads.inc({ model: info.model, kind: range ? "range" : "full" });
  if (range) {
    c.header("Content-Range", `bytes ${range.start}-${range.end}/${info.bytes}`);
    c.header("Content-Length", String(range.end - range.start + 1));
    return c.body(body, 206);
  }
  c.header("Content-Length", String(info.bytes));
  return c.body(body, 200);
}

export function registerTables(app: Hono, deps: ApiDeps): void {
  app.get("/v1/models/:model/tables", async (c) => {
    const model = known(c, deps);
    // One reading of each version: a promote between two would pair one version with
    // another's table.
    const active = deps.active.get(model);
    const { version: served, experiment } = servedVersion(c, deps, model);
    const tables = await deps.tables.list(model);
    const latest = newestOf(tables, served);
    // Clients poll this to learn of new tables: a 304 costs them no body.
    return revalidatedJson(
      c,
      {
        model,
        activeVersion: active ?? null,
        servedVersion: served ?? null,
        // While an experiment runs: this client's arm, as its lookups' replies name it.
        ...(experiment ? { experiment } : {}),
        latest: latest ? { ...latest, url: tableUrl(latest) } : null,
        tables: tables.map((t) => ({ ...t, url: tableUrl(t) })),
      },
      deps.settings.cacheScope,
    );
  });

  app.get("/v1/models/:model/tables/:generation", async (c) => {
    const model = known(c, deps);
    const generation = c.req.param("generation");
    // "latest" is matched here rather than as its own route: a static segment beside a
    // parameter keeps Hono off its fastest router (RegExpRouter) for every request.
    if (generation !== "latest")
      return serveTable(
        c,
        deps,
        await find(deps, model, generation),
        cacheControl("immutable", deps.settings.cacheScope),
      );
    const served = servedVersion(c, deps, model).version;
    const latest = newestOf(await deps.tables.list(model), served);
    if (!latest)
      throw new PredcacheError(
        "not_found",
        `${model}'s version ${served ?? "(none active)"} has no table yet (run a precompute)`,
      );
    // The alias moves with every publish and promote: caches must revalidate it.
    return serveTable(c, deps, latest, revalidatedCacheControl(deps.settings.cacheScope));
  });

  const deltas = new DeltaCache(DELTA_CACHE_BYTES);
  app.get("/v1/models/:model/tables/:generation/delta", async (c) => {
    const model = known(c, deps);
    const to = await find(deps, model, c.req.param("generation"));
    if ((c.req.queries("from")?.length ?? 0) > 1)
      throw new PredcacheError("bad_request", "from may be given once", { repeated: ["from"] });
    const fromGeneration = c.req.query("from");
    if (!fromGeneration)
      throw new PredcacheError("bad_request", "name the generation you have: ?from=<generation>");
    const from = await find(deps, model, fromGeneration);
    if (from.encodingHash !== to.encodingHash) {
      throw new PredcacheError(
        "conflict",
        "the two tables use different encodings: download the full table",
        { from: from.encodingHash, to: to.encodingHash },
      );
    }
    const outcome = await deltas.get(from.checksum, to.checksum, () =>
      buildDelta(deps, model, from, to),
    );
    // Before any validator: a delta that cannot be built has no representation to match.
    if ("blocked" in outcome)
      throw new PredcacheError("conflict", `${outcome.blocked}: download the full table`);
    const etag = `"${from.checksum.slice(0, 32)}-${to.checksum.slice(0, 32)}"`;
    c.header("ETag", etag);
    c.header("Cache-Control", cacheControl("immutable", deps.settings.cacheScope));
    // As for a table: If-Match first, compared strongly (RFC 9110 §13.2.2).
    const ifMatch = c.req.header("if-match");
    if (ifMatch && !matchesStrongly(ifMatch, etag))
      throw new PredcacheError("precondition_failed", "the delta is not the one If-Match names", {
        etag,
      });
    if (notModified(c, etag)) return c.body(null, 304);
    const { delta } = outcome;
    processMetrics().tableDownloads.inc({ model, kind: "delta" });
    c.header("Content-Type", "application/vnd.predcache.table-delta");
    c.header("Content-Length", String(delta.length));
    return c.body(delta as Uint8Array<ArrayBuffer>, 200);
  });
}
