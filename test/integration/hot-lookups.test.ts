/**
 * The hot front (src/api/hot-lookups.ts): a lookup URL answered from the cache once is
 * answered again before the app, with the app's own reply, for as long as nothing that
 * reply depends on changes; everything else still takes the app's route. Whether the app
 * ran is seen by counting calls of its fetch on a server of its own.
 */
import { rm } from "node:fs/promises";
import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Listening, listen } from "../../src/api/listen.ts";
import { loadConfig } from "../../src/config.ts";
import { armOf, type Experiment } from "../../src/experiment/experiment.ts";
import type { ModelRegistry } from "../../src/model/registry.ts";
import { loadRegistry } from "../../src/service.ts";
import { rawGet } from "../helpers/raw-get.ts";
import {
  type AdminView,
  adminView,
  capturedLog,
  eventually,
  getJson,
  modelsDirWithVersions,
  startTestService,
  type TestService,
  uniquePrefix,
} from "../helpers/service.ts";

const prefix = uniquePrefix("hot");
let lines: Record<string, unknown>[] = [];
let modelsDir: string;
let registry: ModelRegistry;
let admin: AdminView;
let v1: string;
let v2: string;

/** A test service, listened on again with its app's fetch counted. */
interface Counted {
  t: TestService;
  server: Listening;
  url: string;
  appCalls: () => number;
}
let main: Counted;
/** Same prefix, a 1-byte L1 (holds nothing), no live worker: every hit is a Redis hit. */
let redisOnly: Counted;

async function counted(t: TestService): Promise<Counted> {
  const { app } = t.service;
  const dispatch = app.fetch;
  let calls = 0;
  app.fetch = (...args) => {
    calls += 1;
    return dispatch(...args);
  };
  const server = await listen(app, "127.0.0.1", 0);
  return { t, server, url: server.url, appCalls: () => calls };
}

beforeAll(async () => {
  modelsDir = await modelsDirWithVersions(["v2"]);
  registry = await loadRegistry(loadConfig({ PREDCACHE_MODELS_DIR: modelsDir }));
  [v1, v2] = registry.versions("flight-delay").map((v) => v.version) as [string, string];
  const env = { PREDCACHE_PREFIX: prefix, PREDCACHE_MODELS_DIR: modelsDir };
  const captured = capturedLog();
  lines = captured.lines;
  main = await counted(await startTestService({ env, registry, log: captured.log }));
  redisOnly = await counted(
    await startTestService({
      // A named origin: CORS then adds Vary: Origin, which hooks run twice would repeat.
      env: { ...env, PREDCACHE_L1_MAX_BYTES: "1", PREDCACHE_CORS_ORIGINS: "https://app.example" },
      registry,
      liveWorker: false,
      log: captured.log,
    }),
  );
  admin = await adminView(prefix, registry);
  await admin.active.set("flight-delay", v1);
  await eventually(async () => main.t.service.active.get("flight-delay") === v1 || undefined);
});
afterAll(async () => {
  await admin.close();
  for (const { server, t } of [redisOnly, main]) {
    await server.close();
    await t.close();
  }
  await registry.close();
  await rm(modelsDir, { recursive: true });
});

const predict = (q: string) => `/v1/models/flight-delay/predict?${q}`;

/** The reply headers a front answer must repeat exactly (all but Date and X-Request-Id). */
const SAME_HEADERS = [
  "etag",
  "cache-control",
  "content-type",
  "content-length",
  "access-control-allow-origin",
  "access-control-expose-headers",
  "vary",
];

describe("hot lookups", () => {
  it("answer a URL seen before ahead of the app, with the app's very reply, logged and counted", async () => {
    const url = `${main.url}${predict("origin=DEN&destination=SEA&hour=9&dayOfWeek=3")}`;
    expect((await getJson(`${url}&wait=5000`)).body.source).toBe("live");
    const viaApp = await fetch(url, { headers: { origin: "https://app.example" } });
    const appText = await viaApp.text();
    expect(JSON.parse(appText).source).toBe("memory");

    const lookups = await lookupCount(main.url, "memory");
    const answered = await predictAnswers(main.url);
    const calls = main.appCalls();
    const front = await fetch(url, {
      headers: { origin: "https://app.example", "x-request-id": "hot-1" },
    });
    expect(main.appCalls()).toBe(calls);
    expect(front.status).toBe(200);
    expect(await front.text()).toBe(appText);
    for (const name of SAME_HEADERS) expect(front.headers.get(name)).toBe(viaApp.headers.get(name));
    expect(front.headers.get("access-control-allow-origin")).toBe("*");
    expect(front.headers.get("x-request-id")).toBe("hot-1");
    // A made request id, one per request.
    const made = await fetch(url);
    await made.text();
    expect(made.headers.get("x-request-id")).toMatch(/^[0-9a-f]{16}$/);
    expect(made.headers.get("x-request-id")).not.toBe(viaApp.headers.get("x-request-id"));
    expect(main.appCalls()).toBe(calls);

    // Counted and logged as the app's answers are.
    expect(await lookupCount(main.url, "memory")).toBe(lookups + 2);
    expect(await predictAnswers(main.url)).toBe(answered + 2);
    const line = await eventually(async () => lines.find((l) => l.reqId === "hot-1"));
    expect(line).toMatchObject({
      msg: "request",
      method: "GET",
      path: "/v1/models/flight-delay/predict",
      status: 200,
      model: "flight-delay",
      version: v1,
      source: "memory",
    });
  });

  it("leave requests node's adapter would check (odd Host, encoded or fragment targets) to the app", async () => {
    const path = predict("origin=PHX&destination=LAS&hour=15&dayOfWeek=2");
    await getJson(`${main.url}${path}&wait=5000`);
    await getJson(`${main.url}${path}`);
    // node's adapter refuses a Host it cannot make a URL of (400, before the app): so for
    // a hot URL. The front would have answered 200.
    for (const host of ["bad host!", "a/b", "x@y", "a.b:99999"]) {
      const refused = await rawGet(main.url, path, { host });
      expect(refused.status).toBe(400);
      // A JSON error, as every refusal is (not the adapter's empty 400).
      expect(JSON.parse(refused.body).error).toMatchObject({
        code: "bad_request",
        message: expect.stringMatching(/^the request is not valid: /),
      });
    }
    // Upper case and a port its fast path leaves out: valid, answered by the app.
    const calls = main.appCalls();
    const upper = await rawGet(main.url, path, { host: "LOCALHOST:80" });
    expect(upper.status).toBe(200);
    expect(JSON.parse(upper.body).source).toBe("memory");
    expect(main.appCalls()).toBe(calls + 1);
    expect((await rawGet(main.url, path, { host: "localhost:8787" })).status).toBe(200);
    expect(main.appCalls()).toBe(calls + 1);
    // An encoded target, a fragment: the app's parse, not a remembered one.
    const encoded = predict("origin=PH%58&destination=LAS&hour=15&dayOfWeek=2");
    await getJson(`${main.url}${encoded}`);
    await getJson(`${main.url}${encoded}`);
    expect(main.appCalls()).toBe(calls + 3);
    for (let i = 0; i < 2; i++)
      expect((await rawGet(main.url, `${path}#&version=${v2}`, {})).status).toBe(200);
    expect(main.appCalls()).toBe(calls + 5);
  });

  it("leave conditional and HEAD requests to the app", async () => {
    const url = `${main.url}${predict("origin=SEA&destination=DEN&hour=10&dayOfWeek=3")}`;
    await getJson(`${url}&wait=5000`);
    const hit = await fetch(url);
    const body = await hit.text();
    const calls = main.appCalls();
    const etag = hit.headers.get("etag") as string;
    const conditional = await fetch(url, { headers: { "if-none-match": etag } });
    expect(conditional.status).toBe(304);
    const head = await fetch(url, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("etag")).toBe(etag);
    // What a GET would carry, so a cache or a client can size it without the body.
    expect(head.headers.get("content-length")).toBe(String(Buffer.byteLength(body)));
    expect(await head.text()).toBe("");
    expect(main.appCalls()).toBe(calls + 2);
  });

  it("follow a promote on the very next request, while a URL naming its version keeps it", async () => {
    const q = "origin=BOS&destination=MSP&hour=11&dayOfWeek=4";
    const url = `${main.url}${predict(q)}&wait=5000`;
    const pinned = `${main.url}${predict(q)}&version=${v1}&wait=5000`;
    for (const u of [url, url, pinned, pinned]) await getJson(u);
    const calls = main.appCalls();
    const before = await getJson(url);
    expect(before.body).toMatchObject({ version: v1, source: "memory" });
    expect((await getJson(pinned)).body).toMatchObject({ version: v1, source: "memory" });
    expect(main.appCalls()).toBe(calls);

    try {
      await admin.active.set("flight-delay", v2);
      await eventually(async () => main.t.service.active.get("flight-delay") === v2 || undefined);
      // v2's answer is v2's own: computed live, not v1's remembered one.
      const after = await getJson(url);
      expect(after.body).toMatchObject({ version: v2, source: "live" });
      expect(after.headers.get("etag")).not.toBe(before.headers.get("etag"));
      expect((await getJson(pinned)).body).toMatchObject({ version: v1, source: "memory" });
      // Then v2's answer is remembered in turn.
      expect((await getJson(url)).body).toMatchObject({ version: v2, source: "memory" });
      const again = main.appCalls();
      expect((await getJson(url)).body).toMatchObject({ version: v2, source: "memory" });
      expect(main.appCalls()).toBe(again);
    } finally {
      await admin.active.set("flight-delay", v1);
      await eventually(async () => main.t.service.active.get("flight-delay") === v1 || undefined);
    }
  });

  it("answer an experiment's lookups ahead of the app too, each client in its arm, as the app does", async () => {
    const path = predict("origin=EWR&destination=DTW&hour=14&dayOfWeek=6");
    const url = `${main.url}${path}`;
    for (let i = 0; i < 3; i++) await getJson(`${url}&wait=5000`);
    const { store, running, tally } = main.t.service.experiments;
    const experiment: Experiment = {
      id: "hot-split",
      model: "flight-delay",
      control: v1,
      candidate: v2,
      fraction: 0.5,
      shadowRate: 0,
      state: "running",
      startedAt: new Date().toISOString(),
    };
    // One client of each arm, as the experiment's own hash places them.
    const clients = Array.from({ length: 40 }, (_, i) => `client-${i}`);
    const inArm = (arm: string) => clients.find((id) => armOf(experiment, id) === arm) as string;
    const answered: { arm: string; hit: boolean; anonymous: boolean }[] = [];
    const count = tally.answer.bind(tally);
    tally.answer = (e, arm, manifest, hit, value, how = {}) => {
      if (e.id === experiment.id) answered.push({ arm, hit, anonymous: how.anonymous === true });
      count(e, arm, manifest, hit, value, how);
    };
    await store.start(experiment);
    try {
      await eventually(async () => running.get("flight-delay"));
      for (const [arm, version, client] of [
        ["candidate", v2, inArm("candidate")],
        ["control", v1, inArm("control")],
        ["control", v1, undefined],
      ] as const) {
        const headers: Record<string, string> = { origin: "https://app.example" };
        if (client) headers["x-client-id"] = client;
        // Until the arm's version holds the key in L1, and the app has answered it once.
        await getJson(`${url}&wait=5000`, { headers });
        const viaApp = await fetch(url, { headers });
        const appText = await viaApp.text();
        expect(JSON.parse(appText)).toMatchObject({ version, source: "memory" });
        const calls = main.appCalls();
        answered.length = 0;
        const front = await fetch(url, { headers });
        expect(main.appCalls()).toBe(calls);
        expect(await front.text()).toBe(appText);
        for (const name of SAME_HEADERS)
          expect(front.headers.get(name)).toBe(viaApp.headers.get(name));
        expect(JSON.parse(appText).experiment).toEqual({ id: experiment.id, arm });
        expect(front.headers.get("vary")).toMatch(/x-client-id/i);
        // Counted in the arm's tallies, as the app counts it.
        expect(answered).toEqual([{ arm, hit: true, anonymous: client === undefined }]);
      }
      // Two client ids: the app refuses them (400), the front does not guess.
      const calls = main.appCalls();
      const two = await rawGet(main.url, path, {
        host: "127.0.0.1",
        "x-client-id": [inArm("candidate"), inArm("control")],
      });
      expect(two.status).toBe(400);
      expect(main.appCalls()).toBe(calls + 1);
    } finally {
      tally.answer = count;
      const stored = await store.record("flight-delay", experiment.id);
      await store.stop(experiment, v1, stored?.read ?? "");
      await eventually(async () => !running.get("flight-delay") || undefined);
    }
    // Stopped: everyone gets the active version again, without the arm.
    const after = await getJson(url, { headers: { "x-client-id": inArm("candidate") } });
    expect(after.body).toMatchObject({ version: v1, source: "memory" });
    expect(after.body.experiment).toBeUndefined();
  });

  it("hand an experiment's Redis miss to the app with the reply's Vary said once", async () => {
    const path = predict("origin=BOS&destination=MSP&hour=16&dayOfWeek=2");
    const headers = { origin: "https://app.example", "x-client-id": "handed-on" };
    const { store } = main.t.service.experiments;
    const experiment: Experiment = {
      id: "hot-handoff",
      model: "flight-delay",
      control: v1,
      candidate: v2,
      fraction: 1,
      shadowRate: 0,
      state: "running",
      startedAt: new Date().toISOString(),
    };
    await store.start(experiment);
    try {
      for (const { t } of [main, redisOnly])
        await eventually(async () => t.service.experiments.running.get("flight-delay"));
      const live = await getJson(`${main.url}${path}&wait=5000`, { headers });
      expect(live.body).toMatchObject({ version: v2, source: "live" });
      const hit = await fetch(`${redisOnly.url}${path}`, { headers });
      expect(await hit.json()).toMatchObject({ version: v2, source: "redis" });
      expect(hit.headers.get("vary")).toBe("Origin, x-client-id");
      const calls = redisOnly.appCalls();
      const again = await fetch(`${redisOnly.url}${path}`, { headers });
      await again.text();
      expect(redisOnly.appCalls()).toBe(calls);
      expect(again.headers.get("vary")).toBe("Origin, x-client-id");

      // Gone from Redis: the front reads, finds nothing, and the app answers the miss.
      await removeFromRedis(live.body.key);
      const miss = await fetch(`${redisOnly.url}${path}`, { headers });
      await miss.text();
      expect(redisOnly.appCalls()).toBe(calls + 1);
      expect(miss.headers.get("vary")).toBe("Origin, x-client-id");
    } finally {
      const stored = await store.record("flight-delay", experiment.id);
      await store.stop(experiment, v1, stored?.read ?? "");
      for (const { t } of [main, redisOnly])
        await eventually(
          async () => !t.service.experiments.running.get("flight-delay") || undefined,
        );
    }
  });

  it("read Redis when L1 does not hold the key, and hand a Redis miss to the app, hooks run once", async () => {
    const path = predict("origin=MSP&destination=BOS&hour=12&dayOfWeek=5");
    const live = await getJson(`${main.url}${path}&wait=5000`);
    expect(live.body.source).toBe("live");
    expect((await getJson(`${redisOnly.url}${path}`)).body.source).toBe("redis");
    const calls = redisOnly.appCalls();
    const fromRedis = await getJson(`${redisOnly.url}${path}`);
    expect(fromRedis.body).toEqual({ ...live.body, source: "redis" });
    expect(redisOnly.appCalls()).toBe(calls);

    // Gone from Redis (as a live-only answer past its TTL): the app takes the miss.
    await removeFromRedis(live.body.key);
    const miss = await fetch(`${redisOnly.url}${path}`, {
      headers: { origin: "https://app.example" },
    });
    expect(redisOnly.appCalls()).toBe(calls + 1);
    const body = await miss.json();
    if (miss.status === 200) expect(body.source).toBe("live");
    else expect(miss.status).toBe(202);
    // Hooks ran once: one request id, one CORS header and one Vary, not two joined.
    expect(miss.headers.get("x-request-id")).toMatch(/^[0-9a-f]{16}$/);
    expect(miss.headers.get("access-control-allow-origin")).toBe("https://app.example");
    expect(miss.headers.get("vary")).toBe("Origin");
  });

  it("answer a Redis hit with what Redis holds now, when the stored answer was rewritten", async () => {
    const path = predict("origin=SEA&destination=DEN&hour=9&dayOfWeek=2");
    const live = await getJson(`${main.url}${path}&wait=5000`);
    const first = await getJson(`${redisOnly.url}${path}`);
    expect(first.body).toEqual({ ...live.body, source: "redis" });
    const calls = redisOnly.appCalls();
    const model = registry.get("flight-delay", v1);
    if (!model) throw new Error("v1 not loaded");
    const rewritten = { ...live.body.prediction, delayProbability: 0.9876 };
    await redisOnly.t.service.tiers.store.put(model, [
      { key: live.body.key, prediction: rewritten },
    ]);
    const again = await getJson(`${redisOnly.url}${path}`);
    expect(redisOnly.appCalls()).toBe(calls);
    expect(again.body).toMatchObject({ source: "redis", prediction: rewritten });
    expect(again.headers.get("content-length")).toBe(
      String(Buffer.byteLength(JSON.stringify(again.body))),
    );
  });

  it("answer many concurrent requests of one URL from one Redis read, each its own reply", async () => {
    const path = predict("origin=DTW&destination=EWR&hour=13&dayOfWeek=6");
    await getJson(`${main.url}${path}&wait=5000`);
    await getJson(`${redisOnly.url}${path}`);
    const calls = redisOnly.appCalls();
    const replies = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        fetch(`${redisOnly.url}${path}`, { headers: { "x-request-id": `many-${i}` } }),
      ),
    );
    expect(redisOnly.appCalls()).toBe(calls);
    const bodies = await Promise.all(replies.map((r) => r.json()));
    expect(new Set(bodies.map((b) => JSON.stringify(b))).size).toBe(1);
    expect(bodies[0]).toMatchObject({ source: "redis" });
    expect(replies.map((r) => r.headers.get("x-request-id"))).toEqual(
      Array.from({ length: 100 }, (_, i) => `many-${i}`),
    );
  });

  it("log and count each Redis hit it answers, and a client gone during the read as aborted", async () => {
    const path = predict("origin=ORD&destination=ATL&hour=8&dayOfWeek=4");
    await getJson(`${main.url}${path}&wait=5000`);
    await getJson(`${redisOnly.url}${path}`);
    const answered = await predictAnswers(redisOnly.url);
    const calls = redisOnly.appCalls();
    await Promise.all(
      Array.from({ length: 5 }, (_, i) =>
        fetch(`${redisOnly.url}${path}`, { headers: { "x-request-id": `read-${i}` } }).then((r) =>
          r.text(),
        ),
      ),
    );
    expect(redisOnly.appCalls()).toBe(calls);
    expect(await predictAnswers(redisOnly.url)).toBe(answered + 5);
    for (let i = 0; i < 5; i++)
      expect(lines.find((l) => l.reqId === `read-${i}`)).toMatchObject({
        status: 200,
        source: "redis",
      });

    // The read held until the client has left: answered to no one, logged as such.
    const { tiers } = redisOnly.t.service;
    const read = tiers.fromRedis;
    let release = () => {};
    const held = new Promise<void>((done) => {
      release = done;
    });
    let reading = false;
    tiers.fromRedis = async (...args) => {
      reading = true;
      await held;
      return read.apply(tiers, args);
    };
    try {
      const { hostname, port } = new URL(redisOnly.url);
      const socket = connect(Number(port), hostname);
      socket.on("error", () => {});
      socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: gone-1\r\n\r\n`);
      await eventually(async () => reading || undefined);
      socket.destroy();
      await new Promise((done) => setTimeout(done, 50));
      release();
      const line = await eventually(async () => lines.find((l) => l.reqId === "gone-1"));
      expect(line).toMatchObject({ status: 0, aborted: true, source: "redis" });
    } finally {
      tiers.fromRedis = read;
    }
    expect(redisOnly.appCalls()).toBe(calls + 1); // the /metrics read above
  });
});

/** A counter as /metrics reports it: its series whose labels include each of `labels`. */
async function counter(base: string, name: string, ...labels: string[]): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text
    .split("\n")
    .find((l) => l.startsWith(`${name}{`) && labels.every((label) => l.includes(label)));
  return line ? Number(line.split(" ").at(-1)) : 0;
}

/** predcache_lookups_total of flight-delay v1 from one source. */
const lookupCount = (base: string, source: string) =>
  counter(base, "predcache_lookups_total", `version="${v1}"`, `source="${source}"`);

/** predcache_http_requests_total of 200s on the predict route (counted as each closes). */
const predictAnswers = (base: string) =>
  counter(base, "predcache_http_requests_total", 'route="predict"', 'status="200"');

/** Deletes a key's answer from every prediction hash of this test's prefix. */
async function removeFromRedis(key: string): Promise<void> {
  let cursor = "0";
  do {
    const [next, names] = await admin.redis.scan(cursor, "MATCH", `${prefix}*`, "TYPE", "hash");
    for (const name of names) await admin.redis.hdel(name, key);
    cursor = next;
  } while (cursor !== "0");
}
