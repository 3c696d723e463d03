import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { switchActiveVersion } from "../../src/model/active.ts";
import {
  capturedLog,
  eventually,
  getJson,
  startTestService,
  type TestService,
  uniquePrefix,
} from "../helpers/service.ts";

let t: TestService;
beforeAll(async () => {
  t = await startTestService();
});
afterAll(() => t.close());

describe("models API", () => {
  it("answers /healthz", async () => {
    const { status, body } = await getJson(`${t.url}/healthz`);
    expect(status).toBe(200);
    expect(body).toEqual({ status: "ok" });
  });

  it("is ready once Redis answers and every model's active version is known", async () => {
    const { status, body } = await getJson(`${t.url}/readyz`);
    expect(status).toBe(200);
    expect(body.status).toBe("ready");
    expect(body.redis.reachable).toBe(true);
    expect(body.models).toEqual([
      expect.objectContaining({ name: "flight-delay", known: true, loaded: true }),
    ]);
    expect(body.liveWorkers).toBeGreaterThanOrEqual(1);
  });

  it("stays ready without a live worker, and says misses will not be computed", async () => {
    const alone = await startTestService({
      env: { PREDCACHE_PREFIX: uniquePrefix("no-live-worker") },
      liveWorker: false,
    });
    try {
      const { status, body } = await getJson(`${alone.url}/readyz`);
      expect(status).toBe(200);
      expect(body.liveWorkers).toBe(0);
      expect(body.warnings).toEqual([expect.stringMatching(/no live worker/)]);
    } finally {
      await alone.close();
    }
  });

  it("stays ready with a paused queue, and says which and what it holds up", async () => {
    const { live, precompute } = t.service;
    // As the queue dashboard's pause button does; BullMQ keeps it in Redis.
    await live.queue.pause();
    await precompute.runQueue.pause();
    try {
      const { status, body } = await getJson(`${t.url}/readyz`);
      expect(status).toBe(200);
      expect(body.liveWorkers).toBeGreaterThanOrEqual(1);
      expect(body.pausedQueues).toEqual(["live", "precompute"]);
      expect(body.warnings).toEqual([
        expect.stringMatching(/^the live queue is paused .*misses wait out their wait, then 202$/),
        expect.stringMatching(/^the precompute queue is paused .*runs are not started$/),
      ]);
      // A process started meanwhile says so in its start log (the pause outlives restarts).
      const captured = capturedLog();
      const another = await startTestService({
        env: { PREDCACHE_PREFIX: t.config.prefix },
        liveWorker: false,
        log: captured.log,
      });
      await another.close();
      expect(
        captured.lines.filter((l) => l.level === 40 && /queue is paused/.test(String(l.msg))),
      ).toEqual([
        expect.objectContaining({ queue: "live" }),
        expect.objectContaining({ queue: "precompute" }),
      ]);
    } finally {
      await live.queue.resume();
      await precompute.runQueue.resume();
    }
    const { body } = await getJson(`${t.url}/readyz`);
    expect(body.pausedQueues).toEqual([]);
    expect(body.warnings).toEqual([]);
  });

  it("lists the demo model with its active version", async () => {
    const { status, body } = await getJson(`${t.url}/v1/models`);
    expect(status).toBe(200);
    const [model] = body.models;
    expect(model.name).toBe("flight-delay");
    expect(model.activeVersion).toMatch(/^[0-9a-f]{12}$/);
    expect(model.inputs).toEqual(["origin", "destination", "hour", "dayOfWeek"]);
    expect(model.versions.filter((v: { active: boolean }) => v.active)).toHaveLength(1);
  });

  it("returns a model's input schema and model card", async () => {
    const { status, body } = await getJson(`${t.url}/v1/models/flight-delay`);
    expect(status).toBe(200);
    expect(body.inputSchema.features.map((f: { name: string }) => f.name)).toEqual([
      "origin",
      "destination",
      "hour",
      "dayOfWeek",
    ]);
    expect(body.card.evaluation.auc).toBeGreaterThan(0.6);
    expect(body.card.intendedUse).toBeTruthy();
    expect(body.outputs.map((o: { name: string }) => o.name)).toEqual([
      "delayProbability",
      "expectedDelayMinutes",
    ]);
    expect(body.version).toBe(body.activeVersion);
  });

  it("says the models may change: revalidated each time, 304 while they have not", async () => {
    for (const path of ["/v1/models", "/v1/models/flight-delay"]) {
      const first = await getJson(`${t.url}${path}`);
      expect(first.headers.get("cache-control"), path).toBe("no-cache");
      const etag = first.headers.get("etag") as string;
      // Weak when fetch asked for gzip and got it (test/integration/compression.test.ts).
      expect(etag, path).toMatch(/^(?:W\/)?"[0-9a-f]{32}"$/);
      const again = await fetch(`${t.url}${path}`, { headers: { "if-none-match": etag } });
      expect(again.status, path).toBe(304);
      expect(await again.text()).toBe("");
      const head = await fetch(`${t.url}${path}`, { method: "HEAD" });
      expect(head.headers.get("content-length"), path).toBe(
        String(Buffer.byteLength(JSON.stringify(first.body))),
      );
    }
  });

  it("answers 503 while the active version is one this server has not loaded", async () => {
    const alone = await startTestService({
      env: { PREDCACHE_PREFIX: uniquePrefix("unloaded-active") },
      liveWorker: false,
      registry: t.registry,
    });
    try {
      const { redis, keys } = alone.service;
      const loaded = alone.service.active.get("flight-delay") as string;
      // Another process promoted a version whose folder this one does not have.
      await switchActiveVersion(redis, keys, "flight-delay", "0123456789ab");
      const lookup = `${alone.url}/v1/models/flight-delay/predict?origin=SFO&destination=LAX&hour=7&dayOfWeek=1`;
      const refused = await eventually(async () => {
        const r = await getJson(lookup);
        return r.status === 503 ? r : undefined;
      });
      expect(refused.body.error).toMatchObject({
        code: "version_unavailable",
        details: { activeVersion: "0123456789ab", versions: [loaded] },
      });
      expect(refused.headers.get("retry-after")).toBe("5");
      // A version asked for by name is still that version's answer, or its 404.
      expect((await getJson(`${lookup}&version=${loaded}&wait=0`)).status).not.toBe(503);
      expect((await getJson(`${lookup}&version=ffffffffffff`)).status).toBe(404);
      await switchActiveVersion(redis, keys, "flight-delay", loaded);
      await eventually(async () => ((await getJson(lookup)).status === 503 ? undefined : true));
    } finally {
      await alone.close();
    }
  });

  it("answers an unknown model with a 404 JSON error", async () => {
    const { status, body } = await getJson(`${t.url}/v1/models/nope`);
    expect(status).toBe(404);
    expect(body.error.code).toBe("model_not_found");
    expect(body.error.details.models).toEqual(["flight-delay"]);
  });

  it("answers an unknown route with a 404 JSON error", async () => {
    const { status, body } = await getJson(`${t.url}/v2/whatever`);
    expect(status).toBe(404);
    expect(body.error.code).toBe("not_found");
  });
});
