/**
 * Model versions as operators manage them: what each holds (entries, tables), which is
 * active and which a rollback would return to; promote, roll back, and collect the
 * versions retention no longer keeps (keys in bounded batches, tables), never the active
 * version or the rollback target.
 */
import type { ApiDeps } from "../api/deps.ts";
import { PredcacheError } from "../errors.ts";
import { markCollecting, rollbackActiveVersion, rollbackTarget } from "../model/active.ts";
import { folderGone } from "../model/folder-gone.ts";
import type { ModelVersion } from "../model/registry.ts";
import { scanKeys, unlinkKeys } from "../redis/keyspace.ts";
import type { AdminDeps } from "./deps.ts";

export interface VersionInfo {
  version: string;
  label: string | null;
  loaded: boolean;
  loadedAt: string | null;
  active: boolean;
  rollbackTarget: boolean;
  entries: number;
  lastRun: string | null;
  tables: { generation: string; entryCount: number; bytes: number; created: string; url: string }[];
}

type Deps = ApiDeps & { admin: AdminDeps };

export function knownModel(deps: ApiDeps, model: string): void {
  if (deps.registry.versions(model).length === 0)
    throw new PredcacheError("model_not_found", `no model named "${model.slice(0, 64)}"`, {
      models: deps.registry.names(),
    });
}

/** Version ids with data in Redis (their meta hash), loaded or not. */
async function storedVersions(deps: Deps, model: string): Promise<string[]> {
  const found = new Set<string>();
  const pattern = deps.admin.keys.versionMeta(model, "*");
  for await (const keys of scanKeys(deps.redis, pattern)) {
    for (const key of keys) found.add(key.slice(key.lastIndexOf(":") + 1));
  }
  return [...found];
}

export async function listVersions(deps: Deps, model: string): Promise<VersionInfo[]> {
  knownModel(deps, model);
  const active = deps.active.get(model);
  const back = await rollbackTarget(deps.redis, deps.admin.keys, model);
  const loaded = deps.registry.versions(model);
  const ids = [
    ...new Set([...loaded.map((v) => v.version), ...(await storedVersions(deps, model))]),
  ];
  const tables = await deps.tables.list(model);
  const infos = await Promise.all(
    ids.map(async (id): Promise<VersionInfo> => {
      const v = loaded.find((m) => m.version === id);
      const meta = await deps.redis.hgetall(deps.admin.keys.versionMeta(model, id));
      return {
        version: id,
        label: v?.manifest.label ?? null,
        loaded: Boolean(v),
        loadedAt: v ? v.installedAt.toISOString() : null,
        active: id === active,
        rollbackTarget: id === back,
        entries: Number(meta.entries ?? 0),
        lastRun: meta.lastRun ?? null,
        tables: tables
          .filter((t) => t.modelVersion === id)
          .map((t) => ({
            generation: t.generation,
            entryCount: t.entryCount,
            bytes: t.bytes,
            created: t.created,
            url: `/v1/models/${model}/tables/${t.generation}`,
          })),
      };
    }),
  );
  // Newest first, as the registry orders them (unloaded ones last): retention keeps this order.
  const rank = (id: string) => loaded.findIndex((m) => m.version === id);
  return infos.sort((a, b) => rank(b.version) - rank(a.version));
}

export async function loadedVersion(
  deps: Deps,
  model: string,
  version: string,
): Promise<ModelVersion> {
  knownModel(deps, model);
  const found = await deps.registry.resolve(model, version);
  if (!found)
    throw new PredcacheError(
      "version_not_found",
      `model ${model} has no loaded version ${version.slice(0, 64)}`,
      {
        versions: deps.registry.versions(model).map((v) => v.version),
      },
    );
  // Loaded, but its folder since removed: served until the next restart, which would not
  // load it (every lookup of the model then unanswerable). Not made active or an arm.
  if (await folderGone(found))
    throw new PredcacheError(
      "conflict",
      `version ${version.slice(0, 64)} of ${model} is loaded, but its folder no longer holds it (${found.directory}): a restart would not load it`,
      { version, directory: found.directory },
    );
  return found;
}

export async function promote(
  deps: Deps,
  model: string,
  version: string,
): Promise<{ model: string; active: string; previous: string | null; warnings: string[] }> {
  await loadedVersion(deps, model, version);
  const previous = await deps.active.set(model, version);
  return {
    model,
    active: version,
    previous: previous ?? null,
    // The switch is made: a failure to say more must not turn it into an error.
    warnings: [
      ...(previous === version
        ? [`${version} was the active version already: nothing changed`]
        : []),
      ...(await coldWarnings(deps, model, version).catch(() => [])),
      ...(await underExperiment(deps, model).catch(() => [])),
    ],
  };
}

/** A running experiment keeps serving its arms: a promote changes what it ends on, not that. */
async function underExperiment(deps: Deps, model: string): Promise<string[]> {
  const running = await deps.experiments?.store.running(model);
  if (!running) return [];
  return [
    `experiment ${running.id} is running on ${model}: its clients are still served ${running.control} (control) or ${running.candidate} (candidate) until it stops`,
  ];
}

/**
 * What a promote should warn of: a version with nothing precomputed sends every lookup to
 * the live model (a miss storm) until a run fills it. Said, not refused: an operator may
 * mean it (and a run with --promote or --warm is the way to avoid it).
 */
export async function coldWarnings(deps: Deps, model: string, version: string): Promise<string[]> {
  const entries = Number(
    (await deps.redis.hget(deps.admin.keys.versionMeta(model, version), "entries")) ?? 0,
  );
  if (entries > 0) return [];
  const tables = (await deps.tables.list(model)).filter((t) => t.modelVersion === version);
  if (tables.length > 0) return [];
  return [
    `version ${version} has nothing precomputed: every lookup goes to the live model until a run fills it (precompute --promote, or --warm K, avoids this)`,
  ];
}

export async function rollback(
  deps: Deps,
  model: string,
): Promise<{ model: string; active: string; previous: string | null; warnings: string[] }> {
  knownModel(deps, model);
  const target = await rollbackTarget(deps.redis, deps.admin.keys, model);
  if (!target)
    throw new PredcacheError(
      "conflict",
      `model ${model} has no earlier active version to roll back to`,
    );
  await loadedVersion(deps, model, target);
  const switched = await rollbackActiveVersion(deps.redis, deps.admin.keys, model, target);
  if (!switched)
    throw new PredcacheError("conflict", "the version history changed meanwhile: retry");
  await deps.active.refresh();
  return {
    model,
    active: target,
    previous: switched.previous ?? null,
    // As a promote's: made either way, a failure to say more is not an error. The target
    // may be one gc emptied (gc keeps only the first rollback target): said, as cold.
    warnings: [
      ...(await coldWarnings(deps, model, target).catch(() => [])),
      ...(await underExperiment(deps, model).catch(() => [])),
    ],
  };
}

export interface GcReport {
  model: string;
  /** Nothing was deleted: the report says what a gc would delete now. */
  dryRun: boolean;
  kept: string[];
  collected: { version: string; keysDeleted: number; tablesDeleted: number; tableBytes: number }[];
  /** Older tables of kept versions (the two newest of each stay, for deltas). */
  olderTablesDeleted: number;
  bytesFreedOnDisk: number;
  /** Lists of chunk keys left by ended runs among the newest RUNS_LOOKED_AT, of any model. */
  runKeyListsDeleted: number;
}

/** The newest runs gc looks at for ones still in progress (older ones have long ended). */
const RUNS_LOOKED_AT = 500;
const ENDED_RUN = new Set(["completed", "failed", "cancelled"]);

export interface GcOptions {
  /** Only report what would be deleted (keys counted, nothing deleted or marked). */
  dryRun?: boolean;
  /** Keys per command. */
  batch?: number;
}

/** A gc's dry run: the version's keys a gc would delete now, counted by the same scan. */
async function countVersion(
  deps: Deps,
  model: string,
  version: string,
  batch: number,
): Promise<{ keysDeleted: number }> {
  let keysDeleted = 0;
  const pattern = deps.admin.keys.bucketPattern(model, version);
  for await (const keys of scanKeys(deps.redis, pattern, batch)) keysDeleted += keys.length;
  return { keysDeleted };
}

/**
 * Deletes a version's keys, record and tables under a gc mark; undefined when it could not
 * be marked (made active, or the rollback target, since gc chose it).
 */
async function deleteVersion(
  deps: Deps,
  model: string,
  { version, tables }: VersionInfo,
  batch: number,
): Promise<{ keysDeleted: number } | undefined> {
  const k = deps.admin.keys;
  const mark = await markCollecting(deps.redis, k, model, version);
  if (!mark) return undefined;
  let keysDeleted = 0;
  try {
    // A run asked for since gc looked: kept. From the mark on, a new run of this version
    // is refused (PrecomputeJobs.enqueue checks it after recording its run): one of the
    // two sees the other.
    const runs = await deps.admin.precompute.runs.list(RUNS_LOOKED_AT);
    if (runs.some((r) => r.model === model && r.version === version && !ENDED_RUN.has(r.state)))
      return undefined;
    for await (const keys of scanKeys(deps.redis, k.bucketPattern(model, version), batch)) {
      // The claim lapsed (Redis lost it): the version could be promoted meanwhile.
      if (!mark.held())
        throw new PredcacheError(
          "conflict",
          `gc lost its claim on ${version} while deleting it: run gc again`,
        );
      keysDeleted += await unlinkKeys(deps.redis, keys);
    }
    await deps.redis.unlink(k.versionMeta(model, version));
    for (const t of tables) await deps.tables.remove(model, t.generation);
  } finally {
    await mark.release();
  }
  return { keysDeleted };
}

/** Deletes the versions retention does not keep, in batches of `batch` keys per command. */
export async function collectGarbage(
  deps: Deps,
  model: string,
  { dryRun = false, batch = 500 }: GcOptions = {},
): Promise<GcReport> {
  const versions = await listVersions(deps, model);
  const keep = new Set<string>();
  for (const v of versions) if (v.active || v.rollbackTarget) keep.add(v.version);
  // A running experiment serves both of its versions.
  const running = await deps.experiments?.store.running(model);
  if (running) for (const id of [running.control, running.candidate]) keep.add(id);
  for (const v of versions.filter((x) => x.loaded).slice(0, deps.admin.keepVersions))
    keep.add(v.version);
  // A run still filling a version would fail on its missing keys, having written
  // orphans behind the collection.
  const runs = deps.admin.precompute.runs;
  const recent = await runs.list(RUNS_LOOKED_AT);
  for (const run of recent)
    if (run.model === model && !ENDED_RUN.has(run.state)) keep.add(run.version);
  // Lists of chunk keys ended runs left (a run deletes its own as it ends; one marked so
  // costs a field read), at once: auto-pipelined.
  const dropped = dryRun
    ? []
    : await Promise.all(
        recent.filter((run) => ENDED_RUN.has(run.state)).map((run) => runs.dropChunkKeys(run.id)),
      );
  const runKeyListsDeleted = dropped.reduce((sum, n) => sum + n, 0);
  const report: GcReport = {
    model,
    dryRun,
    kept: [...keep],
    collected: [],
    olderTablesDeleted: 0,
    bytesFreedOnDisk: 0,
    runKeyListsDeleted,
  };
  for (const v of versions) {
    if (keep.has(v.version)) {
      for (const old of v.tables.slice(2)) {
        if (!dryRun) await deps.tables.remove(model, old.generation);
        report.olderTablesDeleted++;
        report.bytesFreedOnDisk += old.bytes;
      }
      continue;
    }
    const gone = dryRun
      ? await countVersion(deps, model, v.version, batch)
      : await deleteVersion(deps, model, v, batch);
    // Promoted (or rolled back to) since gc chose it: kept after all.
    if (!gone) {
      report.kept.push(v.version);
      continue;
    }
    const tableBytes = v.tables.reduce((sum, t) => sum + t.bytes, 0);
    report.collected.push({
      version: v.version,
      keysDeleted: gone.keysDeleted,
      tablesDeleted: v.tables.length,
      tableBytes,
    });
    report.bytesFreedOnDisk += tableBytes;
  }
  return report;
}
