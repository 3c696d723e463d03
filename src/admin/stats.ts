/**
 * /admin/v1/stats: how this API process has been answering (hit ratio by tier, misses and
 * the inputs missed most), what waits in the queues, and coverage —
 * the share of recent lookups the active version's newest table would have answered.
 */
import type { ApiDeps } from "../api/deps.ts";
import { latestTable } from "../api/routes/tables.ts";
import { LookupTable } from "../client/lookup-table.ts";
import type { AdminDeps } from "./deps.ts";

type Deps = ApiDeps & { admin: AdminDeps };

/** Tables larger than this are not opened just to estimate coverage. */
const COVERAGE_MAX_BYTES = 512 * 1024 * 1024;

async function coverage(deps: Deps, model: string, version: string | undefined) {
  const keys = version ? deps.stats.recentKeys(model, version) : [];
  const info = await latestTable(deps, model);
  if (!info || keys.length === 0)
    return { window: keys.length, covered: 0, ratio: null, table: info?.generation ?? null };
  const held = deps.admin.resident.table(model);
  const table =
    held && held.checksum === info.checksum
      ? held
      : info.bytes <= COVERAGE_MAX_BYTES
        ? await LookupTable.open(await deps.tables.read(model, info.generation))
        : undefined;
  if (!table) return { window: keys.length, covered: 0, ratio: null, table: info.generation };
  const covered = keys.filter((k) => table.getByKey(k) !== undefined).length;
  return { window: keys.length, covered, ratio: covered / keys.length, table: info.generation };
}

export async function collectStats(deps: Deps) {
  const models: Record<string, unknown> = {};
  for (const name of deps.registry.names()) {
    const version = deps.active.get(name);
    const counts = deps.stats.countsOf(name);
    const s = counts?.bySource;
    const lookups = counts?.lookups ?? 0;
    const ratio = (n: number) => (lookups ? n / lookups : null);
    models[name] = {
      activeVersion: version ?? null,
      lookups,
      bySource: s ?? null,
      byVersion: counts?.byVersion ?? {},
      hitRatio: s
        ? {
            memory: ratio(s.memory),
            table: ratio(s.table),
            redis: ratio(s.redis),
            overall: ratio(s.memory + s.table + s.redis),
          }
        : null,
      misses: s ? s.live + s.pending : 0,
      failed: s?.failed ?? 0,
      coverage: await coverage(deps, name, version),
      topMissed: deps.stats.topMissed(name),
    };
  }
  const queues: Record<string, unknown> = {};
  for (const [name, queue] of Object.entries(deps.admin.queues)) {
    queues[name] = await queue.getJobCounts(
      "waiting",
      "active",
      "delayed",
      "prioritized",
      "waiting-children",
      "completed",
      "failed",
    );
  }
  return {
    scope:
      "lookups, hit ratios, misses and coverage: this API process since it started; queues: all processes",
    since: deps.stats.since.toISOString(),
    models,
    queues,
  };
}
