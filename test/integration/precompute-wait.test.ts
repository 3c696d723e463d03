/**
 * Following a run (npm run precompute, waitUntilDone) rides out a Redis outage: the run
 * goes on without the follower, which says so and waits, then sees the run end. And what
 * a run's status counts once it ends cut short.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Precompute } from "../../precompute/job.ts";
import { RunStore } from "../../precompute/runs.ts";
import { Keys } from "../../src/cache/keys.ts";
import { loadConfig } from "../../src/config.ts";
import type { ModelRegistry } from "../../src/model/registry.ts";
import { createRedis, type Redis } from "../../src/redis/connection.ts";
import { type EmbeddedRedis, startRedisServer } from "../../src/redis/embedded.ts";
import { loadRegistry } from "../../src/service.ts";

let server: EmbeddedRedis;
let redis: Redis;
let registry: ModelRegistry;

beforeAll(async () => {
  server = await startRedisServer();
  redis = createRedis(server.url, { commandTimeoutMs: 300 });
  registry = await loadRegistry(loadConfig({ LOG_LEVEL: "silent" }));
});
afterAll(async () => {
  redis.disconnect();
  await registry.close();
  await server.stop();
});

describe("following a run", () => {
  it("waits out Redis not answering, then sees the run end", async () => {
    const keys = new Keys("waitrun");
    const runs = new RunStore(redis, keys);
    const precompute = new Precompute(redis, keys, registry, { queuePrefix: "{waitrun:q}" });
    await runs.create({
      id: "run-wait",
      model: "flight-delay",
      version: "000000000000",
      source: { kind: "inline", inputs: [] },
      sourceDescription: "test",
      promote: false,
    });
    await runs.transition("run-wait", "running");
    const outages: unknown[] = [];
    const done = precompute.waitUntilDone("run-wait", 30_000, undefined, (error) =>
      outages.push(error),
    );
    server.pause();
    await new Promise((r) => setTimeout(r, 1_500));
    server.resume();
    await runs.transition("run-wait", "completed");
    expect((await done).state).toBe("completed");
    expect(outages.length).toBeGreaterThan(0);
    await precompute.close();
  });
});

describe("a run's counts", () => {
  it("counts what chunks cut short by a cancel wrote in the run's rows", async () => {
    const keys = new Keys("cutrun");
    const runs = new RunStore(redis, keys);
    await runs.create({
      id: "run-cut",
      model: "flight-delay",
      version: "000000000000",
      source: { kind: "inline", inputs: [] },
      sourceDescription: "test",
      promote: false,
    });
    await runs.transition("run-cut", "running");
    // Chunk 0 (10 rows) wrote 4 and finished; chunk 1 wrote 3 of its rows, then the cancel.
    const write = async (index: number, n: number) => {
      for (const { key, field } of runs.writtenCounters("run-cut", index))
        await redis.hincrby(key, field, n);
    };
    await write(0, 4);
    await runs.chunkDone("run-cut", 0, 10);
    await write(1, 3);
    expect(await runs.get("run-cut")).toMatchObject({ rows: 10, written: 7, skipped: 6 });
    await runs.transition("run-cut", "cancelled");
    const ended = await runs.get("run-cut");
    expect(ended).toMatchObject({ state: "cancelled", rows: 13, written: 7, skipped: 6 });
    expect((ended?.written ?? 0) + (ended?.skipped ?? 0)).toBe(ended?.rows);
  });
});
