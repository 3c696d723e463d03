/** A start against a Redis that refuses its credentials says so at once, not "not reachable". */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRedis, type Redis, whenReady } from "../../src/redis/connection.ts";
import { type EmbeddedRedis, startRedisServer } from "../../src/redis/embedded.ts";

let server: EmbeddedRedis;
const opened: Redis[] = [];

function connect(url: string): Redis {
  const redis = createRedis(url);
  redis.on("error", () => {}); // whenReady reads them
  opened.push(redis);
  return redis;
}

beforeAll(async () => {
  server = await startRedisServer();
  const admin = connect(server.url);
  await whenReady(admin);
  await admin.config("SET", "requirepass", "right-password");
});
afterAll(async () => {
  for (const redis of opened) redis.disconnect();
  await server.stop();
});

describe("whenReady", () => {
  it("fails at once on refused credentials, naming them, never the password", async () => {
    const { port } = new URL(server.url);
    for (const url of [`redis://:wrong-password@127.0.0.1:${port}`, `redis://127.0.0.1:${port}`]) {
      const started = performance.now();
      const error = await whenReady(connect(url), 5_000).catch((e: Error) => e);
      expect(error).toBeInstanceOf(Error);
      expect((error as Error).message).toMatch(/^Redis refused the credentials in REDIS_URL: /);
      expect((error as Error).message).not.toContain("wrong-password");
      expect(performance.now() - started).toBeLessThan(4_000);
    }
    await whenReady(connect(`redis://:right-password@127.0.0.1:${port}`), 5_000);
  });

  it("says the last connection error when Redis cannot be reached in time", async () => {
    const error = await whenReady(connect("redis://127.0.0.1:1"), 500).catch((e: Error) => e);
    expect((error as Error).message).toMatch(
      /^Redis not reachable within 500 ms \(check REDIS_URL\): .*ECONNREFUSED/,
    );
  });
});
