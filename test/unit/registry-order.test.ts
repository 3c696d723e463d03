/**
 * Which loaded version is newest (the default active one; what gc keeps): the one whose
 * ONNX file came to this installation last, whatever modification time a copy kept.
 */
import { utimes } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config.ts";
import { loadRegistry } from "../../src/service.ts";
import { modelsDirWithVersions } from "../helpers/models.ts";

describe("the registry's newest version", () => {
  it("is the one installed last, even when its copy kept an old modification time", async () => {
    const root = await modelsDirWithVersions(["copied"]);
    // As cp -a, tar or rsync leave it: the file's modification time from long ago.
    const old = new Date("2001-01-01T00:00:00Z");
    await utimes(join(root, "flight-delay-copied", "model.onnx"), old, old);
    const registry = await loadRegistry(loadConfig({ PREDCACHE_MODELS_DIR: root }));
    try {
      const versions = registry.versions("flight-delay");
      expect(versions.map((v) => v.manifest.label)).toEqual([
        expect.not.stringMatching(/^copied$/),
        "copied",
      ]);
      expect(registry.defaultVersion("flight-delay")?.manifest.label).toBe("copied");
      expect(versions[1]?.installedAt.getTime()).toBeGreaterThan(old.getTime());
    } finally {
      await registry.close();
    }
  });
});
