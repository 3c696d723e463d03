/**
 * npm run bench:precompute — in one run, on this machine:
 *   1. raw onnxruntime batched throughput on N inputs (the ceiling);
 *   2. the whole pipeline on the same inputs: queue + planning + shared encoding +
 *      inference + pipelined Redis writes, by a real precompute worker;
 *   3. Redis bytes per entry for 1M entries in each candidate layout (bucketed small
 *      hashes vs one string per key), from INFO memory.
 * Prints ratios side by side. One noisy run: read the ratios, not the absolute figures.
 */
import os from "node:os";
import { gridInputs } from "../precompute/inputs/grid.ts";
import { Precompute } from "../precompute/job.ts";
import type { SourceSpec } from "../precompute/spec.ts";
import { encodePrediction } from "../src/cache/codec.ts";
import { Keys } from "../src/cache/keys.ts";
import { loadConfig } from "../src/config.ts";
import { queuePrefix } from "../src/live/jobs.ts";
import { createLogger } from "../src/log.ts";
import type { ModelVersion } from "../src/model/registry.ts";
import { createRedis, type Redis, whenReady } from "../src/redis/connection.ts";
import { startRedisServer } from "../src/redis/embedded.ts";
import { createPrecomputeWorker, loadRegistry } from "../src/service.ts";

const N = Number(process.env.BENCH_ROWS ?? 100_000);
const MEMORY_ENTRIES = Number(process.env.BENCH_MEMORY_ENTRIES ?? 1_000_000);
const BATCH = 512;

const config = loadConfig({ LOG_LEVEL: "silent", PREDCACHE_PREFIX: "bench" });
const registry = await loadRegistry(config);
const model = registry.defaultVersion("flight-delay") as ModelVersion;
const runtime = await registry.runtime(model);

/** The first N inputs of the full route × hour × weekday grid. */
const source: Extract<SourceSpec, { kind: "grid" }> = {
  kind: "grid",
  axes: { origin: "all", destination: "all", hour: "all", dayOfWeek: "all" },
  maxSize: 10_000_000,
};
function* firstInputs(n: number) {
  let i = 0;
  for (const input of gridInputs(model.manifest.encoding.features, source)) {
    if (i++ >= n) return;
    yield input;
  }
}

console.log(
  `predcache precompute bench — node ${process.version}, ${os.cpus().length} CPUs, N=${N}`,
);

// 1. Raw onnxruntime: pre-encoded rows, batched, nothing else.
const rows: number[][] = [];
for (const input of firstInputs(N)) {
  const e = model.encoder.encode(input);
  if (e.ok) rows.push(e.value.row);
}
await runtime.run(rows.slice(0, BATCH)); // warm-up
let started = performance.now();
for (let i = 0; i < rows.length; i += BATCH) await runtime.run(rows.slice(i, i + BATCH));
const rawSeconds = (performance.now() - started) / 1000;
const rawRate = rows.length / rawSeconds;

// 2. The whole pipeline, on a private redis-server.
const server = await startRedisServer();
const redis: Redis = createRedis(server.url);
await whenReady(redis);
const env = {
  ...Object.fromEntries(Object.entries(process.env)),
  REDIS_URL: server.url,
  PREDCACHE_PREFIX: "bench",
  LOG_LEVEL: "silent",
};
const pipelineConfig = loadConfig(env);
const worker = await createPrecomputeWorker(
  pipelineConfig,
  server.url,
  createLogger("silent"),
  registry,
);
const keys = new Keys("bench");
const precompute = new Precompute(redis, keys, registry, { queuePrefix: queuePrefix("bench") });
// A seed-like source of exactly N inputs: the grid, cut with a JSON-lines file would cost
// disk; a grid over a subset of origins gives N rows without any file.
const perOrigin = 143 * 24 * 7;
const origins = (model.manifest.encoding.features[0] as { vocabulary: string[] }).vocabulary.slice(
  0,
  Math.ceil(N / perOrigin),
);
const pipelineSource: SourceSpec = {
  kind: "grid",
  axes: { origin: origins, destination: "all", hour: "all", dayOfWeek: "all" },
  maxSize: 10_000_000,
};
const pipelineRows = origins.length * perOrigin;
started = performance.now();
const { runId } = await precompute.enqueue({
  model: "flight-delay",
  source: pipelineSource,
  chunkSize: 5_000,
});
const done = await precompute.waitUntilDone(runId, 3_600_000);
const pipelineSeconds = (performance.now() - started) / 1000;
const pipelineRate = done.rows / pipelineSeconds;
if (done.state !== "completed" || done.rows !== pipelineRows)
  throw new Error(`pipeline run ${done.state}: ${done.rows} rows, ${done.error}`);
const entryMemory = Number((await redis.info("memory")).match(/used_memory:(\d+)/)?.[1]);
await worker.close();
await precompute.close();

// 3. Bytes per entry, 1M entries per layout, realistic keys and values.
async function usedMemory(): Promise<number> {
  return Number((await redis.info("memory")).match(/used_memory:(\d+)/)?.[1]);
}
function* entries(n: number) {
  let i = 0;
  for (const input of gridInputs(model.manifest.encoding.features, source)) {
    if (i++ >= n) return;
    const e = model.encoder.encode(input);
    if (!e.ok) continue;
    const p = ((i * 2654435761) % 10_000) / 10_000;
    yield {
      key: e.value.key,
      value: encodePrediction(model.manifest, {
        delayProbability: Number(p.toFixed(4)),
        expectedDelayMinutes: Number((p * 60).toFixed(1)),
      }),
    };
  }
}
async function measure(
  label: string,
  write: (batch: { key: string; value: Buffer }[]) => Promise<void>,
) {
  await redis.flushdb();
  const before = await usedMemory();
  let batch: { key: string; value: Buffer }[] = [];
  for (const e of entries(MEMORY_ENTRIES)) {
    batch.push(e);
    if (batch.length === 10_000) {
      await write(batch);
      batch = [];
    }
  }
  if (batch.length) await write(batch);
  const bytes = (await usedMemory()) - before;
  return { label, bytesPerEntry: bytes / MEMORY_ENTRIES };
}
const bits = pipelineConfig.bucketBits;
const layouts = [
  await measure(`bucketed hashes (2^${bits} per version, listpack)`, async (batch) => {
    const pipeline = redis.pipeline();
    for (const { key, value } of batch)
      pipeline.hset(
        keys.bucket("flight-delay", model.version, model.encoder.hash, key, bits),
        key,
        value,
      );
    await pipeline.exec();
  }),
  await measure("one string per key", async (batch) => {
    const pipeline = redis.pipeline();
    for (const { key, value } of batch)
      pipeline.set(`bench:s:flight-delay:${model.version}:${model.encoder.hash}:${key}`, value);
    await pipeline.exec();
  }),
];

console.log("");
console.log("throughput on the same inputs                 rows/s     ratio");
console.log(
  `raw onnxruntime, batches of ${BATCH}            ${Math.round(rawRate).toString().padStart(9)}     1.00`,
);
console.log(
  `whole pipeline (queue+encode+infer+write)   ${Math.round(pipelineRate).toString().padStart(9)}     ${(pipelineRate / rawRate).toFixed(2)}   target ≥ 0.80: ${pipelineRate / rawRate >= 0.8 ? "PASS" : "MISS"}`,
);
console.log(
  `  (pipeline: ${done.rows} rows in ${pipelineSeconds.toFixed(1)} s, ${done.chunks.done} chunks; raw: ${rows.length} rows in ${rawSeconds.toFixed(1)} s)`,
);
console.log(
  `  Redis used_memory after the pipeline run: ${(entryMemory / 1e6).toFixed(1)} MB for ${done.rows} entries + queue state`,
);
console.log("");
console.log(
  `Redis memory for ${MEMORY_ENTRIES.toLocaleString("en-US")} entries (INFO memory used_memory delta)`,
);
const [hashes, strings] = layouts as [
  { label: string; bytesPerEntry: number },
  { label: string; bytesPerEntry: number },
];
for (const l of layouts)
  console.log(`  ${l.label.padEnd(46)} ${l.bytesPerEntry.toFixed(1).padStart(7)} bytes/entry`);
console.log(`  strings / hashes = ${(strings.bytesPerEntry / hashes.bytesPerEntry).toFixed(2)}×`);

await redis.quit();
await server.stop();
await registry.close();
