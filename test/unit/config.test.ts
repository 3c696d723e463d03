import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig, settingsSchema } from "../../src/config.ts";
import { liveWorkerWaitNotice } from "../../src/main/renamed-settings.ts";
import { unknownSettingNotices } from "../../src/main/unknown-settings.ts";
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

  it("treats empty and blank variables as unset", () => {
    expect(loadConfig({ REDIS_URL: "", PORT: "" }).redisUrl).toBeUndefined();
    const blank = loadConfig({ PORT: " ", PREDCACHE_LIVE_QUEUE_MAX: "\t", HOST: " " });
    expect(blank).toMatchObject({ port: 8787, host: "127.0.0.1" });
    expect(blank.liveQueueMax).toBe(loadConfig({}).liveQueueMax);
  });

  it("reads numbers in decimal only, spaces around them aside", () => {
    expect(loadConfig({ PORT: " 8080 " }).port).toBe(8080);
    expect(loadConfig({ PREDCACHE_AUDIT_RATE: "0.25" }).auditRate).toBe(0.25);
    expect(loadConfig({ PREDCACHE_AUDIT_RATE: ".5" }).auditRate).toBe(0.5);
    for (const [name, value] of <[string, string][]>[
      ["PORT", "0x53E4"],
      ["PORT", "1e3"],
      ["PORT", "0b101"],
      ["PORT", "80.5"],
      ["PREDCACHE_L1_MAX_BYTES", "0b1010"],
      ["PREDCACHE_AUDIT_RATE", "1e-3"],
      ["PREDCACHE_AUDIT_RATE", "Infinity"],
      ["PREDCACHE_MISS_RATE_LIMIT", "1 000"],
    ])
      expect(() => loadConfig({ [name]: value }), `${name}=${value}`).toThrow(
        new RegExp(`${name}: expected`),
      );
  });

  it("refuses a default wait set longer than the longest wait (an unset default is capped)", () => {
    expect(() =>
      loadConfig({ PREDCACHE_WAIT_DEFAULT_MS: "3000", PREDCACHE_WAIT_MAX_MS: "500" }),
    ).toThrow(/PREDCACHE_WAIT_DEFAULT_MS \(3000\) is more than PREDCACHE_WAIT_MAX_MS \(500\)/);
    expect(loadConfig({ PREDCACHE_WAIT_MAX_MS: "200" })).toMatchObject({
      waitDefaultMs: 200,
      waitMaxMs: 200,
    });
  });

  it("names PREDCACHE_ variables no process reads, with the nearest known name", () => {
    expect(
      unknownSettingNotices({
        PREDCACHE_RATELIMIT: "5",
        PREDCACHE_AUDITRATE: "1",
        PREDCACHE_API_KEY: "k",
        PREDCACHE_TOKEN: "t",
        PREDCACHE_SERVER: "http://x",
        PREDCACHE_PREFIX: "pc",
        PREDCACHE_BLANK_THING: " ",
        PATH: "/bin",
      }),
    ).toEqual([
      "PREDCACHE_AUDITRATE is set, but no predcache process reads it: did you mean PREDCACHE_AUDIT_RATE?",
      "PREDCACHE_RATELIMIT is set, but no predcache process reads it: did you mean PREDCACHE_RATE_LIMIT?",
      expect.stringMatching(/^PREDCACHE_API_KEY is the CLI's key.*the read API is open$/),
    ]);
    expect(
      unknownSettingNotices({ PREDCACHE_API_KEY: "k", PREDCACHE_API_KEYS: "app:0123456789abcdef" }),
    ).toEqual([]);
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
