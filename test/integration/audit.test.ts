/**
 * The cache audit, on real Redis and the real model: sampled redis and table hits are
 * recomputed off the request path and compared; an entry corrupted on purpose in Redis
 * is counted and logged with its key, and left as it is (audits never write).
 */
import { Writable } from "node:stream";
import { pack } from "msgpackr";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CacheAudit } from "../../src/cache/audit.ts";
import { auditJobId } from "../../src/live/jobs.ts";
import { createLogger } from "../../src/log.ts";
import type { Prediction } from "../../src/model/decoding.ts";
import type { ModelVersion } from "../../src/model/registry.ts";
import type { PrecomputeWorkerProcess } from "../../src/service.ts";
import {
  eventually,
  getJson,
  postJson,
  precomputeInputs,
  precomputeWorkerFor,
  startTestService,
  type TestService,
  tempDataDir,
  uniquePrefix,
} from "../helpers/service.ts";

const lines: Record<string, unknown>[] = [];
let t: TestService;
let worker: PrecomputeWorkerProcess | undefined;
let model: ModelVersion;

type Input = Record<string, string>;

function predictUrl(input: Input, wait?: number): string {
  const query = new URLSearchParams(input).toString();
  return `${t.url}/v1/models/flight-delay/predict?${query}${wait === undefined ? "" : `&wait=${wait}`}`;
}

/** Sum of a series' samples whose labels include every given label. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`)) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    total += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return total;
}

interface Figures {
  checks: number;
  mismatches: number;
  busy: number;
  verified: number;
}

async function corruptCount(): Promise<number> {
  const text = await (await fetch(`${t.url}/metrics`)).text();
  return sample(text, "predcache_corrupt_entries_total", {
    model: "flight-delay",
    version: model.version,
  });
}

async function figures(source: string): Promise<Figures> {
  const text = await (await fetch(`${t.url}/metrics`)).text();
  const labels = { model: "flight-delay", version: model.version, source };
  return {
    checks: sample(text, "predcache_audit_checks_total", labels),
    mismatches: sample(text, "predcache_audit_mismatches_total", labels),
    busy: sample(text, "predcache_audit_skipped_total", { model: "flight-delay", reason: "busy" }),
    verified: sample(text, "predcache_audit_skipped_total", {
      model: "flight-delay",
      reason: "verified",
    }),
  };
}

/** Waits until at least `checks` more audits of `source` hits have been compared. */
async function afterChecks(source: string, before: Figures, checks: number): Promise<Figures> {
  return eventually(async () => {
    const now = await figures(source);
    return now.checks - before.checks >= checks ? now : undefined;
  });
}

/** A hit from Redis: answered live (so the worker stored it), then asked with L1 empty. */
async function inRedis(input: Input): Promise<{ key: string; prediction: Prediction }> {
  const first = await getJson(predictUrl(input, 5_000));
  expect(first.body.source).toBe("live");
  return { key: first.body.key, prediction: first.body.prediction };
}

beforeAll(async () => {
  const sink = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split("\n").filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  t = await startTestService({
    env: {
      PREDCACHE_AUDIT_RATE: "1",
      PREDCACHE_PREFIX: uniquePrefix("audit"),
      PREDCACHE_DATA_DIR: await tempDataDir(),
    },
    log: createLogger("warn", "test", sink),
  });
  model = t.registry.get(
    "flight-delay",
    t.service.active.get("flight-delay") as string,
  ) as ModelVersion;
});
afterAll(async () => {
  await worker?.close();
  await t.close();
});

describe("cache audit", () => {
  it("checks an uncorrupted Redis hit and finds no mismatch", async () => {
    const input = { origin: "ATL", destination: "ORD", hour: "3", dayOfWeek: "2" };
    const live = await inRedis(input);
    t.service.tiers.memory.clear();
    const before = await figures("redis");
    const hit = await getJson(predictUrl(input));
    expect(hit.body.source).toBe("redis");
    expect(hit.body.prediction).toEqual(live.prediction);
    const after = await afterChecks("redis", before, 1);
    expect(after.checks - before.checks).toBe(1);
    expect(after.mismatches - before.mismatches).toBe(0);
    console.log(
      `audit, clean redis hit: ${after.checks - before.checks} check, ${after.mismatches - before.mismatches} mismatches`,
    );
  });

  it("detects an entry corrupted on purpose in Redis, logs its key and leaves it", async () => {
    const input = { origin: "DEN", destination: "SEA", hour: "14", dayOfWeek: "5" };
    const { key, prediction: truth } = await inRedis(input);
    const p = truth.delayProbability as number;
    // Clearly wrong, validly encoded: the other side of 0.5, and two hours off.
    const wrong: Prediction = {
      delayProbability: p > 0.5 ? 0.01 : 0.99,
      expectedDelayMinutes: (truth.expectedDelayMinutes as number) + 120,
    };
    await t.service.tiers.store.put(model, [{ key, prediction: wrong }]);
    t.service.tiers.memory.clear();

    const runtime = await t.registry.runtime(model);
    const rowsBefore = runtime.stats.rows;
    const before = await figures("redis");
    const hit = await getJson(predictUrl(input));
    // The reply is what the cache holds: the audit observes off the request path.
    expect(hit.body.source).toBe("redis");
    expect(hit.body.prediction).toEqual(wrong);
    const after = await afterChecks("redis", before, 1);
    expect(after.checks - before.checks).toBe(1);
    expect(after.mismatches - before.mismatches).toBe(1);

    const warning = await eventually(async () =>
      lines.find((l) => l.msg === "cache audit mismatch" && l.key === key),
    );
    expect(warning).toMatchObject({
      level: 40,
      model: "flight-delay",
      version: model.version,
      source: "redis",
      key,
      outputs: ["delayProbability", "expectedDelayMinutes"],
      cached: wrong,
      recomputed: truth,
    });

    // The live worker ran the model for the audit (the hit itself ran nothing) but wrote
    // nothing: the bad entry is still there.
    expect(runtime.stats.rows - rowsBefore).toBe(1);
    expect(await t.service.tiers.store.get(model, key)).toEqual(wrong);
    // Audit jobs are not pollable as predictions.
    const auditId = auditJobId(model.name, model.version, key);
    expect(auditId).toMatch(/^audit\.flight-delay\.[0-9a-f]{12}\.[0-9a-f]{32}$/);
    expect((await getJson(`${t.url}/v1/jobs/${auditId}`)).status).toBe(404);
    console.log(
      `audit, corrupted redis entry ${key}: ${after.checks - before.checks} check, ${after.mismatches - before.mismatches} mismatch; still stored afterwards: ${JSON.stringify(await t.service.tiers.store.get(model, key))} (live model: ${JSON.stringify(truth)})`,
    );

    // The batch route audits its hits too: the corrupted one mismatches (again: a mismatch
    // is not remembered as verified), a clean one does not.
    const clean = { origin: "ATL", destination: "ORD", hour: "4", dayOfWeek: "2" };
    await inRedis(clean);
    t.service.tiers.memory.clear();
    const batchBefore = await figures("redis");
    const batch = await postJson(`${t.url}/v1/models/flight-delay/predict`, {
      inputs: [input, clean],
    });
    expect(batch.body.results.map((r: { source: string }) => r.source)).toEqual(["redis", "redis"]);
    const batchAfter = await afterChecks("redis", batchBefore, 2);
    expect(batchAfter.checks - batchBefore.checks).toBe(2);
    expect(batchAfter.mismatches - batchBefore.mismatches).toBe(1);
    console.log(
      `audit, batch of 1 corrupted + 1 clean redis hit: ${batchAfter.checks - batchBefore.checks} checks, ${batchAfter.mismatches - batchBefore.mismatches} mismatch`,
    );
  });

  it("does not recompute an entry that agreed while it holds that value; does once it changes", async () => {
    const input = { origin: "ORD", destination: "DFW", hour: "11", dayOfWeek: "6" };
    const { key, prediction: truth } = await inRedis(input);
    const runtime = await t.registry.runtime(model);
    const redisHit = async () => {
      t.service.tiers.memory.clear();
      const hit = await getJson(predictUrl(input));
      expect(hit.body.source).toBe("redis");
      return hit.body.prediction;
    };

    const first = await figures("redis");
    await redisHit();
    const checked = await afterChecks("redis", first, 1);
    expect(checked.checks - first.checks).toBe(1);
    expect(checked.mismatches - first.mismatches).toBe(0);

    // Sampled again (the rate is 1), twice: skipped as verified, the model not run.
    const rows = runtime.stats.rows;
    await redisHit();
    await redisHit();
    const skipped = await eventually(async () => {
      const now = await figures("redis");
      return now.verified - checked.verified >= 2 ? now : undefined;
    });
    expect(skipped.verified - checked.verified).toBe(2);
    expect(skipped.checks).toBe(checked.checks);
    expect(runtime.stats.rows).toBe(rows);

    // Another value stored under the key: audited again, and its mismatch found.
    const wrong: Prediction = { ...truth, delayProbability: 0.99 };
    await t.service.tiers.store.put(model, [{ key, prediction: wrong }]);
    expect(await redisHit()).toEqual(wrong);
    const rechecked = await afterChecks("redis", skipped, 1);
    expect(rechecked.checks - skipped.checks).toBe(1);
    expect(rechecked.mismatches - skipped.mismatches).toBe(1);
    expect(runtime.stats.rows - rows).toBe(1);
    console.log(
      `audit, one entry hit 4 times from Redis: ${rechecked.checks - first.checks} recomputes (${skipped.verified - checked.verified} skipped as verified), the changed value's mismatch found`,
    );
  });

  it("checks a verified entry again once its time as verified is up", async () => {
    const input = { origin: "MSP", destination: "DTW", hour: "6", dayOfWeek: "1" };
    const { key, prediction } = await inRedis(input);
    const audit = new CacheAudit(t.service.live, createLogger("silent"), {
      rate: 1,
      maxInFlight: 4,
      verifiedMs: 300,
    });
    const hit = { source: "redis" as const, prediction };
    const before = await figures("redis");
    audit.consider(model, key, hit);
    await audit.close();
    audit.consider(model, key, hit); // verified: skipped
    await audit.close();
    await new Promise((r) => setTimeout(r, 400));
    audit.consider(model, key, hit); // no longer: checked again
    await audit.close();
    const after = await figures("redis");
    expect(after.checks - before.checks).toBe(2);
    expect(after.verified - before.verified).toBe(1);
  });

  it("reads a value that does not decode as a miss: answered live, counted, logged with its key, replaced", async () => {
    const damaged: [string, Record<string, string>, Buffer][] = [
      [
        "not msgpack",
        { origin: "BOS", destination: "MIA", hour: "6", dayOfWeek: "4" },
        Buffer.from([0xc1, 0xff, 0x00, 0x13]),
      ],
      [
        "one value short",
        { origin: "BOS", destination: "MIA", hour: "7", dayOfWeek: "4" },
        pack([0.5]),
      ],
      [
        "wrong types",
        { origin: "BOS", destination: "MIA", hour: "8", dayOfWeek: "4" },
        pack(["lol", null]),
      ],
    ];
    for (const [what, input, bytes] of damaged) {
      const { key, prediction: truth } = await inRedis(input);
      const bucket = t.service.tiers.store.bucketOf(model, key);
      await t.service.redis.hset(bucket, key, bytes);
      t.service.tiers.memory.clear();
      const before = await corruptCount();
      // Twice: through the app, then again (the URL known to the hot front by now).
      for (const round of [1, 2]) {
        const reply = await getJson(predictUrl(input, 5_000));
        expect(reply.status, `${what}, round ${round}`).toBe(200);
        expect(reply.body.prediction).toEqual(truth);
        if (round === 1) {
          expect(reply.body.source).toBe("live");
          // Repaired: the live worker computed the key again and stored it over the damage.
          await eventually(async () =>
            JSON.stringify(await t.service.tiers.store.get(model, key)) === JSON.stringify(truth)
              ? true
              : undefined,
          );
          t.service.tiers.memory.clear();
        } else expect(reply.body.source).toBe("redis");
      }
      // Once or more: a read racing the repair finds the damage too.
      expect(await corruptCount(), what).toBeGreaterThan(before);
      const warning = lines.find((l) => l.key === key && l.bucket === bucket);
      expect(warning, what).toMatchObject({
        level: 40,
        model: "flight-delay",
        version: model.version,
      });
      expect(String(warning?.msg)).toContain("does not decode");
    }

    // In a batch, the damaged item alone is a miss; the others are answered as they are.
    const [, input] = damaged[0] as [string, Record<string, string>, Buffer];
    const clean = { origin: "ATL", destination: "ORD", hour: "3", dayOfWeek: "2" };
    const key = (await getJson(predictUrl(input))).body.key as string;
    await t.service.redis.hset(
      t.service.tiers.store.bucketOf(model, key),
      key,
      Buffer.from([0xc1]),
    );
    t.service.tiers.memory.clear();
    const batch = await postJson(`${t.url}/v1/models/flight-delay/predict`, {
      inputs: [input, clean],
      wait: 5_000,
    });
    expect(batch.status).toBe(200);
    expect(batch.body.results.map((r: { source: string }) => r.source)).toEqual(["live", "redis"]);
    console.log(
      `corrupt entries: ${damaged.length} damaged values read as misses, answered live and replaced; one in a batch of 2 as well`,
    );
  });

  it("checks hits answered from the resident table", async () => {
    const input = { origin: "SFO", destination: "BOS", hour: "9", dayOfWeek: "3" };
    worker = await precomputeWorkerFor(t);
    await precomputeInputs(t, [input]);
    await eventually(async () =>
      t.service.tiers.resident?.table("flight-delay") ? true : undefined,
    );
    t.service.tiers.memory.clear();
    const before = await figures("table");
    const hit = await getJson(predictUrl(input));
    expect(hit.body.source).toBe("table");
    const after = await afterChecks("table", before, 1);
    expect(after.checks - before.checks).toBe(1);
    expect(after.mismatches - before.mismatches).toBe(0);
    console.log(
      `audit, table hit: ${after.checks - before.checks} check, ${after.mismatches - before.mismatches} mismatches`,
    );
  });

  it("audits only redis and table hits, and skips past maxInFlight as busy", async () => {
    const audit = new CacheAudit(t.service.live, createLogger("silent"), {
      rate: 1,
      maxInFlight: 1,
    });
    const keys = ["LAX", "PHX", "LAS"].map((origin) => {
      const encoded = model.encoder.encode({ origin, destination: "MSP", hour: 5, dayOfWeek: 4 });
      if (!encoded.ok) throw new Error("invalid input");
      return encoded.value.key;
    });
    const prediction = { delayProbability: 0.5, expectedDelayMinutes: 10 };
    const before = await figures("redis");
    const memoryBefore = await figures("memory");
    audit.consider(model, keys[0] as string, { source: "memory", prediction });
    audit.consider(model, keys[1] as string, { source: "redis", prediction });
    audit.consider(model, keys[2] as string, { source: "redis", prediction }); // one is pending
    await audit.close();
    const after = await figures("redis");
    expect(after.busy - before.busy).toBe(1);
    expect(after.checks - before.checks).toBe(1);
    expect((await figures("memory")).checks).toBe(memoryBefore.checks);

    const never = new CacheAudit(t.service.live, createLogger("silent"), {
      rate: 0,
      maxInFlight: 1,
    });
    never.consider(model, keys[2] as string, { source: "redis", prediction });
    await never.close();
    expect((await figures("redis")).checks).toBe(after.checks);
  });
});
