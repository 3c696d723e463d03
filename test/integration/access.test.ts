/** Optional API keys on the read API, with request and miss budgets shared across API processes. */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HybridClient, PendingAnswerError } from "../../src/client/hybrid-client.ts";
import { loadConfig } from "../../src/config.ts";
import {
  capturedLog,
  eventually,
  getJson,
  startTestService,
  type TestService,
  uniquePrefix,
} from "../helpers/service.ts";

const ALICE = "alice-key-0123456789abcdef";
/** For another go at a shared-budget check whose first was counted per process. */
const SPARE = ["erin-key-0123456789abcdefgh", "frank-key-0123456789abcdefg"];
const BOB = "bob-key-0123456789abcdefgh";
const CAROL = "carol-key-0123456789abcdef";
const DAVE = "dave-key-0123456789abcdefgh";
const GRACE = "grace-key-0123456789abcdefg";
const HENRY = "henry-key-0123456789abcdefg";
let a: TestService;
let b: TestService;
/** Process a's log lines. */
const logged = capturedLog();

beforeAll(async () => {
  const env = {
    PREDCACHE_PREFIX: uniquePrefix("access"),
    PREDCACHE_API_KEYS: `alice:${ALICE},bob:${BOB},carol:${CAROL},dave:${DAVE},erin:${SPARE[0]},frank:${SPARE[1]},grace:${GRACE},henry:${HENRY}`,
    PREDCACHE_RATE_LIMIT: "6",
    PREDCACHE_MISS_RATE_LIMIT: "2",
    PREDCACHE_RATE_WINDOW_SECONDS: "60",
  };
  // Two API processes' worth of services on one Redis and prefix: the budgets are shared.
  a = await startTestService({ env, liveWorker: false, log: logged.log });
  b = await startTestService({ env, liveWorker: false });
});
afterAll(async () => {
  await a.close();
  await b.close();
});

const predict = (t: TestService, key: string | undefined, hour: number, header = "authorization") =>
  getJson(
    `${t.url}/v1/models/flight-delay/predict?origin=SFO&destination=LAX&hour=${hour}&dayOfWeek=1&wait=0`,
    {
      headers: key ? { [header]: header === "authorization" ? `Bearer ${key}` : key } : {},
    },
  );

/** Budget uses counted per process so far (both services share this process's metrics). */
async function countedLocally(): Promise<number> {
  const text = await (await fetch(`${a.url}/metrics`)).text();
  return [...text.matchAll(/^predcache_rate_limit_counted_locally_total\{[^}]*\} (\S+)$/gm)].reduce(
    (sum, m) => sum + Number(m[1]),
    0,
  );
}

/** Puts SFO→LAX at `hour` in a process's L1: a hit that spends only the request budget. */
function rememberHit(t: TestService, hour: number): void {
  const model = t.registry.versions("flight-delay")[0];
  const e = model?.encoder.encode({ origin: "SFO", destination: "LAX", hour, dayOfWeek: 1 });
  if (!model || !e?.ok) throw new Error("fixture");
  t.service.tiers.remember(model, e.value.key, { delayProbability: 0.5, expectedDelayMinutes: 1 });
}

describe("API keys and rate limits", () => {
  it("names the key's id on the request's log line, never its secret", async () => {
    rememberHit(a, 5); // a hit: henry's miss budget is the batch test's
    const reply = await predict(a, HENRY, 5);
    expect(reply.status).toBe(200);
    const id = reply.headers.get("x-request-id");
    const line = await eventually(async () => logged.lines.find((l) => l.reqId === id));
    expect(line).toMatchObject({ apiKey: "henry" });
    expect(JSON.stringify(logged.lines)).not.toContain(HENRY);
  });

  it("refuses a missing key (401) and a wrong one (403); health stays open", async () => {
    const none = await predict(a, undefined, 1);
    expect(none.status).toBe(401);
    expect(none.body.error.code).toBe("unauthorized");
    expect(none.headers.get("www-authenticate")).toBe('Bearer realm="predcache"');
    const wrong = await predict(a, "not-a-key-not-a-key", 1);
    expect(wrong.status).toBe(403);
    expect(wrong.headers.get("www-authenticate")).toMatch(/error="invalid_token"/);
    expect((await getJson(`${a.url}/healthz`)).status).toBe(200);
  });

  it("refuses two different keys in one request (400), whichever is valid", async () => {
    rememberHit(a, 2);
    const url = `${a.url}/v1/models/flight-delay/predict?origin=SFO&destination=LAX&hour=2&dayOfWeek=1&wait=0`;
    for (const [bearer, apiKey] of [
      [GRACE, "not-a-key-not-a-key"],
      ["not-a-key-not-a-key", GRACE],
      [GRACE, DAVE],
    ]) {
      const r = await getJson(url, {
        headers: { authorization: `Bearer ${bearer}`, "x-api-key": apiKey as string },
      });
      expect(r.status).toBe(400);
      expect(r.body.error.code).toBe("bad_request");
    }
    // The same key both ways is one key.
    const same = await getJson(url, {
      headers: { authorization: `Bearer ${GRACE}`, "x-api-key": GRACE },
    });
    expect(same.status).toBe(200);
  });

  it("counts requests per key across API processes, then answers 429 with Retry-After", async () => {
    // A hit in both processes' L1, so only the request budget is spent.
    for (const t of [a, b]) rememberHit(t, 5);
    let statuses: number[] = [];
    let last: Awaited<ReturnType<typeof predict>> | undefined;
    // A Redis slower than the limiter waits (a loaded test machine) has a use counted per
    // process, as designed: that go proves nothing, and another key goes again.
    for (const key of [ALICE, ...SPARE]) {
      const before = await countedLocally();
      statuses = [];
      for (let i = 0; i < 8; i++) {
        last = await predict(i % 2 ? b : a, key, 5, i % 3 ? "authorization" : "x-api-key");
        statuses.push(last.status);
      }
      if ((await countedLocally()) === before) break;
    }
    expect(statuses.slice(0, 6)).toEqual([200, 200, 200, 200, 200, 200]);
    expect(statuses.slice(6)).toEqual([429, 429]);
    expect(last?.body.error).toMatchObject({
      code: "rate_limited",
      details: { budget: "requests", limit: 6 },
    });
    expect(Number(last?.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(last?.headers.get("ratelimit-limit")).toBe("6");
    expect(last?.headers.get("ratelimit-remaining")).toBe("0");
    // Browser apps may read them: with API keys on, CORS exposes them.
    expect(last?.headers.get("access-control-expose-headers")).toContain("RateLimit-Remaining");
    // Another key has its own budget.
    expect((await predict(a, BOB, 5)).status).toBe(200);
  });

  it("gives misses a separate, smaller budget", async () => {
    const statuses = [];
    for (const hour of [10, 11, 12]) statuses.push((await predict(b, BOB, hour)).status);
    expect(statuses).toEqual([202, 202, 429]);
    const refused = await predict(b, BOB, 13);
    expect(refused.body.error.details).toMatchObject({ budget: "misses", limit: 2 });
    // Its RateLimit headers are the miss budget's, reset at the window's aligned end.
    expect(refused.headers.get("ratelimit-limit")).toBe("2");
    expect(refused.headers.get("ratelimit-remaining")).toBe("0");
    const untilBoundary = 60 - (Math.floor(Date.now() / 1000) % 60);
    const reset = Number(refused.headers.get("ratelimit-reset"));
    expect(Math.abs(reset - untilBoundary)).toBeLessThanOrEqual(1);
    expect(refused.headers.get("retry-after")).toBe(String(reset));
    // Refused misses are no demand: traffic:K must not precompute what a key was refused.
    const model = b.registry.versions("flight-delay")[0];
    if (!model) throw new Error("fixture");
    const keyOf = (hour: number) => {
      const e = model.encoder.encode({ origin: "SFO", destination: "LAX", hour, dayOfWeek: 1 });
      if (!e.ok) throw new Error("fixture");
      return e.value.key;
    };
    const traffic = b.service.keys.traffic("flight-delay", model.encoder.hash);
    await eventually(
      async () => ((await b.service.redis.zscore(traffic, keyOf(11))) ? 1 : undefined),
      5_000,
    );
    expect(await b.service.redis.zscore(traffic, keyOf(10))).toBe("1");
    expect(await b.service.redis.zscore(traffic, keyOf(12))).toBeNull();
    expect(await b.service.redis.zscore(traffic, keyOf(13))).toBeNull();
  });

  it("says in a batch's refused item when its miss budget comes back", async () => {
    const inputs = [21, 22, 23].map((hour) => ({
      origin: "SEA",
      destination: "JFK",
      hour,
      dayOfWeek: 2,
    }));
    const r = await getJson(`${a.url}/v1/models/flight-delay/predict`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-api-key": DAVE },
      body: JSON.stringify({ inputs, wait: 0 }),
    });
    expect(r.status).toBe(200);
    const refused = r.body.results.filter((item: { status: number }) => item.status === 429);
    expect(refused).toHaveLength(1);
    expect(refused[0].error.details).toMatchObject({
      budget: "misses",
      limit: 2,
      resetSeconds: expect.any(Number),
    });
  });

  it("guards job polls too, and lets no shared cache keep what a key was answered", async () => {
    rememberHit(a, 6);
    const hit = await predict(a, CAROL, 6);
    expect(hit.status).toBe(200);
    expect(hit.headers.get("cache-control")).toBe("private, max-age=30");
    const miss = await predict(a, CAROL, 20);
    expect(miss.status).toBe(202);
    const job = `${a.url}${miss.headers.get("location")}`;
    const anonymous = await getJson(job);
    expect(anonymous.status).toBe(401);
    expect(anonymous.body.error.code).toBe("unauthorized");
    const polled = await getJson(job, { headers: { "x-api-key": CAROL } });
    expect(polled.status).toBe(202);
    // The table listing too (the latest alias and tables are served the same way).
    const listing = await getJson(`${a.url}/v1/models/flight-delay/tables`, {
      headers: { "x-api-key": CAROL },
    });
    expect(listing.status).toBe(200);
    expect(listing.headers.get("cache-control")).toBe("private, no-cache");
  });

  it("lets the app's client send its key with every request", async () => {
    const anonymous = new HybridClient({ baseUrl: a.url, model: "flight-delay" });
    await expect(anonymous.refresh()).rejects.toThrow(/401/);
    const keyed = new HybridClient({
      baseUrl: a.url,
      model: "flight-delay",
      headers: { "X-API-Key": CAROL },
    });
    expect(await keyed.refresh()).toBe("none"); // listed (no table here), not refused
    // No live worker here: the miss is queued (202), which a refused key never gets.
    const asked = await keyed
      .predict({ origin: "SFO", destination: "LAX", hour: 7, dayOfWeek: 1 })
      .catch((error: unknown) => error);
    expect(asked).toBeInstanceOf(PendingAnswerError);
    expect((asked as PendingAnswerError).jobUrl).toMatch(new RegExp(`^${a.url}/v1/jobs/`));
  });

  it("charges copies of one input in a batch once, and answers them alike", async () => {
    const input = { origin: "BOS", destination: "SEA", hour: 3, dayOfWeek: 6 };
    const r = await getJson(`${a.url}/v1/models/flight-delay/predict`, {
      method: "POST",
      headers: { authorization: `Bearer ${HENRY}`, "content-type": "application/json" },
      body: JSON.stringify({ inputs: Array.from({ length: 5 }, () => input), wait: 5000 }),
    });
    expect(r.status).toBe(200);
    // A miss budget of 2: five copies are one miss (no live worker here: one job for all).
    expect(r.body.results.map((item: { status: number }) => item.status)).toEqual([
      202, 202, 202, 202, 202,
    ]);
    expect(new Set(r.body.results.map((item: { job: { url: string } }) => item.job.url)).size).toBe(
      1,
    );
  });

  it("with a miss budget of 0, answers cached lookups and refuses misses with 403, not a 429 to retry", async () => {
    const readOnly = await startTestService({
      env: {
        PREDCACHE_PREFIX: uniquePrefix("access-zero"),
        PREDCACHE_API_KEYS: `alice:${ALICE}`,
        PREDCACHE_MISS_RATE_LIMIT: "0",
      },
      liveWorker: false,
    });
    try {
      rememberHit(readOnly, 9);
      expect((await predict(readOnly, ALICE, 9)).status).toBe(200);
      const miss = await predict(readOnly, ALICE, 10);
      expect(miss.status).toBe(403);
      expect(miss.body.error).toMatchObject({
        code: "forbidden",
        details: { budget: "misses", limit: 0 },
      });
      expect(miss.headers.get("retry-after")).toBeNull();
    } finally {
      await readOnly.close();
    }
  });

  it("refuses short API keys at start", () => {
    expect(() => loadConfig({ PREDCACHE_API_KEYS: "x:short" })).toThrow(
      /PREDCACHE_API_KEYS: API key x: use a secret of at least 16 characters/,
    );
  });
});
