import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig, settingsSchema } from "../../src/config.ts";
import { liveWorkerWaitNotice } from "../../src/main/renamed-settings.ts";
import { parseClusterUrl } from "../../src/redis/connection.ts";

describe("config", () => {
  it("has working defaults", () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      port: 8787,
      host: "127.0.0.1",
      redisUrl: undefined,
      modelsDir: "seeds/models",
      prefix: "pc",
    });
  });

  it("treats empty variables as unset", () => {
    expect(loadConfig({ REDIS_URL: "", PORT: "" }).redisUrl).toBeUndefined();
  });

  it("names the variable that is wrong", () => {
    expect(() => loadConfig({ PORT: "eighty" })).toThrow(ConfigError);
    expect(() => loadConfig({ PORT: "70000" })).toThrow(/PORT/);
    expect(() => loadConfig({ REDIS_URL: "not a url" })).toThrow(/REDIS_URL/);
    expect(() => loadConfig({ PREDCACHE_PREFIX: "has space" })).toThrow(/PREDCACHE_PREFIX/);
  });

  it("takes one Redis or a Redis Cluster's seed nodes as REDIS_URL", () => {
    expect(loadConfig({ REDIS_URL: "redis://127.0.0.1:6379/2" }).redisUrl).toBe(
      "redis://127.0.0.1:6379/2",
    );
    expect(() => loadConfig({ REDIS_URL: "http://127.0.0.1:6379" })).toThrow(/REDIS_URL/);
    expect(() => loadConfig({ REDIS_URL: "redis-cluster://" })).toThrow(/REDIS_URL/);
    expect(parseClusterUrl("redis-cluster://app:p%40ss@10.0.0.1:7000,10.0.0.2,[::1]:7002")).toEqual(
      {
        nodes: [
          { host: "10.0.0.1", port: 7000 },
          { host: "10.0.0.2", port: 6379 },
          { host: "::1", port: 7002 },
        ],
        username: "app",
        password: "p@ss",
      },
    );
  });

  it("documents every setting in the README's configuration table", () => {
    const readme = readFileSync("README.md", "utf8");
    const table = readme.slice(readme.indexOf("## Configuration"));
    const missing = Object.keys(settingsSchema.shape).filter(
      (name) => !new RegExp(`^\\|\\s*\`${name}\`\\s*\\|`, "m").test(table),
    );
    expect(missing).toEqual([]);
  });
});

describe("renamed settings", () => {
  it("names a live worker's old wait setting when the new one is not set", () => {
    expect(liveWorkerWaitNotice({})).toBeUndefined();
    expect(liveWorkerWaitNotice({ PREDCACHE_LIVE_BATCH_WAIT_MS: "" })).toBeUndefined();
    expect(
      liveWorkerWaitNotice({
        PREDCACHE_LIVE_BATCH_WAIT_MS: "20",
        PREDCACHE_LIVE_WORKER_WAIT_MS: "",
      }),
    ).toMatch(/PREDCACHE_LIVE_WORKER_WAIT_MS/);
    expect(liveWorkerWaitNotice({ PREDCACHE_LIVE_BATCH_WAIT_MS: "20" })).toMatch(
      /PREDCACHE_LIVE_WORKER_WAIT_MS/,
    );
    expect(
      liveWorkerWaitNotice({
        PREDCACHE_LIVE_BATCH_WAIT_MS: "20",
        PREDCACHE_LIVE_WORKER_WAIT_MS: "2",
      }),
    ).toBeUndefined();
  });
});
