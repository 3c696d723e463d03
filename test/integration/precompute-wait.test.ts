/**
 * Following a run (npm run precompute, waitUntilDone) rides out a Redis outage: the run
 * goes on without the follower, which says so and waits, then sees the run end.
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
