import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig, settingsSchema } from "../../src/config.ts";

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

  it("documents every setting in the README's configuration table", () => {
    const readme = readFileSync("README.md", "utf8");
    const table = readme.slice(readme.indexOf("## Configuration"));
    const missing = Object.keys(settingsSchema.shape).filter(
      (name) => !new RegExp(`^\\|\\s*\`${name}\`\\s*\\|`, "m").test(table),
    );
    expect(missing).toEqual([]);
  });
});
