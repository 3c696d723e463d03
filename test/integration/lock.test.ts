/** src/redis/lock.ts on a real Redis: one holder at a time, expiry, renewal, release. */
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { createRedis, type Redis, whenReady } from "../../src/redis/connection.ts";
import { LockTimeoutError, withLock } from "../../src/redis/lock.ts";
import { uniquePrefix } from "../helpers/service.ts";

let redis: Redis;
const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

beforeAll(async () => {
  redis = createRedis(inject("redisUrl"));
  await whenReady(redis);
});
afterAll(async () => {
  await redis.quit();
});

describe("withLock", () => {
  it("lets one holder work at a time; the others wait their turn", async () => {
    const key = `${uniquePrefix("lock")}:one`;
    const options = { ttlMs: 2_000, waitMs: 10_000, pollMs: 10 };
    let inside = 0;
    let most = 0;
    const order: number[] = [];
    await Promise.all(
      [1, 2, 3, 4].map((n) =>
        withLock(redis, key, options, async () => {
          inside++;
          most = Math.max(most, inside);
          await sleep(50);
          order.push(n);
          inside--;
        }),
      ),
    );
    expect(most).toBe(1);
    expect(order.sort()).toEqual([1, 2, 3, 4]);
    expect(await redis.exists(key)).toBe(0); // released
  });

  it("is taken once a holder that died (stopped renewing) lets it expire", async () => {
    const key = `${uniquePrefix("lock")}:dead`;
    await redis.set(key, "a-dead-holder", "PX", 300);
    const started = Date.now();
    const got = await withLock(redis, key, { ttlMs: 1_000, waitMs: 5_000, pollMs: 20 }, async () =>
      Date.now(),
    );
    expect(got - started).toBeGreaterThanOrEqual(250);
  });

  it("gives up waiting after waitMs, naming who holds it", async () => {
    const key = `${uniquePrefix("lock")}:busy`;
    await redis.set(key, "run-123:x", "PX", 10_000);
    await expect(
      withLock(redis, key, { ttlMs: 1_000, waitMs: 200, pollMs: 20 }, async () => undefined),
    ).rejects.toThrow(LockTimeoutError);
    await expect(
      withLock(redis, key, { ttlMs: 1_000, waitMs: 100, pollMs: 20 }, async () => undefined),
    ).rejects.toThrow(/held by run-123:x/);
  });

  it("stays held past its time to live while the work runs, renewed", async () => {
    const key = `${uniquePrefix("lock")}:long`;
    const options = { ttlMs: 300, waitMs: 100, pollMs: 20 };
    await withLock(redis, key, { ...options, label: "long-run" }, async (held) => {
      await sleep(900);
      expect(held()).toBe(true);
      expect(await redis.get(key)).toMatch(/^long-run:/);
      // Another cannot take it meanwhile.
      await expect(withLock(redis, key, options, async () => undefined)).rejects.toThrow(
        LockTimeoutError,
      );
    });
  });

  it("tells the work when the lock passed to another, and frees only its own", async () => {
    const key = `${uniquePrefix("lock")}:lost`;
    await withLock(redis, key, { ttlMs: 300, waitMs: 100 }, async (held) => {
      // Another takes it over (as after a stall past the time to live).
      await redis.set(key, "another:holder", "PX", 10_000);
      await sleep(250); // a renewal runs every ttl/3 and finds it gone
      expect(held()).toBe(false);
    });
    expect(await redis.get(key)).toBe("another:holder");
  });
});
