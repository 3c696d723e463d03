/** L2 reads on a real Redis: when each read of a burst reaches Redis, and what it returns. */
import { spawnSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { Keys } from "../../src/cache/keys.ts";
import { PredictionStore } from "../../src/cache/store.ts";
import { loadConfig } from "../../src/config.ts";
import type { ModelRegistry, ModelVersion } from "../../src/model/registry.ts";
import { createRedis, type Redis, whenReady } from "../../src/redis/connection.ts";
import { loadRegistry } from "../../src/service.ts";
import { uniquePrefix } from "../helpers/service.ts";

const redisUrl = inject("redisUrl");
let redis: Redis;
let registry: ModelRegistry;
let model: ModelVersion;

beforeAll(async () => {
  redis = createRedis(redisUrl, { commandTimeoutMs: 2_000 });
  await whenReady(redis);
  registry = await loadRegistry(loadConfig({ LOG_LEVEL: "silent" }));
  const found = registry.defaultVersion("flight-delay");
  if (!found) throw new Error("no demo model");
  model = found;
});
afterAll(async () => {
  redis.disconnect();
  await registry.close();
});

/** HGETs Redis has served, read without yielding to the event loop (a child process). */
function hgetsServedNow(): number {
  const info = spawnSync("redis-cli", ["-u", redisUrl, "info", "commandstats"], {
    encoding: "utf8",
  });
  if (info.status !== 0) throw new Error(`redis-cli failed: ${info.stderr}`);
  return Number(/cmdstat_hget:calls=(\d+)/.exec(info.stdout)?.[1] ?? 0);
}

function keyOf(input: Record<string, unknown>): { key: string; row: number[] } {
  const encoded = model.encoder.encode(input);
  if (!encoded.ok) throw new Error("bad input");
  return encoded.value;
}

describe("PredictionStore reads", () => {
  it("writes a turn's first read at once and the rest of the burst at the turn's end, each answered right", async () => {
    const store = new PredictionStore(redis, new Keys(uniquePrefix("store")), { bucketBits: 4 });
    const first = keyOf({ origin: "SFO", destination: "LAX", hour: 7, dayOfWeek: 1 });
    const second = keyOf({ origin: "JFK", destination: "BOS", hour: 18, dayOfWeek: 5 });
    const absent = keyOf({ origin: "DEN", destination: "PHX", hour: 3, dayOfWeek: 2 });
    const [p1, p2] = await (await registry.runtime(model)).run([first.row, second.row]);
    if (!p1 || !p2) throw new Error("no predictions");
    await store.put(model, [
      { key: first.key, prediction: p1 },
      { key: second.key, prediction: p2 },
    ]);

    const before = hgetsServedNow();
    const reads = [
      store.get(model, first.key),
      store.get(model, absent.key),
      store.get(model, second.key),
    ];
    // Still in the same turn: give Redis time to serve what was written, then look.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 200);
    expect(hgetsServedNow() - before).toBe(1);

    expect(await Promise.all(reads)).toEqual([p1, undefined, p2]);
    expect(hgetsServedNow() - before).toBe(3);

    // The next turn's first read is written at once again.
    await new Promise((done) => setImmediate(done));
    const next = store.get(model, second.key);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 200);
    expect(hgetsServedNow() - before).toBe(4);
    expect(await next).toEqual(p2);
  });
});
