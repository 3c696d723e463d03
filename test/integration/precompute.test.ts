import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { gridInputs } from "../../precompute/inputs/grid.ts";
import { Precompute } from "../../precompute/job.ts";
import { CHUNK_QUEUE, type ChunkJob, type SourceSpec } from "../../precompute/spec.ts";
import { runFailure } from "../../precompute/worker.ts";
import { AuditLog } from "../../src/admin/audit.ts";
import { Keys } from "../../src/cache/keys.ts";
import { PredictionStore } from "../../src/cache/store.ts";
import { topObserved } from "../../src/cache/traffic.ts";
import { LookupTable } from "../../src/client/lookup-table.ts";
import { loadConfig } from "../../src/config.ts";
import { PredcacheError } from "../../src/errors.ts";
import { queuePrefix } from "../../src/live/jobs.ts";
import { createLogger } from "../../src/log.ts";
import { rollbackActiveVersion, switchActiveVersion } from "../../src/model/active.ts";
import type { Manifest } from "../../src/model/manifest.ts";
import type { ModelRegistry, ModelVersion } from "../../src/model/registry.ts";
import { processMetrics } from "../../src/observability/metrics.ts";
import { createRedis, isCluster, type Redis, whenReady } from "../../src/redis/connection.ts";
import { producerQueue } from "../../src/redis/queue.ts";
import {
  createPrecomputeWorker,
  loadRegistry,
  type PrecomputeWorkerProcess,
} from "../../src/service.ts";
import { DirectoryTableStore } from "../../src/table/store.ts";
import { snapshotVersion, spawnWorker, writeSeedCsv } from "../helpers/precompute.ts";
import {
  capturedLog,
  eventually,
  getJson,
  modelsDirWithVersions,
  startTestService,
  tempDataDir,
  uniquePrefix,
} from "../helpers/service.ts";

const redisUrl = inject("redisUrl");
let registry: ModelRegistry;
let model: ModelVersion;
let redis: Redis;

/** A precompute setup (control + in-process worker) on its own key prefix. */
async function setup(
  label: string,
  env: Record<string, string> = {},
  log = createLogger("silent"),
) {
  const prefix = env.PREDCACHE_PREFIX ?? uniquePrefix(label);
  const config = loadConfig({
    PREDCACHE_PREFIX: prefix,
    PREDCACHE_DATA_DIR: await tempDataDir(),
    LOG_LEVEL: "silent",
    PREDCACHE_LOCK_MS: "2000",
    PREDCACHE_STALLED_INTERVAL_MS: "1000",
    ...env,
  });
  const keys = new Keys(prefix);
  const precompute = new Precompute(redis, keys, registry, { queuePrefix: queuePrefix(prefix) });
  const worker: PrecomputeWorkerProcess = await createPrecomputeWorker(
    config,
    redisUrl,
    log,
    registry,
  );
  return {
    prefix,
    keys,
    config,
    precompute,
    worker,
    store: new PredictionStore(redis, keys, { bucketBits: config.bucketBits }),
    async close() {
      await worker.close();
      await precompute.close();
    },
  };
}

/**
 * A precompute setup whose models folder holds the demo model and one more version of it
 * (its manifest changed by `edit`, if given).
 */
async function twoVersions(label: string, edit?: (manifest: Manifest) => void) {
  const modelsDir = await modelsDirWithVersions([label]);
  if (edit) {
    const path = `${modelsDir}/flight-delay-${label}/manifest.json`;
    const manifest = JSON.parse(await readFile(path, "utf8"));
    edit(manifest);
    await writeFile(path, JSON.stringify(manifest));
  }
  const two = await loadRegistry(loadConfig({ PREDCACHE_MODELS_DIR: modelsDir }));
  const prefix = uniquePrefix(label);
  const keys = new Keys(prefix);
  const config = loadConfig({
    PREDCACHE_PREFIX: prefix,
    PREDCACHE_MODELS_DIR: modelsDir,
    PREDCACHE_DATA_DIR: await tempDataDir(),
    LOG_LEVEL: "silent",
  });
  const worker = await createPrecomputeWorker(config, redisUrl, createLogger("silent"), two);
  const precompute = new Precompute(redis, keys, two, { queuePrefix: queuePrefix(prefix) });
  return { two, prefix, keys, worker, precompute };
}

async function seedRows(n: number): Promise<Record<string, string>[]> {
  const text = await readFile("seeds/inputs/flight-delay-common.csv", "utf8");
  const [header, ...lines] = text.trim().split("\n");
  const names = (header as string).split(",");
  return lines
    .slice(0, n)
    .map((line) => Object.fromEntries(line.split(",").map((v, i) => [names[i] as string, v])));
}

beforeAll(async () => {
  registry = await loadRegistry(loadConfig({}));
  model = registry.defaultVersion("flight-delay") as ModelVersion;
  redis = createRedis(redisUrl);
  await whenReady(redis);
});
afterAll(async () => {
  await redis.quit();
  await registry.close();
});

describe("precompute run", () => {
  it("fills exactly the seed's keys with the model's own predictions, and a re-run writes nothing", async () => {
    const p = await setup("seedrun");
    try {
      const rows = await seedRows(600);
      const file = await writeSeedCsv(rows);
      const { runId } = await p.precompute.enqueue({
        model: "flight-delay",
        source: { kind: "seed", file },
        chunkSize: 200,
      });
      const done = await p.precompute.waitUntilDone(runId, 60_000);
      expect(done).toMatchObject({
        state: "completed",
        rows: 600,
        written: 600,
        skipped: 0,
        chunks: { total: 3, done: 3 },
      });
      // Its lists of chunk keys (a copy of every key, for the table build) went with it.
      const lists = [0, 1, 2].map((i) => new Keys(p.prefix).runChunkKeys(runId, i));
      expect(await redis.exists(...lists)).toBe(0);
      // A build still running for it would find a list gone: an error, not a table short
      // of that chunk's keys.
      await expect(p.precompute.runs.chunkKeys(runId, 0)).rejects.toThrow(/keys are gone/);

      const snapshot = await snapshotVersion(redis, p.prefix, "flight-delay", model.version);
      const encoded = rows.map(({ frequency: _, ...input }) => {
        const e = model.encoder.encode(input);
        if (!e.ok) throw new Error("seed row invalid");
        return e.value;
      });
      expect([...snapshot.keys()].sort()).toEqual(encoded.map((e) => e.key).sort());
      const direct = await (await registry.runtime(model)).run(encoded.map((e) => e.row));
      expect(
        await p.store.getMany(
          model,
          encoded.map((e) => e.key),
        ),
      ).toEqual(direct);

      const again = await p.precompute.enqueue({
        model: "flight-delay",
        source: { kind: "seed", file },
        chunkSize: 200,
      });
      const second = await p.precompute.waitUntilDone(again.runId, 60_000);
      expect(second).toMatchObject({ state: "completed", rows: 600, written: 0, skipped: 600 });
      expect((await snapshotVersion(redis, p.prefix, "flight-delay", model.version)).size).toBe(
        600,
      );
    } finally {
      await p.close();
    }
  });

  it("skips the keys the version already has, leaving them as they are, and writes the rest", async () => {
    const p = await setup("partial");
    try {
      const rows = await seedRows(700);
      const encoded = rows.map(({ frequency: _, ...input }) => {
        const e = model.encoder.encode(input);
        if (!e.ok) throw new Error("seed row invalid");
        return e.value;
      });
      // Every third key is already there, with a value the model would never give.
      const present = encoded.filter((_, i) => i % 3 === 0).map((e) => e.key);
      const marker = { delayProbability: -1, expectedDelayMinutes: -1 };
      await p.store.put(
        model,
        present.map((key) => ({ key, prediction: marker })),
      );
      const { runId } = await p.precompute.enqueue({
        model: "flight-delay",
        source: { kind: "seed", file: await writeSeedCsv(rows) },
        chunkSize: 300,
      });
      expect(await p.precompute.waitUntilDone(runId, 60_000)).toMatchObject({
        state: "completed",
        rows: 700,
        written: 700 - present.length,
        skipped: present.length,
      });
      const stored = await p.store.getMany(
        model,
        encoded.map((e) => e.key),
      );
      const direct = await (await registry.runtime(model)).run(encoded.map((e) => e.row));
      expect(stored).toEqual(direct.map((prediction, i) => (i % 3 === 0 ? marker : prediction)));
    } finally {
      await p.close();
    }
  });

  it("finishes the run when its inference thread dies mid-run: the chunk is retried on a new thread", async () => {
    const p = await setup("thread");
    try {
      const source: Extract<SourceSpec, { kind: "grid" }> = {
        kind: "grid",
        axes: {
          origin: ["ATL"],
          destination: "all",
          hour: { min: 6, max: 17, step: 1 },
          dayOfWeek: "all",
        },
        maxSize: 1_000_000,
      };
      const { runId } = await p.precompute.enqueue({
        model: "flight-delay",
        source,
        chunkSize: 500,
      });
      await eventually(
        async () =>
          ((await p.precompute.status(runId))?.chunks.done ?? 0) >= 2 ? true : undefined,
        60_000,
        5,
      );
      // White box: the worker's inference threads, one per model version.
      const lanes = (
        p.worker.worker as unknown as { lanes: Map<string, Promise<{ close(): Promise<void> }>> }
      ).lanes;
      const id = `flight-delay@${model.version}`;
      const killed = await lanes.get(id);
      await killed?.close();
      const done = await p.precompute.waitUntilDone(runId, 120_000);
      expect(done).toMatchObject({ state: "completed", rows: 12_012, chunks: { done: 25 } });
      expect(done.written + done.skipped).toBe(12_012);
      expect(killed).toBeDefined();
      expect(await lanes.get(id)).not.toBe(killed);
      const encoded = [...gridInputs(model.manifest.encoding.features, source)].map((input) => {
        const e = model.encoder.encode(input);
        if (!e.ok) throw new Error("grid input invalid");
        return e.value;
      });
      const stored = await p.store.getMany(
        model,
        encoded.map((e) => e.key),
      );
      expect(stored.filter((prediction) => prediction === undefined)).toEqual([]);
      const sample = encoded.filter((_, i) => i % 97 === 0);
      expect(
        await p.store.getMany(
          model,
          sample.map((e) => e.key),
        ),
      ).toEqual(await (await registry.runtime(model)).run(sample.map((e) => e.row)));
    } finally {
      await p.close();
    }
  });

  it("reports progress with chunk counts, rate and ETA through the run job", async () => {
    const p = await setup("progress");
    try {
      const file = await writeSeedCsv(await seedRows(400));
      const { runId } = await p.precompute.enqueue({
        model: "flight-delay",
        source: { kind: "seed", file },
        chunkSize: 100,
      });
      const seen: number[] = [];
      const done = await p.precompute.waitUntilDone(runId, 60_000, (s) => seen.push(s.chunks.done));
      expect(done.state).toBe("completed");
      expect(done.rate).toBeGreaterThan(0);
      const job = await p.precompute.runQueue.getJob(runId);
      expect(job?.progress).toMatchObject({ chunks: { total: 4, done: 4 }, rows: 400 });
      expect(seen.at(-1)).toBe(4);
    } finally {
      await p.close();
    }
  });

  it("refuses an absurd grid before queuing anything, with a message naming the sizes", async () => {
    const p = await setup("grid");
    try {
      await expect(
        p.precompute.enqueue({
          model: "flight-delay",
          source: {
            kind: "grid",
            axes: { origin: "all", destination: "all", hour: "all", dayOfWeek: "all" },
            maxSize: 100_000,
          },
        }),
      ).rejects.toThrow(
        /grid has [\d,]+ inputs \(origin: 143 × destination: 143 × hour: 24 × dayOfWeek: 7\)/,
      );
      expect(await p.precompute.runs.list()).toEqual([]);
    } finally {
      await p.close();
    }
  });

  it("precomputes an enumerated grid", async () => {
    const p = await setup("gridrun");
    try {
      const { runId } = await p.precompute.enqueue({
        model: "flight-delay",
        source: {
          kind: "grid",
          axes: {
            origin: ["SFO", "LAX"],
            destination: ["SEA"],
            hour: { min: 6, max: 9 },
            dayOfWeek: "all",
          },
        },
        chunkSize: 20,
      });
      const done = await p.precompute.waitUntilDone(runId, 60_000);
      expect(done).toMatchObject({ state: "completed", rows: 2 * 1 * 4 * 7, written: 56 });
    } finally {
      await p.close();
    }
  });

  it("counts every write of a chunk whose batches are in flight together", async () => {
    // 600 rows in one chunk, 16 rows per inference batch: up to 3 batches in flight at once.
    const p = await setup("inflight", { PREDCACHE_PRECOMPUTE_BATCH: "16" });
    try {
      const file = await writeSeedCsv(await seedRows(600));
      const { runId } = await p.precompute.enqueue({
        model: "flight-delay",
        source: { kind: "seed", file },
        chunkSize: 600,
      });
      const done = await p.precompute.waitUntilDone(runId, 60_000);
      expect(done).toMatchObject({ state: "completed", rows: 600, written: 600, skipped: 0 });
    } finally {
      await p.close();
    }
  });

  it("counts an input repeated across chunks once: written and the version's entries match Redis", async () => {
    const p = await setup("dupes", { PREDCACHE_PRECOMPUTE_CONCURRENCY: "4" });
    try {
      const one = { origin: "SFO", destination: "LAX", hour: 9, dayOfWeek: 3 };
      const variants = [one, { ...one, origin: " sfo " }, { ...one, hour: "9" }];
      const other = { origin: "BOS", destination: "SEA", hour: 9, dayOfWeek: 3 };
      const inputs = Array.from({ length: 40 }, (_, i) => (i % 5 === 4 ? other : variants[i % 3]));
      const { runId } = await p.precompute.enqueue({
        model: "flight-delay",
        source: { kind: "inline", inputs: inputs as Record<string, unknown>[] },
        chunkSize: 1,
      });
      const done = await p.precompute.waitUntilDone(runId, 60_000);
      expect(done).toMatchObject({ state: "completed", written: 2, skipped: 38 });
      const snapshot = await snapshotVersion(redis, p.prefix, "flight-delay", model.version);
      expect(snapshot.size).toBe(2);
      const entries = await redis.hget(
        p.keys.versionMeta("flight-delay", model.version),
        "entries",
      );
      expect(Number(entries)).toBe(2);
    } finally {
      await p.close();
    }
  });

  it("stops a cancelled run: no chunk starts after the cancel, none is left queued", async () => {
    const { log, lines } = capturedLog();
    const p = await setup("cancel", {}, log);
    try {
      const { runId } = await p.precompute.enqueue({
        model: "flight-delay",
        source: {
          kind: "grid",
          axes: {
            origin: "all",
            destination: ["ATL", "ORD", "DFW"],
            hour: "all",
            dayOfWeek: "all",
          },
        },
        chunkSize: 500,
      });
      await eventually(
        async () =>
          ((await p.precompute.status(runId))?.chunks.done ?? 0) >= 1 ? true : undefined,
        30_000,
        5,
      );
      const cancelledRuns = async () =>
        (await processMetrics().runsEnded.get()).values.find(
          (v) => v.labels.outcome === "cancelled",
        )?.value ?? 0;
      const counted = await cancelledRuns();
      // Chunks stopped by the cancel are no failed jobs (alerts watch those).
      const jobs = async (outcome: string) =>
        (await processMetrics().jobOutcomes.get()).values
          .filter((v) => v.labels.outcome === outcome)
          .reduce((sum, v) => sum + v.value, 0);
      const failedBefore = await jobs("failed");
      expect((await p.precompute.cancel(runId)).state).toBe("cancelled");
      expect(await cancelledRuns()).toBe(counted + 1);
      await new Promise((r) => setTimeout(r, 1_500));
      const settled = await p.precompute.status(runId);
      await new Promise((r) => setTimeout(r, 1_000));
      const later = await p.precompute.status(runId);
      expect(later?.state).toBe("cancelled");
      expect(later?.etaSeconds).toBeNull();
      expect(later?.chunks.done).toBe(settled?.chunks.done);
      expect(later?.chunks.done).toBeLessThan(145);
      expect(await jobs("failed")).toBe(failedBefore);
      const queued = await p.precompute.chunkQueue.getJobCounts(
        "waiting",
        "active",
        "delayed",
        "prioritized",
      );
      expect(Object.values(queued).reduce((a, b) => a + b, 0)).toBe(0);
      // No list of chunk keys is left, not even one a chunk saved after the cancel.
      const lists = Array.from({ length: 145 }, (_, i) =>
        new Keys(p.prefix).runChunkKeys(runId, i),
      );
      expect(await redis.exists(...lists)).toBe(0);
      // A cancel is no failure: nothing logged as one (alerts watch error lines).
      expect(lines.filter((l) => Number(l.level) >= 50)).toEqual([]);
      console.log(`cancel: stopped after ${later?.chunks.done} of 145 chunks`);
    } finally {
      await p.close();
    }
  });

  it("refuses to cancel a run that is publishing its table (409), which then publishes", async () => {
    // No worker: the run waits in the queue while the test moves it to finishing, as the
    // worker does once every chunk is in; a cancel racing that move cannot also win.
    const prefix = uniquePrefix("finishing");
    const keys = new Keys(prefix);
    const precompute = new Precompute(redis, keys, registry, { queuePrefix: queuePrefix(prefix) });
    try {
      const { runId } = await precompute.enqueue({
        model: "flight-delay",
        source: {
          kind: "grid",
          axes: { origin: ["SFO"], destination: ["LAX"], hour: [7], dayOfWeek: [1] },
        },
      });
      await redis.hset(keys.runMeta(runId), "state", "finishing");
      const refused = await precompute.cancel(runId).catch((error: unknown) => error);
      expect(refused).toBeInstanceOf(PredcacheError);
      expect((refused as PredcacheError).status).toBe(409);
      expect((await precompute.status(runId))?.state).toBe("finishing");
    } finally {
      await precompute.close();
    }
  });

  it("fails the run on a bad input, says which, logs it, and leaves the active version untouched", async () => {
    const lines: { level: number; msg: string; run?: string }[] = [];
    const sink = new Writable({
      write(chunk, _encoding, done) {
        lines.push(JSON.parse(String(chunk)));
        done();
      },
    });
    const p = await setup("badrow", {}, createLogger("info", "test", sink));
    try {
      const rows = await seedRows(1_200);
      // Near the top: refused with the request, nothing started.
      const top = [...rows];
      top[7] = { ...rows[7], destination: "" } as Record<string, string>;
      await expect(
        p.precompute.enqueue({
          model: "flight-delay",
          source: { kind: "seed", file: await writeSeedCsv(top) },
        }),
      ).rejects.toThrow("1 of 1000 inputs are invalid: row 8: destination must not be empty");
      // Past the rows checked then: the run reads them all before any chunk.
      rows[1100] = { ...rows[1100], hour: "99" } as Record<string, string>;
      rows[1007] = { ...rows[1007], destination: "" } as Record<string, string>;
      const file = await writeSeedCsv(rows);
      const before = await redis.get(p.keys.active("flight-delay"));
      const { runId } = await p.precompute.enqueue({
        model: "flight-delay",
        source: { kind: "seed", file },
        chunkSize: 100,
        promote: true,
      });
      const done = await p.precompute.waitUntilDone(runId, 60_000);
      // Refused whole before any chunk: every bad row counted, each named by its row.
      expect(done.state).toBe("failed");
      expect(done.error).toBe(
        "2 of 1200 inputs are invalid: row 1008: destination must not be empty; row 1101: hour must be between 0 and 23",
      );
      expect(done.written).toBe(0);
      expect(done.chunks.total ?? 0).toBe(0);
      expect(await redis.get(p.keys.active("flight-delay"))).toBe(before);
      // One error line for the run, for an operator alerting on errors.
      await eventually(async () =>
        lines.some((l) => l.msg === "precompute run failed") ? true : undefined,
      );
      const failed = lines.filter((l) => l.msg === "precompute run failed");
      expect(failed).toHaveLength(1);
      expect(failed[0]).toMatchObject({ level: 50, run: runId });
    } finally {
      await p.close();
    }
  });

  it("says why a run failed when its model fails on a chunk: the chunk and the model's error", async () => {
    // A version whose manifest admits days the model has no row for: its Gather fails.
    const { two, prefix, worker, precompute } = await twoVersions("misfit", (manifest) => {
      const day = manifest.encoding.features.find((f) => f.name === "dayOfWeek");
      if (day?.type === "integer") day.max = 9;
    });
    const misfit = two.versions("flight-delay").find((v) => v.manifest.label === "misfit");
    try {
      const inputs = [8, 9, 8, 9].map((dayOfWeek) => ({
        origin: "SFO",
        destination: "LAX",
        hour: 7,
        dayOfWeek,
      }));
      const { runId } = await precompute.enqueue({
        model: "flight-delay",
        version: misfit?.version,
        source: { kind: "inline", inputs },
        chunkSize: 2,
      });
      const done = await precompute.waitUntilDone(runId, 60_000);
      expect(done.state).toBe("failed");
      expect(done.error).toMatch(/^chunk [01] failed: /);
      expect(done.error).toMatch(/Gather|indices|out of bounds/i);
      // Whichever handler records it first (the chunk's, or its run's, which BullMQ fails
      // as "child <key> failed"), the reason is the chunk's own.
      const chunks = producerQueue<ChunkJob>(CHUNK_QUEUE, redis, queuePrefix(prefix));
      try {
        const failedChunk = (done.error as string).startsWith("chunk 0") ? 0 : 1;
        const reason = await runFailure(
          chunks,
          new Error(`child ${chunks.qualifiedName}:${runId}.c${failedChunk} failed`),
        );
        expect(reason).toBe(done.error);
        expect(await runFailure(chunks, new Error("something else"))).toBe("something else");
      } finally {
        await chunks.close();
      }
    } finally {
      await worker.close();
      await precompute.close();
      await two.close();
    }
  });

  it("completes after its worker is SIGKILLed mid-run, with contents identical to an uninterrupted run", async () => {
    const rows = await seedRows(3_000);
    const file = await writeSeedCsv(rows);
    const request = {
      model: "flight-delay",
      source: { kind: "seed" as const, file },
      chunkSize: 150,
    };

    const reference = await setup("uninterrupted");
    let expected: Map<string, string>;
    try {
      const { runId } = await reference.precompute.enqueue(request);
      expect((await reference.precompute.waitUntilDone(runId, 120_000)).state).toBe("completed");
      expected = await snapshotVersion(redis, reference.prefix, "flight-delay", model.version);
    } finally {
      await reference.close();
    }

    const prefix = uniquePrefix("killed");
    const keys = new Keys(prefix);
    const precompute = new Precompute(redis, keys, registry, { queuePrefix: queuePrefix(prefix) });
    const env = {
      REDIS_URL: redisUrl,
      PREDCACHE_PREFIX: prefix,
      PREDCACHE_LOCK_MS: "1000",
      PREDCACHE_STALLED_INTERVAL_MS: "500",
      PREDCACHE_PRECOMPUTE_BATCH: "32",
      PREDCACHE_DATA_DIR: await tempDataDir(),
    };
    try {
      const first = spawnWorker(env);
      const { runId } = await precompute.enqueue(request);
      await eventually(
        async () => (((await precompute.status(runId))?.chunks.done ?? 0) >= 3 ? true : undefined),
        60_000,
        5,
      );
      first.kill("SIGKILL");
      await new Promise((r) => first.once("exit", r));
      const atKill = await precompute.status(runId);
      expect(atKill?.state).not.toBe("completed");

      const second = spawnWorker(env);
      try {
        const done = await precompute.waitUntilDone(runId, 120_000);
        expect(done).toMatchObject({ state: "completed", rows: 3_000 });
        // A fresh keyspace: every key is this run's write, counted once, also those a
        // killed chunk wrote before it died (its retry finds them present). Exactly so on
        // one Redis, where the counts are kept in the writes' script; on a cluster they
        // follow the writes, and a kill in between leaves a few counted as skipped.
        expect(done.written + done.skipped).toBe(3_000);
        if (!isCluster(redis)) expect(done).toMatchObject({ written: 3_000, skipped: 0 });
        console.log(
          `SIGKILL: worker killed after ${atKill?.chunks.done} of 20 chunks; a new worker completed the run`,
        );
      } finally {
        second.kill("SIGTERM");
        await new Promise((r) => second.once("exit", r));
      }
      const actual = await snapshotVersion(redis, prefix, "flight-delay", model.version);
      expect(actual.size).toBe(expected.size);
      expect(actual).toEqual(expected);
    } finally {
      await precompute.close();
    }
  });

  it("promotes its target version only once every chunk has succeeded", async () => {
    const { two, prefix, keys, worker, precompute } = await twoVersions("promote");
    try {
      const [v1, v2] = two.versions("flight-delay").map((v) => v.version) as [string, string];
      await redis.set(keys.active("flight-delay"), v1);
      const file = await writeSeedCsv(await seedRows(400));
      const { runId } = await precompute.enqueue({
        model: "flight-delay",
        version: v2,
        source: { kind: "seed", file },
        chunkSize: 100,
        promote: true,
      });
      // Read the active version, then the run: whenever v2 is already active, every chunk
      // must have succeeded by then (the run may still be finishing its bookkeeping).
      const seen = new Set<string | null>();
      let doneWhenSwitched: { done: number; total: number | null } | undefined;
      for (const deadline = Date.now() + 60_000; Date.now() < deadline; ) {
        const active = await redis.get(keys.active("flight-delay"));
        const status = await precompute.status(runId);
        seen.add(active);
        if (active === v2 && !doneWhenSwitched && status) doneWhenSwitched = status.chunks;
        // Completed after v2 was read as still inactive: one more look sees it switched.
        if ((status?.state === "completed" && active === v2) || status?.state === "failed") break;
        await new Promise((r) => setTimeout(r, 5));
      }
      const done = await precompute.waitUntilDone(runId, 1_000);
      expect(done.state).toBe("completed");
      expect(seen.has(v1)).toBe(true);
      expect(doneWhenSwitched?.done).toBe(4);
      expect(doneWhenSwitched?.total).toBe(4);
      expect(await redis.get(keys.active("flight-delay"))).toBe(v2);
      expect(await redis.lrange(keys.history("flight-delay"), 0, 0)).toEqual([v1]);
      expect(done.promotedFrom).toBe(v1);
      // Audited like an operator's promote, under the run that made it.
      const audit = await new AuditLog(redis, keys, createLogger("silent")).list(10);
      expect(audit).toContainEqual(
        expect.objectContaining({
          actor: `run:${runId}`,
          target: `/admin/v1/models/flight-delay/versions/${v2}/promote`,
          detail: expect.stringContaining(`${v1} → ${v2}`),
        }),
      );
      const v2Entries = await snapshotVersion(redis, prefix, "flight-delay", v2);
      expect(v2Entries.size).toBe(400);
    } finally {
      await worker.close();
      await precompute.close();
      await two.close();
    }
  });

  it("precomputes the inputs users missed through the API (observed traffic)", async () => {
    const prefix = uniquePrefix("traffic");
    const api = await startTestService({ env: { PREDCACHE_PREFIX: prefix }, liveWorker: false });
    const p = await setup("traffic", { PREDCACHE_PREFIX: prefix });
    try {
      const asked = ["BOS", "SEA", "DEN"].map(
        (d, i) => `origin=ATL&destination=${d}&hour=${10 + i}&dayOfWeek=3`,
      );
      for (const q of [...asked, asked[0], asked[0], asked[1]]) {
        expect(
          (await getJson(`${api.url}/v1/models/flight-delay/predict?${q}&wait=0`)).status,
        ).toBe(202);
      }
      const top = await eventually(async () => {
        const observed = await topObserved(redis, p.keys, "flight-delay", model.encoder.hash, 10);
        // Counts reach Redis in batches (every 100 ms): wait for all six misses.
        return observed.reduce((sum, o) => sum + o.count, 0) === 6 ? observed : undefined;
      });
      expect(top.map((o) => o.count)).toEqual([3, 2, 1]);

      const { runId } = await p.precompute.enqueue({
        model: "flight-delay",
        source: { kind: "traffic", top: 10 },
      });
      expect(await p.precompute.waitUntilDone(runId, 60_000)).toMatchObject({
        state: "completed",
        rows: 3,
      });
      for (const q of asked) {
        const r = await getJson(`${api.url}/v1/models/flight-delay/predict?${q}`);
        expect(r.status).toBe(200);
        expect(r.body.source).toBe("redis");
      }
    } finally {
      await p.close();
      await api.close();
    }
  });

  it("passes over observed inputs the version already holds: traffic:K brings K new ones", async () => {
    const p = await setup("trafficnew");
    try {
      const hot = [
        { origin: "LAX", destination: "SFO", hour: 17, dayOfWeek: 5 },
        { origin: "ORD", destination: "LGA", hour: 8, dayOfWeek: 1 },
      ];
      const missed = [
        { origin: "ATL", destination: "BOS", hour: 10, dayOfWeek: 3 },
        { origin: "ATL", destination: "SEA", hour: 11, dayOfWeek: 3 },
      ];
      const keyOf = (input: Record<string, unknown>) => {
        const e = model.encoder.encode(input);
        if (!e.ok) throw new Error("invalid");
        return e.value.key;
      };
      const first = await p.precompute.enqueue({
        model: "flight-delay",
        source: { kind: "inline", inputs: hot },
      });
      expect(await p.precompute.waitUntilDone(first.runId, 60_000)).toMatchObject({
        state: "completed",
        written: 2,
      });
      // Hits are sampled at a weight: the stored inputs outrank the misses.
      const set = p.keys.traffic("flight-delay", model.encoder.hash);
      for (const input of hot) await redis.zincrby(set, 100, keyOf(input));
      for (const [i, input] of missed.entries()) await redis.zincrby(set, 2 - i, keyOf(input));

      const { runId } = await p.precompute.enqueue({
        model: "flight-delay",
        source: { kind: "traffic", top: 2 },
      });
      expect(await p.precompute.waitUntilDone(runId, 60_000)).toMatchObject({
        state: "completed",
        written: 2,
        skipped: 0,
      });
      const stored = await snapshotVersion(redis, p.prefix, "flight-delay", model.version);
      for (const input of [...hot, ...missed]) expect(stored.has(keyOf(input))).toBe(true);
    } finally {
      await p.close();
    }
  });

  it("brings the most missed inputs into the table, though the live model stored them in Redis", async () => {
    const p = await setup("trafficlive");
    try {
      const answered = [
        { origin: "TUS", destination: "OAK", hour: 4, dayOfWeek: 5 },
        { origin: "ABQ", destination: "ORD", hour: 3, dayOfWeek: 2 },
      ];
      const keys = answered.map((input) => {
        const e = model.encoder.encode(input);
        if (!e.ok) throw new Error("invalid");
        return e.value.key;
      });
      // As the live worker leaves them: stored (no table has them), and asked for.
      const prediction = { delayProbability: 0.5, expectedDelayMinutes: 9 };
      await p.store.put(
        model,
        keys.map((key) => ({ key, prediction })),
      );
      const set = p.keys.traffic("flight-delay", model.encoder.hash);
      for (const key of keys) await redis.zincrby(set, 5, key);

      const { runId } = await p.precompute.enqueue({
        model: "flight-delay",
        source: { kind: "traffic", top: 2 },
      });
      const done = await p.precompute.waitUntilDone(runId, 60_000);
      // Not inferred again (stored), but in the table the run publishes.
      expect(done).toMatchObject({ state: "completed", rows: 2, written: 0, skipped: 2 });
      const tables = new DirectoryTableStore(p.config.tablesDir);
      const generation = done?.table as string;
      const table = await LookupTable.open(await tables.read("flight-delay", generation));
      for (const [i, key] of keys.entries()) {
        expect(table.getByKey(key), JSON.stringify(answered[i])).toEqual(prediction);
      }
      // Once in the table, they are precomputed: the next traffic run passes them over.
      const again = await p.precompute.enqueue({
        model: "flight-delay",
        source: { kind: "traffic", top: 2 },
      });
      const nothing = await p.precompute.waitUntilDone(again.runId, 60_000);
      expect(nothing).toMatchObject({ state: "completed", rows: 0 });
      // Nothing added, nothing published: the table stays the one above.
      expect(nothing?.table ?? null).toBeNull();
      expect((await tables.list("flight-delay")).map((t) => t.generation)).toEqual([generation]);
    } finally {
      await p.close();
    }
  });

  it("does not undo a switch made while a promote run went: it completes unpromoted and says why", async () => {
    const { two, keys, worker, precompute } = await twoVersions("nopromote");
    try {
      const [v1, v2] = two.versions("flight-delay").map((v) => v.version) as [string, string];
      await switchActiveVersion(redis, keys, "flight-delay", v1);
      await precompute.runQueue.pause();
      let runId: string;
      try {
        ({ runId } = await precompute.enqueue({
          model: "flight-delay",
          version: v2,
          source: {
            kind: "inline",
            inputs: [{ origin: "SFO", destination: "LAX", hour: 7, dayOfWeek: 1 }],
          },
          promote: true,
        }));
        // Meanwhile an operator promotes v2 and rolls back, away from it: v1 is active
        // again, as when the run was asked for, but the rollback must stand.
        await switchActiveVersion(redis, keys, "flight-delay", v2);
        expect(await rollbackActiveVersion(redis, keys, "flight-delay", v1)).toBeDefined();
      } finally {
        await precompute.runQueue.resume();
      }
      expect(await precompute.waitUntilDone(runId, 60_000)).toMatchObject({
        state: "completed",
        written: 1,
        promotedFrom: null,
        promoteSkipped: expect.stringMatching(/switched while the run went \(now [0-9a-f]+\)/),
      });
      expect(await redis.get(keys.active("flight-delay"))).toBe(v1);
    } finally {
      await worker.close();
      await precompute.close();
      await two.close();
    }
  });

  it("warms a new version with the old version's most asked inputs before promoting it, leaving out those it refuses", async () => {
    const { two, prefix, keys, worker, precompute } = await twoVersions("warm");
    try {
      const [v1, v2] = two
        .versions("flight-delay")
        .map((v) => two.get("flight-delay", v.version) as ModelVersion) as [
        ModelVersion,
        ModelVersion,
      ];
      await redis.set(keys.active("flight-delay"), v1.version);
      const popular = [
        { origin: "LAX", destination: "SFO", hour: 17, dayOfWeek: 5 },
        { origin: "ORD", destination: "LGA", hour: 8, dayOfWeek: 1 },
      ];
      for (const input of popular) {
        const e = v1.encoder.encode(input);
        if (!e.ok) throw new Error("invalid");
        await redis.zincrby(keys.traffic("flight-delay", v1.encoder.hash), 100, e.value.key);
      }
      // Asked often of a version that took hours past 23 (flagged); v2 refuses it: left out.
      await redis.zincrby(
        keys.traffic("flight-delay", v1.encoder.hash),
        500,
        JSON.stringify(["LAX", "SFO", 30, 5]),
      );
      const file = await writeSeedCsv(await seedRows(50));
      const { runId } = await precompute.enqueue({
        model: "flight-delay",
        version: v2.version,
        source: { kind: "seed", file },
        promote: true,
        warmFromTraffic: 10,
      });
      expect(await precompute.waitUntilDone(runId, 60_000)).toMatchObject({
        state: "completed",
        observedRefused: 1,
      });
      const v2Entries = await snapshotVersion(redis, prefix, "flight-delay", v2.version);
      for (const input of popular) {
        const e = v2.encoder.encode(input);
        expect(e.ok && v2Entries.has(e.value.key)).toBe(true);
      }
      expect(v2Entries.size).toBe(52);
      expect(await redis.get(keys.active("flight-delay"))).toBe(v2.version);
    } finally {
      await worker.close();
      await precompute.close();
      await two.close();
    }
  });

  it("runs from the shell: npm run precompute follows the run to the end, exit codes say how it went", async () => {
    const p = await setup("script");
    try {
      const file = await writeSeedCsv(await seedRows(120));
      const env = {
        ...process.env,
        REDIS_URL: redisUrl,
        PREDCACHE_PREFIX: p.prefix,
        PREDCACHE_DATA_DIR: await tempDataDir(),
        LOG_LEVEL: "silent",
      };
      const run = (args: string[]) =>
        new Promise<{ code: number | null; out: string }>((done) => {
          execFile(
            process.execPath,
            ["--import", "tsx", "precompute/run.ts", ...args],
            { env },
            (error, stdout, stderr) =>
              done({
                code: error ? ((error as { code?: number }).code ?? 1) : 0,
                out: stdout + stderr,
              }),
          );
        });
      const ok = await run([
        "--model",
        "flight-delay",
        "--source",
        `seed:${file}`,
        "--chunk-size",
        "50",
      ]);
      expect(ok.code).toBe(0);
      expect(ok.out).toMatch(/completed chunks 3\/3 rows 120 written 120/);
      expect((await run(["--model", "flight-delay"])).code).toBe(2);
      const unknown = await run(["--model", "nope", "--source", `seed:${file}`]);
      expect(unknown.code).toBe(2);
      expect(unknown.out).toMatch(/no model named "nope"/);
      const bad = await run(["--model", "flight-delay", "--source", "seed:/no/such/file.csv"]);
      expect(bad.code).toBe(2);
      expect(bad.out).toMatch(/seed file not found/);
      const asJson = file.replace(/\.csv$/, ".json");
      await writeFile(asJson, JSON.stringify([{ origin: "SFO" }]));
      const json = await run(["--model", "flight-delay", "--source", `seed:${asJson}`]);
      expect(json.code).toBe(2);
      expect(json.out).toMatch(/JSON lines named \.jsonl or \.ndjson, not \.json/);
      // Malformed numbers are usage errors, not dropped (--limit abc ran the whole file).
      for (const [flag, value] of [
        ["--limit", "abc"],
        ["--limit", "0"],
        ["--chunk-size", "0"],
        ["--warm", "x"],
      ] as const) {
        const wrong = await run([
          "--model",
          "flight-delay",
          "--source",
          `seed:${file}`,
          flag,
          value,
        ]);
        expect(wrong.code).toBe(2);
        expect(wrong.out).toContain(`${flag} must be a whole number`);
      }
      const limitOnGrid = await run([
        "--model",
        "flight-delay",
        "--source",
        'grid:{"hour":[1]}',
        "--limit",
        "5",
      ]);
      expect(limitOnGrid.code).toBe(2);
      expect(limitOnGrid.out).toMatch(/--limit applies to seed sources only/);
      // What is wrong with a request is said, not only "invalid precompute request".
      const shortVersion = await run([
        "--model",
        "flight-delay",
        "--source",
        `seed:${file}`,
        "--version",
        "7f28",
      ]);
      expect(shortVersion.code).toBe(2);
      expect(shortVersion.out).toMatch(/invalid precompute request: version: /);
    } finally {
      await p.close();
    }
  });
});
