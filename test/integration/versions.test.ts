import { rm } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Keys } from "../../src/cache/keys.ts";
import { loadConfig } from "../../src/config.ts";
import type { Experiment } from "../../src/experiment/experiment.ts";
import { ExperimentStore } from "../../src/experiment/store.ts";
import {
  markCollecting,
  rollbackActiveVersion,
  switchActiveVersion,
} from "../../src/model/active.ts";
import type { ModelRegistry } from "../../src/model/registry.ts";
import { loadRegistry } from "../../src/service.ts";
import {
  type AdminView,
  adminView,
  eventually,
  getJson,
  modelsDirWithVersions,
  startTestService,
  type TestService,
  uniquePrefix,
} from "../helpers/service.ts";

let modelsDir: string;
let registry: ModelRegistry;
let t: TestService;
let admin: AdminView;
const prefix = uniquePrefix("versions");

beforeAll(async () => {
  modelsDir = await modelsDirWithVersions(["v2"]);
  registry = await loadRegistry(loadConfig({ PREDCACHE_MODELS_DIR: modelsDir }));
  t = await startTestService({
    env: { PREDCACHE_PREFIX: prefix, PREDCACHE_MODELS_DIR: modelsDir },
    registry,
  });
  admin = await adminView(prefix, registry);
});
afterAll(async () => {
  await admin.close();
  await t.close();
  await registry.close();
  await rm(modelsDir, { recursive: true });
});

async function servedVersion(query: string): Promise<string> {
  const r = await getJson(`${t.url}/v1/models/flight-delay/predict?${query}&wait=5000`);
  expect(r.status).toBe(200);
  return r.body.version;
}

describe("active version", () => {
  it("is seen by a running API within 1 s of a switch, both ways, and each version answers from its own keyspace", async () => {
    const [v1, v2] = registry.versions("flight-delay").map((v) => v.version) as [string, string];
    expect(v1).not.toBe(v2);
    const query = "origin=ATL&destination=ORD&hour=8&dayOfWeek=2";
    await admin.active.set("flight-delay", v1);
    const before = await getJson(`${t.url}/v1/models/flight-delay/predict?${query}&wait=5000`);
    expect(before.body.version).toBe(v1);
    expect((await getJson(`${t.url}/v1/models/flight-delay/predict?${query}`)).body.source).toBe(
      "memory",
    );

    for (const target of [v2, v1]) {
      const switched = Date.now();
      await admin.active.set("flight-delay", target);
      while ((await servedVersion(query)) !== target) {
        expect(Date.now() - switched).toBeLessThan(1_000);
        await new Promise((r) => setTimeout(r, 10));
      }
      const seenAfter = Date.now() - switched;
      console.log(`version switch to ${target} seen after ${seenAfter} ms`);
      expect(seenAfter).toBeLessThan(1_000);
    }
    // v2 answered from its own keyspace (a live run), never from v1's cached answer.
    const v2Model = registry.get("flight-delay", v2);
    const v2Digits = v2Model?.manifest.outputs[1]?.digits;
    expect(v2Digits).toBe(2);
    await admin.active.set("flight-delay", v2);
    const fromV2 = await getJson(`${t.url}/v1/models/flight-delay/predict?${query}&version=${v2}`);
    expect(fromV2.body.version).toBe(v2);
    expect(["memory", "redis"]).toContain(fromV2.body.source);
    expect(fromV2.body.prediction).not.toEqual(before.body.prediction);
    await admin.active.set("flight-delay", v1);
  });

  it("has the live worker's inference thread of the active version warm from the start, and of each version made active", async () => {
    const [v1, v2] = registry.versions("flight-delay").map((v) => v.version) as [string, string];
    const live = t.live?.worker;
    if (!live) throw new Error("no live worker");
    const active = admin.active.get("flight-delay");
    expect(live.warmedVersions()).toContain(`flight-delay@${active}`);
    const other = active === v1 ? v2 : v1;
    await admin.active.set("flight-delay", other);
    await eventually(async () =>
      live.warmedVersions().includes(`flight-delay@${other}`) ? true : undefined,
    );
    await admin.active.set("flight-delay", v1);
  });

  it("keeps an API process without a live worker ready across a promote", async () => {
    // Its own registry: no session of the version promoted to was ever loaded here.
    const api = await startTestService({
      env: { PREDCACHE_PREFIX: prefix, PREDCACHE_MODELS_DIR: modelsDir },
      liveWorker: false,
    });
    try {
      const served = api.service.active.get("flight-delay");
      const other = registry.versions("flight-delay").find((v) => v.version !== served);
      expect(other).toBeDefined();
      await admin.active.set("flight-delay", other?.version as string);
      await new Promise((r) => setTimeout(r, 1_000));
      const ready = await getJson(`${api.url}/readyz`);
      expect(ready.status).toBe(200);
      expect(ready.body.models).toEqual([
        expect.objectContaining({ activeVersion: other?.version, known: true }),
      ]);
      // The live workers of the other services on this prefix take its misses.
      expect(ready.body.liveWorkers).toBeGreaterThanOrEqual(1);
      expect(ready.body.warnings).toEqual([]);
    } finally {
      await api.close();
    }
  });

  it("is put back by the processes serving it when Redis loses it, not replaced by a newcomer's default", async () => {
    const [v1, v2] = registry.versions("flight-delay").map((v) => v.version) as [string, string];
    // The older version served (the newest, v2, is every new process's default).
    await admin.active.set("flight-delay", v1);
    await eventually(async () => (t.service.active.get("flight-delay") === v1 ? true : undefined));
    const key = new Keys(prefix).active("flight-delay");
    // As after a Redis restart without its data.
    await admin.redis.del(key);
    expect(await eventually(async () => (await admin.redis.get(key)) ?? undefined, 3_000)).toBe(v1);
    // A process started now finds it set: it serves v1 too, and nothing switches to v2.
    const late = await startTestService({
      env: { PREDCACHE_PREFIX: prefix, PREDCACHE_MODELS_DIR: modelsDir },
      liveWorker: false,
      registry,
    });
    try {
      expect(late.service.active.get("flight-delay")).toBe(v1);
      await new Promise((r) => setTimeout(r, 700));
      expect(t.service.active.get("flight-delay")).toBe(v1);
      expect(await admin.redis.get(key)).toBe(v1);
      expect(v2).not.toBe(v1);
    } finally {
      await late.close();
    }
  });

  it("keeps every previous version on the history, newest first", async () => {
    const history = await admin.redis.lrange(new Keys(prefix).history("flight-delay"), 0, -1);
    expect(history.length).toBeGreaterThanOrEqual(3);
  });

  it("never lets gc claim the active version or the rollback target, nor a claimed one become active", async () => {
    const keys = new Keys(prefix);
    const model = "flight-delay";
    const [a, b, c] = ["gc-a", "gc-b", "gc-c"];
    const before = await admin.redis.get(keys.active(model));
    try {
      await switchActiveVersion(admin.redis, keys, model, a);
      await switchActiveVersion(admin.redis, keys, model, b); // a: the rollback target
      expect(await markCollecting(admin.redis, keys, model, b)).toBeUndefined();
      expect(await markCollecting(admin.redis, keys, model, a)).toBeUndefined();
      const mark = await markCollecting(admin.redis, keys, model, c);
      expect(mark).toBeDefined();
      // While gc deletes c: neither a promote nor a rollback can make it active.
      await expect(switchActiveVersion(admin.redis, keys, model, c)).rejects.toMatchObject({
        code: "conflict",
      });
      await admin.redis.lpush(keys.history(model), c);
      await expect(rollbackActiveVersion(admin.redis, keys, model, c)).rejects.toMatchObject({
        code: "conflict",
      });
      await admin.redis.lpop(keys.history(model));
      expect(await admin.redis.get(keys.active(model))).toBe(b);
      // Nor can an experiment serve it, as either arm, nor make it active when it stops.
      const experiments = new ExperimentStore(admin.redis, keys);
      const experiment: Experiment = {
        id: `gc-x-${Date.now()}`,
        model,
        control: b,
        candidate: c,
        fraction: 0.5,
        shadowRate: 0,
        state: "running",
        startedAt: new Date().toISOString(),
      };
      await expect(experiments.start(experiment)).rejects.toMatchObject({ code: "conflict" });
      await mark?.release();
      // Once an experiment serves a version, gc cannot claim it.
      await experiments.start(experiment);
      try {
        expect(await markCollecting(admin.redis, keys, model, c)).toBeUndefined();
      } finally {
        const stored = await experiments.record(model, experiment.id);
        await experiments.stop({ ...experiment, state: "reverted" }, undefined, stored?.read ?? "");
      }
      await switchActiveVersion(admin.redis, keys, model, c);
      expect(await admin.redis.get(keys.active(model))).toBe(c);
    } finally {
      // Back to the version the service answered with, with its history as it was.
      await admin.redis.set(keys.active(model), before as string);
      await admin.redis.lrem(keys.history(model), 0, a);
      await admin.redis.lrem(keys.history(model), 0, b);
      await admin.redis.lrem(keys.history(model), 0, c);
    }
  });
});
