/** Helpers for precompute tests: a worker in this process or as a child process, and keyspace snapshots. */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { mkdtemp, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { inject } from "vitest";
import type { Redis } from "../../src/redis/connection.ts";
import { scanKeys } from "../../src/redis/keyspace.ts";

/** Every entry of a model version's keyspace, as canonical key → hex of the stored value. */
export async function snapshotVersion(
  redis: Redis,
  prefix: string,
  model: string,
  version: string,
): Promise<Map<string, string>> {
  const entries = new Map<string, string>();
  for await (const buckets of scanKeys(redis, `${prefix}:e:${model}:${version}:*`)) {
    for (const bucket of buckets) {
      const fields = await redis.hgetallBuffer(bucket);
      for (const [key, value] of Object.entries(fields)) entries.set(key, value.toString("hex"));
    }
  }
  return entries;
}

/** Writes rows (objects) as a CSV seed file with a header, in the run's scratch folder; returns its path. */
export async function writeSeedCsv(
  rows: Record<string, string | number>[],
  name = "seed.csv",
): Promise<string> {
  const dir = await mkdtemp(join(inject("scratchDir"), "seed-"));
  const header = Object.keys(rows[0] ?? {});
  const lines = [header.join(","), ...rows.map((r) => header.map((h) => String(r[h])).join(","))];
  const path = join(dir, name);
  await writeFile(path, `${lines.join("\n")}\n`);
  return path;
}

/**
 * A precompute worker as a separate process (so a test can SIGKILL it), with its own data
 * folder unless `env` names one (not the checkout's .predcache, which npm start fills).
 */
export function spawnWorker(env: Record<string, string>): ChildProcess {
  return spawn(process.execPath, ["--import", "tsx", "src/main/work.ts"], {
    env: {
      ...process.env,
      LOG_LEVEL: "warn",
      PREDCACHE_WORKERS: "precompute",
      PREDCACHE_METRICS_PORT: "0",
      PREDCACHE_DATA_DIR: mkdtempSync(join(inject("scratchDir"), "data-")),
      ...env,
    },
    stdio: ["ignore", "inherit", "inherit"],
  });
}
