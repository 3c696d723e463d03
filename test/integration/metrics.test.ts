/** /metrics: the named series exist and move when lookups, misses and downloads happen. */
import { createServer } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PrecomputeWorkerProcess } from "../../src/service.ts";
import { spawnWorker } from "../helpers/precompute.ts";
import {
  eventually,
  getJson,
  precomputeInputs,
  precomputeWorkerFor,
  metricSample as sample,
  startTestService,
  type TestService,
  tempDataDir,
} from "../helpers/service.ts";

let t: TestService;
let worker: PrecomputeWorkerProcess;
const covered = { origin: "SFO", destination: "LAX", hour: "7", dayOfWeek: "1" };

async function scrape(): Promise<string> {
  const response = await fetch(`${t.url}/metrics`);
  expect(response.status).toBe(200);
  expect(response.headers.get("content-type")).toMatch(/^text\/plain/);
  return response.text();
}

beforeAll(async () => {
  const dataDir = await tempDataDir();
  t = await startTestService({ env: { PREDCACHE_DATA_DIR: dataDir } });
  worker = await precomputeWorkerFor(t);
  await precomputeInputs(t, [covered]);
});
afterAll(async () => {
  await worker.close();
  await t.close();
});

describe("/metrics", () => {
  it("counts lookups by source, misses, 202s, predictions, downloads and queue depths", async () => {
    const before = await scrape();
    const hit = await getJson(
      `${t.url}/v1/models/flight-delay/predict?${new URLSearchParams(covered)}`,
    );
    expect(hit.status).toBe(200);
    const miss = await getJson(
      `${t.url}/v1/models/flight-delay/predict?origin=ABQ&destination=ORD&hour=4&dayOfWeek=6&wait=3000`,
    );
    expect(miss.body.source).toBe("live");
    const pending = await getJson(
      `${t.url}/v1/models/flight-delay/predict?origin=ABQ&destination=SEA&hour=4&dayOfWeek=6&wait=0`,
    );
    expect(pending.status).toBe(202);
    const odd = await getJson(
      `${t.url}/v1/models/flight-delay/predict?origin=ZZZ&destination=ORD&hour=4&dayOfWeek=6&wait=3000`,
    );
    expect(odd.body.outOfDistribution).toBe(true);
    const listing = (await getJson(`${t.url}/v1/models/flight-delay/tables`)).body.latest;
    const etag = `"${listing.checksum}"`;
    await (await fetch(`${t.url}${listing.url}`)).arrayBuffer();
    await fetch(`${t.url}${listing.url}`, { headers: { "if-none-match": etag } });
    // Refusals too, by route group: a made-up model or path adds no series of its own.
    expect((await getJson(`${t.url}/v1/models/nope-${Date.now()}/predict?x=1`)).status).toBe(404);
    expect((await getJson(`${t.url}/made/up/${Date.now()}`)).status).toBe(404);

    const after = await scrape();
    const moved = (name: string, labels: Record<string, string> = {}) =>
      sample(after, name, labels) - sample(before, name, labels);
    const model = { model: "flight-delay" };
    expect(moved("predcache_lookups_total", { ...model, source: hit.body.source })).toBe(1);
    expect(moved("predcache_lookups_total", { ...model, source: "live" })).toBe(2);
    expect(moved("predcache_lookups_total", { ...model, source: "pending" })).toBe(1);
    expect(moved("predcache_misses_total", model)).toBe(3);
    expect(moved("predcache_pending_total", model)).toBe(1);
    expect(moved("predcache_out_of_distribution_total", model)).toBe(1);
    expect(moved("predcache_lookup_duration_seconds_count", model)).toBe(4);
    expect(
      moved("predcache_prediction_value_count", { ...model, output: "delayProbability" }),
    ).toBe(3);
    expect(moved("predcache_live_batch_rows_count", model)).toBeGreaterThanOrEqual(1);
    expect(
      moved("predcache_job_outcomes_total", { queue: "live", outcome: "completed" }),
    ).toBeGreaterThanOrEqual(2);
    expect(moved("predcache_table_downloads_total", { ...model, kind: "full" })).toBe(1);
    expect(moved("predcache_table_downloads_total", { ...model, kind: "not_modified" })).toBe(1);
    expect(sample(after, "predcache_precompute_rows_written_total", model)).toBeGreaterThanOrEqual(
      1,
    );
    // Request log lines (and so these counts) are written as each response closes.
    await eventually(async () =>
      (await scrape()).includes('route="other",status="404"') ? 1 : undefined,
    );
    const latest = await scrape();
    const httpMoved = (route: string, status: string) =>
      sample(latest, "predcache_http_requests_total", { route, status }) -
      sample(before, "predcache_http_requests_total", { route, status });
    expect(httpMoved("predict", "200")).toBeGreaterThanOrEqual(2);
    expect(httpMoved("predict", "202")).toBe(1);
    expect(httpMoved("predict", "404")).toBe(1);
    expect(httpMoved("tables", "304")).toBe(1);
    expect(httpMoved("other", "404")).toBe(1);
    expect(latest).not.toMatch(/predcache_http_requests_total\{[^}]*nope-/);
    expect(sample(latest, "predcache_redis_connected")).toBe(1);
    expect(after).toMatch(/^predcache_queue_jobs\{queue="live",state="waiting"\} \d+$/m);
    expect(after).toMatch(/^predcache_queue_counts_read\{queue="live"\} 1$/m);
    expect(after).toMatch(/^predcache_process_resident_memory_bytes \d+/m);
    expect(after).toMatch(/^predcache_nodejs_eventloop_lag_seconds /m);
  });

  it("reports the version served, L1, the resident table and runs ended", async () => {
    const served = (await getJson(`${t.url}/v1/models/flight-delay`)).body;
    const listing = (await getJson(`${t.url}/v1/models/flight-delay/tables`)).body.latest;
    await getJson(`${t.url}/v1/models/flight-delay/predict?${new URLSearchParams(covered)}`);
    const text = await eventually(
      async () => {
        const scraped = await scrape();
        return sample(scraped, "predcache_resident_table_rows") > 0 ? scraped : undefined;
      },
      10_000,
      100,
    );
    const model = { model: "flight-delay" };
    expect(sample(text, "predcache_active_version", model)).toBe(1);
    expect(
      sample(text, "predcache_active_version", { ...model, version: served.activeVersion }),
    ).toBe(1);
    // The precompute of beforeAll ran in this process's worker.
    expect(sample(text, "predcache_precompute_runs_total", { outcome: "completed" })).toBe(1);
    expect(sample(text, "predcache_l1_entries")).toBeGreaterThanOrEqual(1);
    expect(sample(text, "predcache_l1_bytes")).toBeGreaterThan(0);
    const table = { ...model, version: listing.modelVersion };
    expect(sample(text, "predcache_resident_table_rows", table)).toBe(listing.entryCount);
    expect(sample(text, "predcache_resident_table_bytes", table)).toBe(listing.bytes);
  });

  it("shows a paused queue, read at each scrape", async () => {
    const { queue } = t.service.live;
    // As the queue dashboard's pause button does; BullMQ keeps it in Redis.
    await queue.pause();
    try {
      const paused = await scrape();
      expect(paused).toMatch(/^predcache_queue_paused\{queue="live"\} 1$/m);
      expect(paused).toMatch(/^predcache_queue_paused\{queue="precompute"\} 0$/m);
    } finally {
      await queue.resume();
    }
    expect(await scrape()).toMatch(/^predcache_queue_paused\{queue="live"\} 0$/m);
  });

  it("is served by worker-only processes on PREDCACHE_METRICS_PORT (to its token), with /healthz and /readyz", async () => {
    const secret = "worker-scraper-0123456789";
    const port = await new Promise<number>((done) => {
      const probe = createServer().listen(0, "127.0.0.1", () => {
        const { port } = probe.address() as { port: number };
        probe.close(() => done(port));
      });
    });
    const child = spawnWorker({
      REDIS_URL: t.config.redisUrl as string,
      PREDCACHE_PREFIX: t.config.prefix,
      PREDCACHE_WORKERS: "live",
      PREDCACHE_METRICS_PORT: String(port),
      PREDCACHE_METRICS_TOKENS: `prometheus:${secret}`,
    });
    try {
      const text = await eventually(
        async () => {
          const r = await fetch(`http://127.0.0.1:${port}/metrics`, {
            headers: { authorization: `Bearer ${secret}` },
          });
          return r.ok ? r.text() : undefined;
        },
        30_000,
        200,
      );
      expect((await fetch(`http://127.0.0.1:${port}/metrics`)).status).toBe(401);
      expect(text).toMatch(/^# TYPE predcache_live_batch_rows histogram$/m);
      expect(text).toMatch(/^predcache_process_resident_memory_bytes \d+/m);
      // And /healthz, which a container's healthcheck asks.
      const health = await fetch(`http://127.0.0.1:${port}/healthz`);
      expect(health.status).toBe(200);
      expect(await health.json()).toEqual({ status: "ok" });
      // And /readyz: its worker takes jobs and reaches Redis.
      const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
      expect(ready.status).toBe(200);
      expect(ready.headers.get("cache-control")).toBe("no-store");
      expect(await ready.json()).toEqual({
        status: "ready",
        workers: [{ worker: "live", running: true, redis: true, paused: false }],
      });
      // A paused live queue: the worker takes no jobs, so it is not ready (and says why).
      await t.service.live.queue.pause();
      try {
        const paused = await fetch(`http://127.0.0.1:${port}/readyz`);
        expect(paused.status).toBe(503);
        expect((await paused.json()).workers[0]).toMatchObject({ running: true, paused: true });
      } finally {
        await t.service.live.queue.resume();
      }
    } finally {
      child.kill("SIGTERM");
      await new Promise((done) => child.once("exit", done));
    }
  });
});

describe("/metrics with PREDCACHE_METRICS_TOKENS", () => {
  it("needs a metrics token, which opens nothing else; an API key does not open /metrics", async () => {
    const secret = "scraper-secret-0123456789";
    const apiKey = "reader-key-0123456789abcdef";
    const guarded = await startTestService({
      env: {
        PREDCACHE_METRICS_TOKENS: `prometheus:${secret}`,
        PREDCACHE_API_KEYS: `reader:${apiKey}`,
      },
      liveWorker: false,
    });
    try {
      const scrape = (authorization?: string) =>
        fetch(`${guarded.url}/metrics`, { headers: authorization ? { authorization } : {} });
      const none = await scrape();
      expect(none.status).toBe(401);
      expect(none.headers.get("www-authenticate")).toBe('Bearer realm="predcache-metrics"');
      expect((await none.json()).error.code).toBe("unauthorized");
      const withApiKey = await scrape(`Bearer ${apiKey}`);
      expect(withApiKey.status).toBe(403);
      expect((await withApiKey.json()).error.code).toBe("forbidden");
      const ok = await scrape(`Bearer ${secret}`);
      expect(ok.status).toBe(200);
      expect(await ok.text()).toMatch(/^# TYPE predcache_lookups_total counter$/m);
      // The metrics token is not an API key.
      const lookup = await fetch(`${guarded.url}/v1/models`, {
        headers: { authorization: `Bearer ${secret}` },
      });
      expect(lookup.status).toBe(403);
      expect((await fetch(`${guarded.url}/healthz`)).status).toBe(200);
    } finally {
      await guarded.close();
    }
  });
});
