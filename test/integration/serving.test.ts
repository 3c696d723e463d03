import { Agent, request } from "node:http";
import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config.ts";
import { claimTtlMs } from "../../src/live/client.ts";
import { batchJobId, claimKey, liveJobId, queuePrefix } from "../../src/live/jobs.ts";
import type { ModelRegistry, ModelVersion } from "../../src/model/registry.ts";
import type { ModelRuntime } from "../../src/model/runtime.ts";
import { loadRegistry } from "../../src/service.ts";
import {
  computedAsOlderApi,
  eventually,
  getJson,
  postJson,
  startTestService,
  type TestService,
  uniquePrefix,
} from "../helpers/service.ts";

let registry: ModelRegistry;
let model: ModelVersion;
let runtime: ModelRuntime;
let t: TestService;
const prefix = uniquePrefix("serving");
const env = {
  PREDCACHE_PREFIX: prefix,
  PREDCACHE_LIVE_BATCH_WAIT_MS: "20",
  PREDCACHE_BATCH_MAX_ITEMS: "50",
  PREDCACHE_BODY_MAX_BYTES: "65536",
};

/** Distinct inputs no other test asks for: a route, an hour and a weekday per test. */
let nextHour = 0;
function input(origin = "SFO", destination = "LAX", dayOfWeek = 1 + (nextHour % 7)) {
  const hour = nextHour++ % 24;
  return { origin, destination, hour: String(hour), dayOfWeek: String(dayOfWeek) };
}
const airports = [
  "ATL",
  "ORD",
  "DFW",
  "DEN",
  "LAX",
  "SFO",
  "PHX",
  "LAS",
  "IAH",
  "DTW",
  "MSP",
  "EWR",
  "SEA",
  "BOS",
];
function query(i: Record<string, string>): string {
  return new URLSearchParams(i).toString();
}

beforeAll(async () => {
  registry = await loadRegistry(loadConfig({}));
  t = await startTestService({ env, registry });
  const version = t.service.active.get("flight-delay");
  model = registry.get("flight-delay", version as string) as ModelVersion;
  runtime = await registry.runtime(model);
});
afterAll(async () => {
  await t.close();
  await registry.close();
});

describe("lookup", () => {
  it("answers a miss from the live model, then the same input from memory", async () => {
    const q = query(input("SFO", "LAX"));
    const before = runtime.stats.rows;
    const first = await getJson(`${t.url}/v1/models/flight-delay/predict?${q}&wait=5000`);
    expect(first.status).toBe(200);
    expect(first.body.source).toBe("live");
    expect(runtime.stats.rows - before).toBe(1);
    const second = await getJson(`${t.url}/v1/models/flight-delay/predict?${q}`);
    expect(second.status).toBe(200);
    expect(second.body.source).toBe("memory");
    expect(second.body.prediction).toEqual(first.body.prediction);
    expect(runtime.stats.rows - before).toBe(1);
    expect(second.body).toMatchObject({
      model: "flight-delay",
      version: model.version,
      outOfDistribution: false,
    });
    expect(second.body.key).toMatch(/^\["SFO","LAX",\d+,\d\]$/);
    expect(typeof second.body.lowConfidence).toBe("boolean");
  });

  it("answers from Redis after a restart with an empty L1, equal to a direct model run", async () => {
    const i = input("ORD", "ATL");
    const first = await getJson(`${t.url}/v1/models/flight-delay/predict?${query(i)}&wait=5000`);
    expect(first.body.source).toBe("live");
    const restarted = await startTestService({ env, registry, liveWorker: false });
    try {
      const again = await getJson(`${restarted.url}/v1/models/flight-delay/predict?${query(i)}`);
      expect(again.status).toBe(200);
      expect(again.body.source).toBe("redis");
      const encoded = model.encoder.encode(i);
      if (!encoded.ok) throw new Error("invalid");
      const [direct] = await runtime.run([encoded.value.row]);
      expect(again.body.prediction).toEqual(direct);
    } finally {
      await restarted.close();
    }
  });

  it("normalizes the input: differently written equal inputs share one key", async () => {
    const a = await getJson(
      `${t.url}/v1/models/flight-delay/predict?origin=den&destination=%20sea%20&hour=07&dayOfWeek=%2B3&wait=5000`,
    );
    const b = await getJson(
      `${t.url}/v1/models/flight-delay/predict?origin=DEN&destination=SEA&hour=7&dayOfWeek=3`,
    );
    expect(a.status).toBe(200);
    expect(b.body.source).toBe("memory");
    expect(b.body.key).toBe(a.body.key);
  });

  it("flags an unknown airport as out of distribution", async () => {
    const r = await getJson(
      `${t.url}/v1/models/flight-delay/predict?origin=QQQ&destination=LAX&hour=9&dayOfWeek=2&wait=5000`,
    );
    expect(r.status).toBe(200);
    expect(r.body.outOfDistribution).toBe(true);
    expect(r.body.outOfDistributionFields).toEqual(["origin"]);
    // Another unknown airport is the same input to the model: same key, no new inference.
    const before = runtime.stats.rows;
    const other = await getJson(
      `${t.url}/v1/models/flight-delay/predict?origin=QQZ&destination=LAX&hour=9&dayOfWeek=2&wait=5000`,
    );
    expect(other.body).toMatchObject({
      key: r.body.key,
      source: "memory",
      outOfDistribution: true,
    });
    expect(other.body.prediction).toEqual(r.body.prediction);
    expect(JSON.parse(r.body.key)[0]).toBe("*");
    expect(runtime.stats.rows - before).toBe(0);
    // A rolling deploy: an older API process still keys the unknown value as asked. The
    // worker computes it (same row) and answers under that key.
    expect(await computedAsOlderApi(t, model, '["QQY","LAX",9,2]')).toEqual(r.body.prediction);
  });

  it("carries a strong ETag and Cache-Control on hits and answers If-None-Match with 304", async () => {
    const q = query(input("LAS", "PHX"));
    await getJson(`${t.url}/v1/models/flight-delay/predict?${q}&wait=5000`);
    const hit = await fetch(`${t.url}/v1/models/flight-delay/predict?${q}`);
    const etag = hit.headers.get("etag");
    expect(etag).toMatch(/^"[0-9a-f]{12}-[0-9a-f]{32}"$/);
    expect(hit.headers.get("cache-control")).toMatch(/max-age=\d+/);
    expect(hit.headers.get("cache-control")).not.toMatch(/immutable/);
    // A version asked by name never changes its answer: caches may keep it for good.
    const pinned = await fetch(
      `${t.url}/v1/models/flight-delay/predict?${q}&version=${model.version}`,
    );
    expect(pinned.headers.get("etag")).toBe(etag);
    expect(pinned.headers.get("cache-control")).toBe("public, max-age=31536000, immutable");
    const conditional = await fetch(`${t.url}/v1/models/flight-delay/predict?${q}`, {
      headers: { "if-none-match": etag as string },
    });
    expect(conditional.status).toBe(304);
    expect(await conditional.text()).toBe("");
    const other = await fetch(`${t.url}/v1/models/flight-delay/predict?${q}`, {
      headers: { "if-none-match": '"nope"' },
    });
    expect(other.status).toBe(200);
    // Compared weakly, as If-None-Match must be: a proxy may have weakened the tag.
    const weak = await fetch(`${t.url}/v1/models/flight-delay/predict?${q}`, {
      headers: { "if-none-match": `W/"x", W/${etag}` },
    });
    expect(weak.status).toBe(304);
    // "*": 304 for an answer at hand, not for one never computed (that one is a miss).
    const any = { headers: { "if-none-match": "*" } };
    expect((await fetch(`${t.url}/v1/models/flight-delay/predict?${q}`, any)).status).toBe(304);
    const fresh = query(input("LAS", "PHX"));
    const miss = await fetch(`${t.url}/v1/models/flight-delay/predict?${fresh}&wait=0`, any);
    expect(miss.status).toBe(202);
    // Once the live model has answered within the wait, an answer exists: 304 as for a hit.
    const unasked = query(input("LAS", "DEN"));
    const live = await fetch(`${t.url}/v1/models/flight-delay/predict?${unasked}&wait=5000`, any);
    expect(live.status).toBe(304);
    expect(live.headers.get("etag")).toMatch(/^"/);
  });

  it("gives two keys two tags, and one key's tag no 304 for the other", async () => {
    // These two keys had one tag when it held a 32-bit hash of the key.
    const [a, b] = [
      query({ origin: "AMA", destination: "CLT", hour: "21", dayOfWeek: "7" }),
      query({ origin: "BTV", destination: "SLC", hour: "12", dayOfWeek: "1" }),
    ].map((q) => `${t.url}/v1/models/flight-delay/predict?${q}&wait=5000`) as [string, string];
    const first = await getJson(a);
    const second = await getJson(b);
    expect([first.status, second.status]).toEqual([200, 200]);
    expect(first.body.prediction).not.toEqual(second.body.prediction);
    const tag = first.headers.get("etag") as string;
    expect(second.headers.get("etag")).not.toBe(tag);
    const crossed = await getJson(b, { headers: { "if-none-match": tag } });
    expect(crossed.status).toBe(200);
    expect(crossed.body.prediction).toEqual(second.body.prediction);
  });
});

describe("misses", () => {
  it("answers 202 with a job to poll when asked not to wait, and the poll gives the answer", async () => {
    const q = query(input("SEA", "BOS"));
    const first = await getJson(`${t.url}/v1/models/flight-delay/predict?${q}&wait=0`);
    expect(first.status).toBe(202);
    const location = first.headers.get("location");
    expect(location).toMatch(/^\/v1\/jobs\/flight-delay\.[0-9a-f]{12}\.[0-9a-f]{32}$/);
    expect(first.body.job.url).toBe(location);
    expect(first.headers.get("retry-after")).toBe("1");
    const done = await eventually(async () => {
      const poll = await getJson(`${t.url}${location}`);
      return poll.status === 200 ? poll : undefined;
    });
    expect(done.body.status).toBe("completed");
    expect(done.body.source).toBe("live");
    const hit = await getJson(`${t.url}/v1/models/flight-delay/predict?${q}`);
    expect(hit.body.prediction).toEqual(done.body.prediction);
    // The poll's answer has the lookup's validator: revalidating it costs no body.
    const etag = done.headers.get("etag") as string;
    expect(etag).toBe(hit.headers.get("etag"));
    const again = await fetch(`${t.url}${location}`, { headers: { "if-none-match": etag } });
    expect(again.status).toBe(304);
    expect(await again.text()).toBe("");
  });

  it("never polls a job as 202 'completed': a poll that sees it finish gives the answer", async () => {
    // Polled back to back while the worker completes them: the job read and its state
    // read straddle the completion in some polls.
    const contradictions: unknown[] = [];
    await Promise.all(
      airports.slice(0, 8).map(async (origin) => {
        const i = input(origin, "BOS");
        const pending = await getJson(`${t.url}/v1/models/flight-delay/predict?${query(i)}&wait=0`);
        if (pending.status !== 202) return;
        for (;;) {
          const r = await getJson(`${t.url}${pending.body.job.url}`);
          if (r.status === 202 && r.body.status === "completed") contradictions.push(r.body);
          if (r.status !== 202) {
            expect(r.status).toBe(200);
            expect(r.body.prediction).toBeTruthy();
            return;
          }
        }
      }),
    );
    expect(contradictions).toEqual([]);
  });

  it("answers an unknown job with 404", async () => {
    const r = await getJson(`${t.url}/v1/jobs/flight-delay.${model.version}.${"0".repeat(32)}`);
    expect(r.status).toBe(404);
    expect(r.body.error.code).toBe("not_found");
    expect((await getJson(`${t.url}/v1/jobs/garbage`)).status).toBe(404);
  });

  it("coalesces 200 concurrent identical misses into exactly one inference", async () => {
    const q = query(input("MSP", "EWR"));
    const before = runtime.stats.rows;
    const replies = await Promise.all(
      Array.from({ length: 200 }, () =>
        getJson(`${t.url}/v1/models/flight-delay/predict?${q}&wait=5000`),
      ),
    );
    expect(replies.every((r) => r.status === 200)).toBe(true);
    expect(runtime.stats.rows - before).toBe(1);
    expect(new Set(replies.map((r) => JSON.stringify(r.body.prediction))).size).toBe(1);
    console.log(`coalescing: 200 identical misses → ${runtime.stats.rows - before} inference`);
  });

  it("computes identical misses once across API processes, and either process can poll the job", async () => {
    // A second API process on the same Redis and prefix, with no worker of its own.
    const other = await startTestService({ env, registry, liveWorker: false });
    try {
      const q = query(input("MSP", "DTW"));
      const before = runtime.stats.rows;
      const replies = await Promise.all(
        Array.from({ length: 100 }, (_, i) =>
          getJson(`${(i % 2 ? other : t).url}/v1/models/flight-delay/predict?${q}&wait=5000`),
        ),
      );
      // Late arrivals may find the answer stored already; none may compute it again.
      expect(replies.filter((r) => r.status !== 200)).toEqual([]);
      expect(replies.some((r) => r.body.source === "live")).toBe(true);
      expect(runtime.stats.rows - before).toBe(1);
      console.log(
        `coalescing across 2 API processes: 100 identical misses → ${runtime.stats.rows - before} inference`,
      );

      const pending = await getJson(
        `${other.url}/v1/models/flight-delay/predict?${query(input("MSP", "ORD"))}&wait=0`,
      );
      expect(pending.status).toBe(202);
      const done = await eventually(async () => {
        const r = await getJson(`${t.url}${pending.body.job.url}`);
        return r.status === 200 ? r : undefined;
      });
      expect(done.body).toMatchObject({ status: "completed", source: "live" });
    } finally {
      await other.close();
    }
  });

  /**
   * How another process may have claimed: with a batch id naming the claims' time to live
   * (set by its own settings, shorter or longer than this one's), or with a bare batch id
   * (a process from before that), which is aged as such a process set it: for as long as
   * its answer would be pollable (keep + the longest wait).
   */
  const claimForms = [
    { form: "a claim of this process's settings", ttlMs: undefined },
    { form: "a claim with a shorter time to live", ttlMs: 15_000 },
    { form: "a claim with a longer time to live", ttlMs: 3_605_000 },
    { form: "a bare batch id (older process)", ttlMs: "bare" },
  ] as const;

  /**
   * Another process's claim on a key, for a batch it has not queued (yet): what a process
   * sees between that process's claim and its queue.add, or forever when it stopped there.
   */
  async function foreignClaim(
    i: Record<string, string>,
    ttlMs: number | "bare" | undefined,
  ): Promise<{ key: string; batch: string }> {
    const encoded = model.encoder.encode(i);
    if (!encoded.ok) throw new Error("bad test input");
    const { key } = encoded.value;
    const config = loadConfig(env);
    const settings = { keepFinishedSeconds: config.jobKeepSeconds, maxWaitMs: config.waitMaxMs };
    const older = config.jobKeepSeconds * 1000 + config.waitMaxMs;
    const ttl = typeof ttlMs === "number" ? ttlMs : ttlMs === "bare" ? older : claimTtlMs(settings);
    const batch =
      ttlMs === "bare"
        ? batchJobId(model.name, model.version)
        : batchJobId(model.name, model.version, ttl);
    const claim = claimKey(queuePrefix(prefix), liveJobId(model.name, model.version, key));
    await t.service.redis.set(claim, batch, "PX", ttl);
    return { key, batch };
  }

  it.each(claimForms)(
    "waits for a batch another process claimed and queues a moment later; its job polls as waiting meanwhile ($form)",
    async ({ ttlMs }) => {
      const i = input("DEN", "PHX");
      const { key, batch } = await foreignClaim(i, ttlMs);
      const before = runtime.stats.rows;
      const url = `${t.url}/v1/models/flight-delay/predict?${query(i)}`;
      const pending = await getJson(`${url}&wait=0`);
      expect(pending.status).toBe(202);
      const poll = await getJson(`${t.url}${pending.body.job.url}`);
      expect(poll.status).toBe(202);
      expect(poll.body).toMatchObject({ status: "pending", state: "queued" });
      const waiting = getJson(`${url}&wait=5000`);
      await new Promise((r) => setTimeout(r, 300));
      await t.service.live.queue.add(
        "predict",
        { model: model.name, version: model.version, keys: [key] },
        { jobId: batch, removeOnComplete: { age: 60 } },
      );
      const answered = await waiting;
      expect(answered.status).toBe(200);
      expect(answered.body.source).toBe("live");
      const done = await getJson(`${t.url}${pending.body.job.url}`);
      expect(done.body).toMatchObject({ status: "completed", key });
      expect(runtime.stats.rows - before).toBe(1);
    },
  );

  it.each(claimForms)(
    "computes the keys of a batch another process claimed and never queued ($form)",
    async ({ ttlMs }) => {
      const i = input("LAS", "IAH");
      const { batch } = await foreignClaim(i, ttlMs);
      const before = runtime.stats.rows;
      const started = Date.now();
      const r = await getJson(`${t.url}/v1/models/flight-delay/predict?${query(i)}&wait=5000`);
      expect(r.status).toBe(200);
      expect(r.body.source).toBe("live");
      expect(runtime.stats.rows - before).toBe(1);
      // Not before the claim was old enough that its holder would have queued it.
      expect(Date.now() - started).toBeGreaterThanOrEqual(1_900);
      expect(await t.service.live.queue.getJob(batch)).toBeUndefined();
    },
  );

  it("micro-batches concurrent distinct misses into fewer runs than rows", async () => {
    const inputs = airports.flatMap((o) =>
      airports
        .filter((d) => d !== o)
        .slice(0, 5)
        .map((d) => ({ origin: o, destination: d, hour: "4", dayOfWeek: "6" })),
    );
    const runsBefore = runtime.stats.runs;
    const rowsBefore = runtime.stats.rows;
    const replies = await Promise.all(
      inputs.map((i) => getJson(`${t.url}/v1/models/flight-delay/predict?${query(i)}&wait=5000`)),
    );
    expect(replies.every((r) => r.status === 200 && r.body.source === "live")).toBe(true);
    const runs = runtime.stats.runs - runsBefore;
    const rows = runtime.stats.rows - rowsBefore;
    expect(rows).toBe(inputs.length);
    expect(runs).toBeLessThan(rows / 2);
    console.log(`micro-batching: ${rows} distinct misses → ${runs} inference runs`);
  });
});

describe("bounded live queue", () => {
  it("refuses misses with 503 and Retry-After once the queue holds PREDCACHE_LIVE_QUEUE_MAX", async () => {
    // Its own prefix and no live worker: queued misses stay queued.
    const env = { PREDCACHE_LIVE_QUEUE_MAX: "2", PREDCACHE_PREFIX: uniquePrefix("bounded") };
    const bounded = await startTestService({ env, registry, liveWorker: false });
    // A second API process on that queue, which has none of the first's misses in flight.
    const second = await startTestService({ env, registry, liveWorker: false });
    try {
      const ask = (hour: number) =>
        getJson(
          `${bounded.url}/v1/models/flight-delay/predict?origin=BOS&destination=SEA&hour=${hour}&dayOfWeek=2&wait=0`,
        );
      expect((await ask(1)).status).toBe(202);
      expect((await ask(2)).status).toBe(202);
      await new Promise((r) => setTimeout(r, 150)); // past the 100 ms the depth is trusted
      const refused = await ask(3);
      expect(refused.status).toBe(503);
      expect(refused.headers.get("retry-after")).toBe("1");
      expect(refused.body.error).toMatchObject({
        code: "overloaded",
        details: { depth: 2, max: 2 },
      });
      // An input already queued is not a new miss: it still gets its job, from this
      // process or another, single or in a batch, however full the queue.
      const again = await ask(1);
      expect(again.status).toBe(202);
      const elsewhere = await getJson(
        `${second.url}/v1/models/flight-delay/predict?origin=BOS&destination=SEA&hour=1&dayOfWeek=2&wait=0`,
      );
      expect(elsewhere.status).toBe(202);
      expect(elsewhere.headers.get("location")).toBe(again.headers.get("location"));
      const batch = await postJson(`${second.url}/v1/models/flight-delay/predict`, {
        inputs: [
          { origin: "BOS", destination: "SEA", hour: 2, dayOfWeek: 2 },
          { origin: "BOS", destination: "SEA", hour: 4, dayOfWeek: 2 },
        ],
        wait: 0,
      });
      expect(batch.body.results.map((r: { status: number }) => r.status)).toEqual([202, 503]);
    } finally {
      await second.close();
      await bounded.close();
    }
  });
});

describe("live batches while one is in flight", () => {
  it("keep gathering misses into one job, but never past what a request will wait", async () => {
    // No live worker: every job stays in flight. A 100 ms gather wait caps holds at 2 s,
    // and the patient misses (wait 4 s) allow 2 s: a request that ends a hold early is
    // answered long before that.
    const api = await startTestService({
      env: { PREDCACHE_LIVE_BATCH_WAIT_MS: "100" },
      registry,
      liveWorker: false,
    });
    const ask = (hour: number, day: number, wait: number) =>
      getJson(
        `${api.url}/v1/models/flight-delay/predict?origin=MIA&destination=ORD&hour=${hour}&dayOfWeek=${day}&wait=${wait}`,
      );
    const jobs = async () =>
      (await api.service.live.queue.getJobs(["waiting", "prioritized"]))
        .map((j) => j.data.keys.length)
        .sort((a, b) => a - b);
    const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
    const timed = async (reply: Promise<{ status: number }>) => {
      const started = performance.now();
      const { status } = await reply;
      return { status, ms: performance.now() - started };
    };
    const patient: Promise<{ status: number }>[] = [];
    try {
      expect((await ask(0, 1, 0)).status).toBe(202);
      expect(await jobs()).toEqual([1]);

      // Five misses 15 ms apart, then one with wait=0 (a new input): one job of six.
      for (let i = 1; i <= 5; i++) {
        patient.push(ask(i, 2, 4_000));
        await pause(15);
      }
      const now = await timed(ask(6, 2, 0));
      expect(now.status).toBe(202);
      expect(await jobs()).toEqual([1, 6]);

      // Three held (past their 100 ms wait), then wait=0 for an input already held.
      for (let i = 1; i <= 3; i++) patient.push(ask(i, 3, 4_000));
      await pause(200);
      const coalesced = await timed(ask(1, 3, 0));
      expect(coalesced.status).toBe(202);
      expect(await jobs()).toEqual([1, 3, 6]);

      // Two held, then a new input asking to wait 300 ms: the hold gives way in time.
      for (let i = 1; i <= 2; i++) patient.push(ask(i, 4, 4_000));
      await pause(200);
      const short = await timed(ask(3, 4, 300));
      expect(short.status).toBe(202);
      expect(await jobs()).toEqual([1, 3, 3, 6]);

      console.log(
        `held batches: 202 for wait=0 in ${now.ms.toFixed(0)} ms, for wait=0 on a held input in ` +
          `${coalesced.ms.toFixed(0)} ms, for wait=300 in ${short.ms.toFixed(0)} ms (holds up to 2 s)`,
      );
      for (const { ms } of [now, coalesced, short]) expect(ms).toBeLessThan(1_000);
      expect((await Promise.all(patient)).map((r) => r.status)).toEqual(Array(10).fill(202));
    } finally {
      await Promise.allSettled(patient);
      await api.close();
    }
  });
});

describe("coalesced waits", () => {
  it("gives a request that joins a miss in flight its own wait, not what is left of the first's", async () => {
    // No live worker: every miss waits out its wait, then 202.
    const api = await startTestService({
      env: { PREDCACHE_WAIT_MAX_MS: "1000" },
      registry,
      liveWorker: false,
    });
    const ask = (wait: number) =>
      getJson(
        `${api.url}/v1/models/flight-delay/predict?origin=TUL&destination=TYS&hour=11&dayOfWeek=5&wait=${wait}`,
      );
    try {
      expect((await ask(0)).status).toBe(202);
      await new Promise((r) => setTimeout(r, 700));
      const started = performance.now();
      const joined = await ask(1_000);
      const waited = performance.now() - started;
      expect(joined.status).toBe(202);
      // The first asker's wait bound would have ended 300 ms in.
      expect(waited).toBeGreaterThan(900);
      console.log(
        `coalesced wait: joined 700 ms after a wait=0 miss, waited its own ${waited.toFixed(0)} ms`,
      );
    } finally {
      await api.close();
    }
  });
});

describe("batch lookup", () => {
  it("answers every item in order: hits, live answers and per-item errors", async () => {
    const hitInput = input("IAH", "DTW");
    await getJson(`${t.url}/v1/models/flight-delay/predict?${query(hitInput)}&wait=5000`);
    const missInput = input("DTW", "IAH");
    const r = await postJson(`${t.url}/v1/models/flight-delay/predict`, {
      inputs: [hitInput, { origin: "SFO" }, missInput, { ...hitInput, hour: "99" }, 1, null, []],
      wait: 5000,
    });
    expect(r.status).toBe(200);
    const [hit, missing, live, outOfRange, ...notObjects] = r.body.results;
    // An item that is no object fails its item only, as an invalid one does.
    for (const item of notObjects) {
      expect(item.status).toBe(422);
      expect(item.error.code).toBe("invalid_input");
      expect(item.error.details.issues).toEqual([
        { field: "", code: "wrong_type", message: "an input must be a JSON object of features" },
      ]);
    }
    expect(hit).toMatchObject({ status: 200, source: "memory" });
    expect(missing.status).toBe(422);
    expect(missing.error.details.issues.map((i: { field: string }) => i.field)).toEqual([
      "destination",
      "hour",
      "dayOfWeek",
    ]);
    expect(live).toMatchObject({ status: 200, source: "live" });
    expect(outOfRange.status).toBe(422);
    expect(outOfRange.error.details.issues[0]).toMatchObject({
      field: "hour",
      code: "out_of_range",
    });
  });

  it("reads L1 misses from Redis in one go and queues the misses together", async () => {
    const inputs = Array.from({ length: 20 }, () => input("BOS", "SEA"));
    const warm = await postJson(`${t.url}/v1/models/flight-delay/predict`, { inputs, wait: 5000 });
    expect(warm.body.results.every((x: { status: number }) => x.status === 200)).toBe(true);
    const cold = await startTestService({ env, registry, liveWorker: false });
    try {
      const r = await postJson(`${cold.url}/v1/models/flight-delay/predict`, { inputs });
      expect(r.body.results.map((x: { source: string }) => x.source)).toEqual(
        inputs.map(() => "redis"),
      );
    } finally {
      await cold.close();
    }
  });

  it("gives 202 items with jobs when the batch may not wait", async () => {
    const r = await postJson(`${t.url}/v1/models/flight-delay/predict`, {
      inputs: [input("EWR", "MSP")],
      wait: 0,
    });
    const item = r.body.results[0];
    expect(item).toMatchObject({ status: 202, model: "flight-delay", version: r.body.version });
    expect(item.key).toMatch(/\S/);
    expect(item.job.url).toMatch(/^\/v1\/jobs\//);
    // The same lookup, polled as a single one's 202 would be, names the same key.
    expect((await getJson(`${t.url}${item.job.url}`)).body.key).toBe(item.key);
  });
});

describe("errors", () => {
  it("answers an unknown model with 404", async () => {
    const r = await getJson(`${t.url}/v1/models/nope/predict?origin=SFO`);
    expect(r.status).toBe(404);
    expect(r.body.error.code).toBe("model_not_found");
  });

  it("says to HEAD the length of the body a GET gets, for errors and 202s too", async () => {
    const predict = `${t.url}/v1/models/flight-delay/predict`;
    // [HEAD, GET]: a 202's GET asks another new input (this one's would be a hit by then),
    // whose reply has the same length (job ids have one length).
    for (const [asked, got] of [
      [`${predict}?origin=SFO&hour=99`, `${predict}?origin=SFO&hour=99`], // 422
      [`${t.url}/v1/models/nope/predict?x=1`, `${t.url}/v1/models/nope/predict?x=1`], // 404
      [`${t.url}/v1/models/flight-delay`, `${t.url}/v1/models/flight-delay`], // the model
      [
        `${predict}?${query(input("MSP", "DTW"))}&wait=0`,
        `${predict}?${query(input("EWR", "DTW"))}&wait=0`,
      ], // 202
    ] as const) {
      const head = await fetch(asked, { method: "HEAD" });
      expect(await head.text()).toBe("");
      const get = await fetch(got);
      expect(get.status, asked).toBe(head.status);
      const length = Buffer.byteLength(await get.text());
      expect(head.headers.get("content-length"), asked).toBe(String(length));
    }
    // A job's poll, pending and done: its HEAD says the length its GET's body has.
    const pending = await getJson(`${predict}?${query(input("MSP", "SEA"))}&wait=0`);
    const job = `${t.url}${pending.body.job.url}`;
    for (let i = 0; i < 2; i++) {
      const get = await fetch(job);
      const text = await get.text();
      const head = await fetch(job, { method: "HEAD" });
      if (head.status !== get.status) continue; // done in between: the next round compares
      expect(head.headers.get("content-length"), `${get.status}`).toBe(
        String(Buffer.byteLength(text)),
      );
      await getJson(`${predict}?${query(input("MSP", "SEA"))}&wait=5000`);
    }
  });

  it("answers an unknown version with 404 naming the versions there are", async () => {
    const r = await getJson(
      `${t.url}/v1/models/flight-delay/predict?origin=SFO&destination=LAX&hour=7&dayOfWeek=1&version=nope`,
    );
    expect(r.status).toBe(404);
    expect(r.body.error.code).toBe("version_not_found");
    expect(r.body.error.message).toMatch(/has no version "nope"/);
    expect(r.body.error.details.versions).toContain(model.version);
  });

  it("answers invalid input with 422 listing every offending field", async () => {
    const r = await getJson(
      `${t.url}/v1/models/flight-delay/predict?origin=SFO&hour=25&dayOfWeek=x&color=red`,
    );
    expect(r.status).toBe(422);
    expect(r.body.error.code).toBe("invalid_input");
    expect(r.body.error.details.issues.map((i: { field: string }) => i.field).sort()).toEqual([
      "color",
      "dayOfWeek",
      "destination",
      "hour",
    ]);
    // Thousands of made-up parameters: the features' issues all, unknown fields up to 20.
    const junk = Array.from({ length: 1500 }, (_, i) => `x${i}=1`).join("&");
    const flood = await getJson(`${t.url}/v1/models/flight-delay/predict?origin=SFO&${junk}`);
    expect(flood.status).toBe(422);
    const fields = flood.body.error.details.issues.map((i: { field: string }) => i.field);
    expect(fields).toEqual(expect.arrayContaining(["destination", "hour", "dayOfWeek"]));
    expect(fields).toHaveLength(23);
    expect(flood.body.error.details.omittedUnknownFields).toBe(1480);
    // A field named __proto__, or with no name, is an unknown field on every path.
    const valid = "origin=SFO&destination=LAX&hour=3&dayOfWeek=1";
    for (const [extra, field] of [
      ["__proto__=x", "__proto__"],
      ["=x", ""],
    ] as const) {
      const get = await getJson(`${t.url}/v1/models/flight-delay/predict?${valid}&${extra}`);
      expect(get.status, extra).toBe(422);
      expect(get.body.error.details.issues).toEqual([
        expect.objectContaining({ field, code: "unknown_field" }),
      ]);
    }
    const batch = await getJson(`${t.url}/v1/models/flight-delay/predict`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: `{"inputs":[{"origin":"SFO","destination":"LAX","hour":3,"dayOfWeek":1,"__proto__":"x"}]}`,
    });
    expect(batch.body.results[0]).toMatchObject({
      status: 422,
      error: { details: { issues: [expect.objectContaining({ field: "__proto__" })] } },
    });
  });

  it("answers a repeated parameter with 422 and a bad wait with 400", async () => {
    const repeated = await getJson(
      `${t.url}/v1/models/flight-delay/predict?origin=SFO&origin=LAX&destination=SEA&hour=1&dayOfWeek=1`,
    );
    expect(repeated.status).toBe(422);
    expect(repeated.body.error.details.issues[0]).toMatchObject({
      field: "origin",
      code: "wrong_type",
      message: "origin must be one value, not a list of 2",
    });
    for (const bad of ["-5", "2.5", "0x10", "Infinity", "1e"]) {
      const wait = await getJson(
        `${t.url}/v1/models/flight-delay/predict?${query(input())}&wait=${bad}`,
      );
      expect(wait.status, bad).toBe(400);
      expect(wait.body.error.code).toBe("bad_request");
      expect(wait.body.error.message).toMatch(/whole number of milliseconds/);
    }
    // With the input's own problems, a bad wait is one more of them: every one at once.
    const both = await getJson(`${t.url}/v1/models/flight-delay/predict?origin=SFO&wait=abc`);
    expect(both.status).toBe(422);
    expect(both.body.error.details.issues.map((i: { field: string }) => i.field).sort()).toEqual([
      "dayOfWeek",
      "destination",
      "hour",
      "wait",
    ]);
    for (const bad of [1.5, "1.5", true, "", { ms: 5 }]) {
      const batch = await postJson(`${t.url}/v1/models/flight-delay/predict`, {
        inputs: [input()],
        wait: bad,
      });
      expect(batch.status, JSON.stringify(bad)).toBe(400);
      expect(batch.body.error.message).toMatch(/wait must be a whole number of milliseconds/);
    }
    // Any whole number is a wait, read as an integer feature is: past the cap (5 s here),
    // the cap, however many digits.
    for (const long of [
      "1000000000",
      "99999999999999999999",
      "%2B0",
      "1e400",
      "2.5e2",
      "250.0",
      "%20250",
      "-0",
    ]) {
      const hit = await getJson(
        `${t.url}/v1/models/flight-delay/predict?origin=SFO&destination=LAX&hour=7&dayOfWeek=1&wait=${long}`,
      );
      expect(hit.status, long).toBe(200);
    }
    // Which version or wait a repeated one means is unclear: refused, not first-wins.
    const twice = await getJson(
      `${t.url}/v1/models/flight-delay/predict?${query(input())}&wait=1&wait=2&version=${model.version}&version=${model.version}`,
    );
    expect(twice.status).toBe(400);
    expect(twice.body.error.details.repeated).toEqual(["wait", "version"]);
    const empty = await getJson(
      `${t.url}/v1/models/flight-delay/predict?${query(input())}&version=`,
    );
    expect(empty.status).toBe(400);
    // Not percent-encoding, or not UTF-8: refused, not taken as written.
    const q = query({ ...input(), origin: "SFO" }).replace("SFO", "%");
    for (const bad of [q, q.replace("%", "%ff"), q.replace("%", "S%2")]) {
      const r = await getJson(`${t.url}/v1/models/flight-delay/predict?${bad}`);
      expect(r.status, bad).toBe(400);
      expect(r.body.error.message).toMatch(/percent-encoding/);
    }
    // A control character is no airport, known or not.
    const nul = await getJson(
      `${t.url}/v1/models/flight-delay/predict?${query({ ...input(), origin: "SF\u0000O" })}`,
    );
    expect(nul.status).toBe(422);
    expect(nul.body.error.details.issues[0].code).toBe("control_character");
  });

  it("answers a method a path has no route for with 405 and Allow, OPTIONS with 204, an unknown path with 404", async () => {
    const predict = await getJson(`${t.url}/v1/models/flight-delay/predict`, { method: "PUT" });
    expect(predict.status).toBe(405);
    expect(predict.body.error.code).toBe("method_not_allowed");
    expect(predict.headers.get("allow")).toBe("GET, HEAD, POST, OPTIONS");
    const job = await getJson(`${t.url}/v1/jobs/x`, { method: "DELETE" });
    expect(job.status).toBe(405);
    expect(job.headers.get("allow")).toBe("GET, HEAD, OPTIONS");
    // OPTIONS (not a CORS preflight) asks what a path serves: 204 and Allow, on any path.
    for (const [path, allow] of [
      ["/v1/models/flight-delay/predict", "GET, HEAD, POST, OPTIONS"],
      ["/healthz", "GET, HEAD, OPTIONS"],
    ]) {
      const options = await fetch(`${t.url}${path}`, { method: "OPTIONS" });
      expect(options.status).toBe(204);
      expect(options.headers.get("allow")).toBe(allow);
      expect(await options.text()).toBe("");
    }
    expect((await fetch(`${t.url}/v1/nowhere`, { method: "OPTIONS" })).status).toBe(404);
    const nowhere = await getJson(`${t.url}/v1/nowhere`, { method: "PUT" });
    expect(nowhere.status).toBe(404);
    expect(nowhere.body.error.code).toBe("not_found");
  });

  it("answers too many batch items and too large a body with 413", async () => {
    const many = await postJson(`${t.url}/v1/models/flight-delay/predict`, {
      inputs: Array.from({ length: 51 }, () => input()),
    });
    expect(many.status).toBe(413);
    expect(many.body.error).toMatchObject({
      code: "payload_too_large",
      details: { max: 50, got: 51 },
    });
    const big = await postJson(`${t.url}/v1/models/flight-delay/predict`, {
      inputs: [{ origin: "x".repeat(70_000) }],
    });
    expect(big.status).toBe(413);
    expect(big.body.error.code).toBe("payload_too_large");
    // To a model that does not exist: that is said first.
    const nowhere = await postJson(`${t.url}/v1/models/nope/predict`, {
      inputs: [{ origin: "x".repeat(70_000) }],
    });
    expect(nowhere.status).toBe(404);
    expect(nowhere.body.error.code).toBe("model_not_found");
    // The unread rest of that body ends the connection: the 413 says so, so a client
    // keeping connections alive sends its next request on another one, not into a closed one.
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const send = (method: string, path: string, body?: string, type = "application/json") =>
      new Promise<{ status: number; connection: string | undefined }>((done, fail) => {
        const { port } = new URL(t.url);
        const req = request(
          {
            host: "127.0.0.1",
            port,
            method,
            path,
            agent,
            headers: { "content-type": type },
          },
          (res) => {
            res.resume();
            res.on("end", () =>
              done({ status: res.statusCode ?? 0, connection: res.headers.connection }),
            );
          },
        );
        req.on("error", fail);
        req.end(body);
      });
    try {
      const refused = await send(
        "POST",
        "/v1/models/flight-delay/predict",
        JSON.stringify({ inputs: [{ origin: "x".repeat(200_000) }] }),
      );
      expect(refused).toEqual({ status: 413, connection: "close" });
      expect((await send("GET", "/healthz")).status).toBe(200);
      // A small body refused unread (an unknown model, a body not JSON) is read to its end
      // and dropped: the connection is kept, as a pooled client expects.
      const small = JSON.stringify({ inputs: [{ origin: "SFO" }] });
      expect(await send("POST", "/v1/models/nope/predict", small)).toEqual({
        status: 404,
        connection: "keep-alive",
      });
      expect(await send("POST", "/v1/models/flight-delay/predict", small, "text/plain")).toEqual({
        status: 415,
        connection: "keep-alive",
      });
      expect(await send("GET", "/healthz")).toEqual({ status: 200, connection: "keep-alive" });
    } finally {
      agent.destroy();
    }
    // A URL over node's 16 KiB header limit: a JSON 431, not cached.
    const long = await getJson(
      `${t.url}/v1/models/flight-delay/predict?origin=SFO&x=${"a".repeat(17_000)}`,
    );
    expect(long.status).toBe(431);
    expect(long.body.error.code).toBe("headers_too_large");
    expect(long.headers.get("cache-control")).toBe("no-store");
  });

  it("with Expect: 100-continue, a body refused on its headers is refused before it is sent", async () => {
    const expecting = (path: string, body: string) =>
      new Promise<{ status: number; continued: boolean; connection?: string }>((done, fail) => {
        const { port } = new URL(t.url);
        let continued = false;
        const req = request(
          {
            host: "127.0.0.1",
            port,
            method: "POST",
            path,
            headers: {
              "content-type": "application/json",
              "content-length": Buffer.byteLength(body),
              expect: "100-continue",
            },
          },
          (res) => {
            res.resume();
            res.on("end", () => {
              req.destroy();
              const connection = res.headers.connection;
              done({
                status: res.statusCode ?? 0,
                continued,
                ...(connection ? { connection } : {}),
              });
            });
          },
        );
        // The body goes only once the server asks for it.
        req.on("continue", () => {
          continued = true;
          req.end(body);
        });
        req.on("error", fail);
        req.flushHeaders();
      });
    const predict = "/v1/models/flight-delay/predict";
    const big = JSON.stringify({ inputs: [{ origin: "x".repeat(200_000) }] });
    expect(await expecting(predict, big)).toEqual({
      status: 413,
      continued: false,
      connection: "close",
    });
    expect(await expecting("/v1/models/nope/predict", big)).toEqual({
      status: 404,
      continued: false,
      connection: "close",
    });
    // Small, but never sent: what would come next on the connection is not read as it.
    expect(await expecting("/v1/models/nope/predict", '{"inputs":[{}]}')).toEqual({
      status: 404,
      continued: false,
      connection: "close",
    });
    const fine = JSON.stringify({ inputs: [input()], wait: 3000 });
    expect(await expecting(predict, fine)).toMatchObject({ status: 200, continued: true });
    // Nothing to hold back: the connection stays open after the answer.
    const { port } = new URL(t.url);
    const bodiless = await new Promise<string | undefined>((done, fail) => {
      const req = request(
        { host: "127.0.0.1", port, path: "/v1/models", headers: { expect: "100-continue" } },
        (res) => {
          res.resume();
          res.on("end", () => done(res.headers.connection));
        },
      );
      req.on("error", fail);
      req.end();
    });
    expect(bodiless).toBe("keep-alive");
  });

  it("answers requests node:http or its adapter refuse with a JSON error too", async () => {
    const raw = (text: string) =>
      new Promise<string>((done, fail) => {
        const { port } = new URL(t.url);
        const socket = connect(Number(port), "127.0.0.1", () => socket.end(text));
        let got = "";
        socket.setEncoding("utf8");
        socket.on("data", (chunk: string) => {
          got += chunk;
        });
        socket.on("end", () => done(got));
        socket.on("error", fail);
      });
    for (const [text, status, code] of [
      ["OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400, "bad_request"],
      [
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        405,
        "method_not_allowed",
      ],
      // Two Hosts: which one a proxy in front read cannot be known.
      [
        "GET /v1/models HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
        400,
        "bad_request",
      ],
      // No Host, and malformed HTTP.
      ["GET /v1/models HTTP/1.1\r\nConnection: close\r\n\r\n", 400, "bad_request"],
      ["GET /v1/models HTTP/1.1\r\nHost x\r\n\r\n", 400, "bad_request"],
      // A method no one knows: not implemented, rather than malformed.
      ["BREW /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", 501, "not_implemented"],
      // An expectation the server cannot meet (only 100-continue is one it knows).
      [
        "POST /v1/models/flight-delay/predict HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\n{}",
        417,
        "expectation_failed",
      ],
    ] as const) {
      const reply = await raw(text);
      expect(reply.startsWith(`HTTP/1.1 ${status} `), reply).toBe(true);
      // Every answer has an id, to find its log line by.
      expect(reply, text).toMatch(/\r\nX-Request-Id: [0-9a-f]{16}\r\n/i);
      const body = reply.slice(reply.indexOf("\r\n\r\n") + 4);
      expect(JSON.parse(body.replace(/^[0-9a-f]+\r\n|\r\n0\r\n\r\n$/g, "")).error.code).toBe(code);
    }
  });

  it("answers malformed JSON and wrong body shapes with 400", async () => {
    const malformed = await getJson(`${t.url}/v1/models/flight-delay/predict`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{nope",
    });
    expect(malformed.status).toBe(400);
    const shape = await postJson(`${t.url}/v1/models/flight-delay/predict`, { inputs: "SFO" });
    expect(shape.status).toBe(400);
    expect(shape.body.error.code).toBe("bad_request");
    // Nothing is silently ignored: an unknown body field, or a parameter other than version.
    const inputs = [input()];
    const extra = await postJson(`${t.url}/v1/models/flight-delay/predict`, {
      inputs,
      version: model.version,
    });
    expect(extra.status).toBe(400);
    expect(extra.body.error.message).toMatch(/\?version=/);
    const param = await postJson(`${t.url}/v1/models/flight-delay/predict?wait=0`, { inputs });
    expect(param.status).toBe(400);
    expect(param.body.error.details.unknown).toEqual(["wait"]);
    // A parameter with no name is one too.
    for (const query of ["?=x", "?=", `?version=${model.version}&=1`]) {
      const nameless = await postJson(`${t.url}/v1/models/flight-delay/predict${query}`, {
        inputs,
      });
      expect(nameless.status, query).toBe(400);
      expect(nameless.body.error.details.unknown).toEqual([""]);
    }
    // Bytes that are not UTF-8: refused, as in a query string (not read as U+FFFD).
    const bytes = Buffer.concat([
      Buffer.from('{"inputs":[{"origin":"'),
      Buffer.from([0xff, 0xfe]),
      Buffer.from('","destination":"LAX","hour":7,"dayOfWeek":1}]}'),
    ]);
    const notUtf8 = await getJson(`${t.url}/v1/models/flight-delay/predict`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: bytes,
    });
    expect(notUtf8.status).toBe(400);
    expect(notUtf8.body.error.message).toMatch(/UTF-8/);
    // A wait past the cap is shortened to it, as in a query string, not refused.
    const long = await postJson(`${t.url}/v1/models/flight-delay/predict`, {
      inputs,
      wait: 1_000_000_000_000,
    });
    expect(long.status).toBe(200);
  });

  it("answers a batch body that is not sent as JSON with 415", async () => {
    const body = JSON.stringify({ inputs: [input()], wait: 0 });
    const url = `${t.url}/v1/models/flight-delay/predict`;
    for (const headers of [
      { "content-type": "text/plain" },
      { "content-type": "application/x-www-form-urlencoded" },
      { "content-type": "application/json", "content-encoding": "gzip" },
      // JSON is UTF-8: a body said to be in another charset would be misread.
      { "content-type": "application/json; charset=iso-8859-1" },
      { "content-type": 'application/json;charset="UTF-16"' },
    ]) {
      const r = await getJson(url, { method: "POST", headers, body });
      expect(r.status, JSON.stringify(headers)).toBe(415);
      expect(r.body.error.code).toBe("unsupported_media_type");
      // An encoded body is told which coding is taken instead (none).
      expect(r.headers.get("accept-encoding")).toBe(
        "content-encoding" in headers ? "identity" : null,
      );
    }
    for (const type of [
      "application/json; charset=utf-8",
      'application/json;CHARSET="UTF-8"',
      "application/vnd.api+json",
    ]) {
      const r = await getJson(url, { method: "POST", headers: { "content-type": type }, body });
      expect(r.status, type).toBe(200);
    }
  });
});
