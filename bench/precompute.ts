/**
 * npm run bench:precompute — in one run, on this machine:
 *   1. raw onnxruntime batched throughput on N inputs (the ceiling): the registry's own
 *      runtime (same session options, PREDCACHE_ONNX_THREADS), the pipeline's batch size
 *      (PREDCACHE_PRECOMPUTE_BATCH), rows encoded beforehand, nothing else;
 *   2. the whole pipeline on the same inputs: queue + planning + shared encoding +
 *      skip-existing check + inference + Redis writes + chunk bookkeeping, by a real
 *      precompute worker (started, its inference thread loaded, before the clock), from the
 *      enqueue until the last chunk is done. The lookup-table build that follows is a
 *      separate step: timed and printed apart, not counted;
 *   3. Redis bytes per entry for 1M entries in each candidate layout (bucketed small
 *      hashes vs one string per key), from INFO memory.
 * Prints ratios side by side. One noisy run: read the ratios, not the absolute figures.
 */
import { readFile } from "node:fs/promises";
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

const config = loadConfig({ ...process.env, LOG_LEVEL: "silent", PREDCACHE_PREFIX: "bench" });
const BATCH = config.precomputeBatch;
const registry = await loadRegistry(config);
const model = registry.defaultVersion("flight-delay") as ModelVersion;
const runtime = await registry.runtime(model);

/** The full route × hour × weekday grid (for the memory layouts). */
const source: Extract<SourceSpec, { kind: "grid" }> = {
  kind: "grid",
  axes: { origin: "all", destination: "all", hour: "all", dayOfWeek: "all" },
  maxSize: 10_000_000,
};
// The inputs both sides run: the grid over the first origins, at least N rows (a grid
// source, so the pipeline needs no seed file).
const perOrigin = 143 * 24 * 7;
const origins = (model.manifest.encoding.features[0] as { vocabulary: string[] }).vocabulary.slice(
  0,
  Math.ceil(N / perOrigin),
);
const pipelineSource: Extract<SourceSpec, { kind: "grid" }> = {
  kind: "grid",
  axes: { origin: origins, destination: "all", hour: "all", dayOfWeek: "all" },
  maxSize: 10_000_000,
};

console.log(
  `predcache precompute bench — node ${process.version}, ${os.cpus().length} CPUs, N=${N}`,
);

// 1. Raw onnxruntime: the same inputs, pre-encoded, batched, nothing else.
const rows: number[][] = [];
for (const input of gridInputs(model.manifest.encoding.features, pipelineSource)) {
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
// A worker is a long-running process: its inference thread is loaded before any run, as
// the raw side's session is loaded (and warmed) before its clock starts.
await worker.worker.warmUp();
const keys = new Keys("bench");
const precompute = new Precompute(redis, keys, registry, { queuePrefix: queuePrefix("bench") });
/** CPU seconds of a process so far (user + system), from /proc; undefined elsewhere. */
async function cpuSeconds(pid: number): Promise<number | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => undefined);
  const fields = stat?.slice(stat.lastIndexOf(")") + 2).split(" ");
  return fields ? (Number(fields[11]) + Number(fields[12])) / 100 : undefined;
}
async function commandStats() {
  return (await redis.info("commandstats"))
    .split("\n")
    .map((line) => line.match(/^cmdstat_(\w+):calls=(\d+),usec=(\d+)/))
    .filter((m): m is RegExpMatchArray => m !== null)
    .map(([, name, calls, usec]) => ({ name, calls: Number(calls), usec: Number(usec) }))
    .sort((a, b) => b.usec - a.usec);
}
// The pipeline's end: the last chunk done (the run then builds its lookup table). CPU
// and command counters are read there too, so they leave the table build out.
let lastChunkAt = 0;
let atLastChunk:
  | Promise<{
      node: NodeJS.CpuUsage;
      redis: number | undefined;
      commands: Awaited<ReturnType<typeof commandStats>>;
    }>
  | undefined;
const redisCpuBefore = await cpuSeconds(server.pid);
const nodeCpuBefore = process.cpuUsage();
worker.worker.chunkWorker.on("completed", (job) => {
  lastChunkAt = performance.now();
  const node = process.cpuUsage(nodeCpuBefore);
  void precompute.status(job.data.runId).then((status) => {
    if (status?.chunks.done === status?.chunks.total)
      atLastChunk = Promise.all([cpuSeconds(server.pid), commandStats()]).then(
        ([redisCpu, commands]) => ({ node, redis: redisCpu, commands }),
      );
  });
});
started = performance.now();
const { runId } = await precompute.enqueue({
  model: "flight-delay",
  source: pipelineSource,
  chunkSize: 5_000,
});
const done = await precompute.waitUntilDone(runId, 3_600_000);
const finishedAt = performance.now();
const pipelineSeconds = (lastChunkAt - started) / 1000;
const tableSeconds = (finishedAt - lastChunkAt) / 1000;
const pipelineRate = done.rows / pipelineSeconds;
if (done.state !== "completed" || done.rows !== rows.length)
  throw new Error(`pipeline run ${done.state}: ${done.rows} rows, ${done.error}`);
const usage = await atLastChunk;
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

const ratio = pipelineRate / rawRate;
const wholeRate = done.rows / ((finishedAt - started) / 1000);
console.log("");
console.log("throughput on the same inputs                 rows/s     ratio");
console.log(
  `raw onnxruntime, batches of ${BATCH}            ${Math.round(rawRate).toString().padStart(9)}     1.00`,
);
console.log(
  `whole pipeline (queue+encode+infer+write)   ${Math.round(pipelineRate).toString().padStart(9)}     ${ratio.toFixed(2)}   target ≥ 0.80: ${ratio >= 0.8 ? "PASS" : "MISS"}`,
);
console.log(
  `  (pipeline: ${done.rows} rows in ${pipelineSeconds.toFixed(1)} s, enqueue to last chunk done, warm worker, ${done.chunks.done} chunks; raw: ${rows.length} rows in ${rawSeconds.toFixed(1)} s)`,
);
console.log(
  `  lookup-table build after the run: ${tableSeconds.toFixed(1)} s, a separate step, not counted (counted: ${Math.round(wholeRate)} rows/s, ${(wholeRate / rawRate).toFixed(2)})`,
);
if (usage) {
  const redisCpu =
    usage.redis !== undefined && redisCpuBefore !== undefined
      ? `${(usage.redis - redisCpuBefore).toFixed(1)} s`
      : "n/a";
  console.log(
    `  CPU until the last chunk: this process ${((usage.node.user + usage.node.system) / 1e6).toFixed(1)} s (its inference thread included), redis-server ${redisCpu}`,
  );
  console.log(
    `  busiest Redis commands: ${usage.commands
      .slice(0, 4)
      .map((c) => `${c.name} ${c.calls}× ${(c.usec / 1e6).toFixed(2)} s`)
      .join(", ")}`,
  );
}
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
