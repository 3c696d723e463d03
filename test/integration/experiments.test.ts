/**
 * Experiments end to end on real Redis and the real model: arms by client, split changes,
 * stops that revert or promote within 1 s, shadow comparisons that leave replies alone,
 * and a report whose numbers match ones computed directly from the two versions' tables.
 */
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HybridClient } from "../../src/client/hybrid-client.ts";
import { LookupTable } from "../../src/client/lookup-table.ts";
import { agreementOf } from "../../src/experiment/agreement.ts";
import { armOf, type Experiment } from "../../src/experiment/experiment.ts";
import { mainValueOf, type Prediction } from "../../src/model/decoding.ts";
import type { ModelVersion } from "../../src/model/registry.ts";
import type { PrecomputeWorkerProcess } from "../../src/service.ts";
import { rawGet } from "../helpers/raw-get.ts";
import {
  capturedLog,
  eventually,
  getJson,
  modelsDirWithVersions,
  precomputeWorkerFor,
  startTestService,
  type TestService,
  tempDataDir,
  uniquePrefix,
} from "../helpers/service.ts";

const SECRET = "experiment-admin-token-0123456789";
const MODEL = "flight-delay";
const base = `/admin/v1/models/${MODEL}/experiments`;

let t: TestService;
/** A second API process on the same Redis: what it sees is what every process sees. */
let other: TestService;
let worker: PrecomputeWorkerProcess;
let control: ModelVersion;
let candidate: ModelVersion;

const airports = ["ATL", "ORD", "DFW", "DEN", "LAX", "SFO", "SEA", "BOS"];
/** The inputs both versions precompute (so both tables cover them). */
const inputs = airports.flatMap((origin) =>
  airports
    .filter((d) => d !== origin)
    .flatMap((destination) =>
      [8, 17].map((hour) => ({ origin, destination, hour: String(hour), dayOfWeek: "2" })),
    ),
);

function admin(path: string, init: { method?: string; body?: unknown } = {}) {
  return getJson(`${t.url}${path}`, {
    method: init.method ?? "GET",
    headers: {
      authorization: `Bearer ${SECRET}`,
      ...(init.body ? { "content-type": "application/json" } : {}),
    },
    ...(init.body ? { body: JSON.stringify(init.body) } : {}),
  });
}

function lookup(input: Record<string, string>, client?: string, server = t) {
  return getJson(
    `${server.url}/v1/models/${MODEL}/predict?${new URLSearchParams(input)}&wait=5000`,
    client ? { headers: { "x-client-id": client } } : {},
  );
}

/** A candidate that really differs: the same network, its outputs kept to one digit. */
async function modelsDirWithCoarseCandidate(): Promise<string> {
  const root = await modelsDirWithVersions([]);
  const manifest = JSON.parse(await readFile(join(root, MODEL, "manifest.json"), "utf8"));
  const dir = join(root, `${MODEL}-coarse`);
  await mkdir(dir);
  await writeFile(join(dir, "model.onnx"), await readFile(join(root, MODEL, "model.onnx")));
  const outputs = manifest.outputs.map((o: object) => ({ ...o, digits: 1 }));
  await writeFile(
    join(dir, "manifest.json"),
    JSON.stringify({ ...manifest, label: "coarse", outputs }),
  );
  return root;
}

async function precompute(version: string): Promise<void> {
  const { runId } = await t.service.precompute.enqueue({
    model: MODEL,
    version,
    source: { kind: "inline", inputs },
  });
  const done = await t.service.precompute.waitUntilDone(runId, 60_000);
  expect(done.state).toBe("completed");
}

/** How long until `check` holds for every client, polled; fails past 1 s. */
async function switchTime(check: () => Promise<boolean>): Promise<number> {
  const started = performance.now();
  await eventually(async () => ((await check()) ? true : undefined), 1_000, 10);
  return performance.now() - started;
}

/** The services' environment (a third process may join them). */
let env: Record<string, string>;

beforeAll(async () => {
  env = {
    PREDCACHE_PREFIX: uniquePrefix("experiments"),
    PREDCACHE_MODELS_DIR: await modelsDirWithCoarseCandidate(),
    PREDCACHE_DATA_DIR: await tempDataDir(),
    PREDCACHE_ADMIN_TOKENS: `ops:${SECRET}`,
    PREDCACHE_AUDIT_RATE: "0",
  };
  t = await startTestService({ env });
  other = await startTestService({ env, liveWorker: false });
  worker = await precomputeWorkerFor(t);
  const active = t.service.active.get(MODEL) as string;
  control = t.registry.get(MODEL, active) as ModelVersion;
  candidate = t.registry.versions(MODEL).find((v) => v.version !== active) as ModelVersion;
  await precompute(control.version);
  await precompute(candidate.version);
});
afterAll(async () => {
  await worker.close();
  await other.close();
  await t.close();
});

describe("experiments", () => {
  it("refuses bad requests with 400/404/409 and starts nothing", async () => {
    const bad = [
      { body: { candidate: candidate.version, fraction: 1.5 }, status: 400 },
      { body: { candidate: candidate.version }, status: 400 },
      { body: { candidate: candidate.version, fraction: 0.1, extra: 1 }, status: 400 },
      { body: { candidate: "0123456789ab", fraction: 0.1 }, status: 404 },
      { body: { candidate: control.version, fraction: 0.1 }, status: 400 },
    ];
    for (const { body, status } of bad) {
      const reply = await admin(base, { method: "POST", body });
      expect(reply.status, JSON.stringify(body)).toBe(status);
      expect(reply.body.error.code).toBeTypeOf("string");
    }
    expect((await admin(base)).body.experiments).toEqual([]);
    expect((await getJson(`${t.url}/admin/v1/models/nope/experiments`)).status).toBe(401);
    expect((await admin("/admin/v1/models/nope/experiments")).status).toBe(404);
  });

  it("serves each client its arm's version, stably, and names the arm in the reply", async () => {
    const started = await admin(base, {
      method: "POST",
      body: { id: "coarse-30", candidate: candidate.version, fraction: 0.3 },
    });
    expect(started.status).toBe(201);
    expect(started.headers.get("location")).toBe(`${base}/coarse-30`);
    const experiment = started.body as Experiment;
    expect(experiment).toMatchObject({ control: control.version, state: "running" });
    const again = await admin(base, {
      method: "POST",
      body: { candidate: candidate.version, fraction: 0.5 },
    });
    expect(again.status).toBe(409);

    const input = inputs[0] as Record<string, string>;
    const arms = { control: 0, candidate: 0 };
    for (let i = 0; i < 60; i++) {
      const client = `client-${i}`;
      const arm = armOf(experiment, client);
      arms[arm]++;
      for (let repeat = 0; repeat < 2; repeat++) {
        const reply = await lookup(input, client);
        expect(reply.status).toBe(200);
        expect(reply.body.experiment).toEqual({ id: "coarse-30", arm });
        expect(reply.body.version).toBe(arm === "candidate" ? candidate.version : control.version);
        expect(reply.headers.get("vary")?.toLowerCase()).toContain("x-client-id");
      }
    }
    expect(arms.candidate).toBeGreaterThan(0);
    expect(arms.control).toBeGreaterThan(0);
    const anonymous = await lookup(input);
    expect(anonymous.body).toMatchObject({
      version: control.version,
      experiment: { arm: "control" },
    });
    // Naming a version steps outside the experiment.
    const pinned = await getJson(
      `${t.url}/v1/models/${MODEL}/predict?${new URLSearchParams(input)}&version=${candidate.version}`,
      { headers: { "x-client-id": "client-0" } },
    );
    expect(pinned.body.version).toBe(candidate.version);
    expect(pinned.body.experiment).toBeUndefined();

    // A batch names the arm once, at the top, not on each item.
    const batch = await getJson(`${t.url}/v1/models/${MODEL}/predict`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-client-id": "client-0" },
      body: JSON.stringify({ inputs: [input, inputs[1]] }),
    });
    expect(batch.status).toBe(200);
    expect(batch.body.experiment).toEqual({ id: "coarse-30", arm: armOf(experiment, "client-0") });
    for (const item of batch.body.results) {
      expect(item.status).toBe(200);
      expect(item.experiment).toBeUndefined();
    }

    // A miss answered by polling its job: the same arm and validator as the lookup's.
    const client = Array.from({ length: 60 }, (_, i) => `client-${i}`).find(
      (id) => armOf(experiment, id) === "candidate",
    ) as string;
    const headers = { "x-client-id": client };
    const miss = `${t.url}/v1/models/${MODEL}/predict?origin=TYR&destination=SBP&hour=2&dayOfWeek=1`;
    const queued = await getJson(`${miss}&wait=0`, { headers });
    expect(queued.status).toBe(202);
    const polled = await eventually(async () => {
      const r = await getJson(`${t.url}${queued.headers.get("location")}`, { headers });
      return r.status === 200 ? r : undefined;
    });
    expect(polled.body).toMatchObject({
      version: candidate.version,
      experiment: { id: "coarse-30", arm: "candidate" },
    });
    const looked = await getJson(miss, { headers });
    expect(looked.body.experiment).toEqual(polled.body.experiment);
    expect(polled.headers.get("etag")).toBe(looked.headers.get("etag"));
    const revalidated = await fetch(miss, {
      headers: { ...headers, "if-none-match": polled.headers.get("etag") as string },
    });
    expect(revalidated.status).toBe(304);

    // Two client ids in one request: refused, not taken as a third client ("a, b").
    const query = `/v1/models/${MODEL}/predict?${new URLSearchParams(input)}`;
    const two = await rawGet(t.url, query, { "x-client-id": ["client-0", "client-1"] });
    expect(two.status).toBe(400);
    expect(JSON.parse(two.body).error.message).toMatch(/x-client-id names two clients/);
    // One line listing two is the same request (a proxy may join lines with commas).
    const listed = await rawGet(t.url, query, { "x-client-id": "client-0, client-1" });
    expect(listed.status).toBe(400);
    // The same id repeated, in lines or in a list, or beside an empty line: that client,
    // in its own arm (the candidate's here), not "a, a" hashed as another client.
    const doubled = Array.from({ length: 200 }, (_, i) => `twice-${i}`).find(
      (id) =>
        armOf(experiment, id) === "candidate" && armOf(experiment, `${id}, ${id}`) === "control",
    ) as string;
    for (const sent of [[doubled, doubled], `${doubled}, ${doubled}`, ["", doubled]]) {
      const same = await rawGet(t.url, query, { "x-client-id": sent });
      expect(same.status, String(sent)).toBe(200);
      expect(JSON.parse(same.body).experiment.arm, String(sent)).toBe("candidate");
    }
  });

  it("matches the split over 10,000 client ids through the API, each keeping its arm", async () => {
    const experiment = (await admin(`${base}/coarse-30`)).body as Experiment;
    const input = inputs[3] as Record<string, string>;
    const ids = Array.from({ length: 10_000 }, (_, i) => `cohort-${i}`);
    const arms = new Map<string, string>();
    let next = 0;
    // 32 clients at a time: bounded load on the loopback server.
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        while (next < ids.length) {
          const id = ids[next++] as string;
          const reply = await lookup(input, id);
          arms.set(id, reply.body.experiment.arm);
        }
      }),
    );
    const candidates = [...arms.values()].filter((arm) => arm === "candidate").length;
    const n = ids.length;
    const tolerance = 4 * Math.sqrt(n * experiment.fraction * (1 - experiment.fraction));
    console.log(
      `cohorts over HTTP: ${candidates} of ${n} clients in the candidate arm at a split of ${experiment.fraction} (± ${tolerance.toFixed(0)})`,
    );
    expect(Math.abs(candidates - n * experiment.fraction)).toBeLessThan(tolerance);
    for (const id of ids.slice(0, 500)) {
      expect(arms.get(id)).toBe(armOf(experiment, id));
      const again = await lookup(inputs[4] as Record<string, string>, id);
      expect(again.body.experiment.arm).toBe(arms.get(id));
    }
  });

  it("grows the split without moving candidate clients back, seen within 1 s", async () => {
    const before = (await admin(`${base}/coarse-30`)).body as Experiment;
    const changed = await admin(`${base}/coarse-30`, { method: "PATCH", body: { fraction: 0.6 } });
    expect(changed.status).toBe(200);
    expect(changed.body.fraction).toBe(0.6);
    expect(changed.body.warnings).toEqual([]);
    const after = changed.body as Experiment;
    const input = inputs[1] as Record<string, string>;
    for (let i = 0; i < 40; i++) {
      const client = `client-${i}`;
      if (armOf(before, client) === "candidate") expect(armOf(after, client)).toBe("candidate");
      const reply = await lookup(input, client);
      expect(reply.body.experiment.arm).toBe(armOf(after, client));
    }
    expect((await admin(`${base}/coarse-30`, { method: "PATCH", body: {} })).status).toBe(400);

    // Two operators changing different settings at once: neither change is lost.
    const shadowRate = after.shadowRate;
    for (let i = 1; i <= 8; i++) {
      const [split, shadow] = await Promise.all([
        admin(`${base}/coarse-30`, { method: "PATCH", body: { fraction: 0.6 + i / 100 } }),
        admin(`${base}/coarse-30`, { method: "PATCH", body: { shadowRate: i / 100 } }),
      ]);
      expect([split.status, shadow.status]).toEqual([200, 200]);
      const now = (await admin(`${base}/coarse-30`)).body as Experiment;
      expect([now.fraction, now.shadowRate], `round ${i}`).toEqual([0.6 + i / 100, i / 100]);
    }
    // Shrinking is allowed, and said: candidate clients past the new split move back.
    const reset = { fraction: 0.6, shadowRate };
    const shrunk = await admin(`${base}/coarse-30`, { method: "PATCH", body: reset });
    expect(shrunk.status).toBe(200);
    expect(shrunk.body.warnings).toEqual([
      expect.stringMatching(/^the split shrank from 0\.6\d+ to 0\.6:/),
    ]);
  });

  it("gives each client its arm's table, whose answers are the server's for that client", async () => {
    const experiment = (await admin(`${base}/coarse-30`)).body as Experiment;
    const ids = Array.from({ length: 40 }, (_, i) => `table-client-${i}`);
    const byArm = new Map(ids.map((id) => [armOf(experiment, id), id]));
    expect([...byArm.keys()].sort()).toEqual(["candidate", "control"]);
    for (const [arm, id] of byArm) {
      const version = arm === "candidate" ? candidate.version : control.version;
      const listing = await getJson(`${t.url}/v1/models/${MODEL}/tables`, {
        headers: { "x-client-id": id },
      });
      expect(listing.body).toMatchObject({
        servedVersion: version,
        experiment: { id: experiment.id, arm },
        latest: { modelVersion: version },
      });
      expect(listing.headers.get("vary")).toMatch(/x-client-id/i);
      const latest = await fetch(`${t.url}/v1/models/${MODEL}/tables/latest`, {
        headers: { "x-client-id": id },
      });
      expect(latest.headers.get("content-location")).toBe(listing.body.latest.url);
      await latest.arrayBuffer();
      // The app's client, sending its id: its table and the server agree, input by input.
      const client = new HybridClient({
        baseUrl: t.url,
        model: MODEL,
        headers: { "X-Client-Id": id },
      });
      expect(await client.refresh()).toBe("full");
      expect(client.table?.header.modelVersion).toBe(version);
      for (const input of inputs.slice(0, 5)) {
        const local = await client.predict(input);
        expect(local.source).toBe("table");
        const server = await lookup(input, id);
        expect(server.body.experiment.arm).toBe(arm);
        expect(local.prediction).toEqual(server.body.prediction);
        expect(local.version).toBe(server.body.version);
        // The app knows its arm, from a table answer as from a server one.
        expect(local.experiment).toEqual(server.body.experiment);
      }
      const missed = await client.predict({ ...inputs[0], hour: "3", origin: "TYR" });
      expect(missed.source).toMatch(/^server:/);
      expect(missed.experiment).toEqual({ id: experiment.id, arm });
    }
  });

  it("compares in shadow without changing any reply, and reports what the tables say", async () => {
    const clients = Array.from({ length: 20 }, (_, i) => `shadow-client-${i}`);
    const sample = inputs.slice(0, 30);
    const strip = (body: Record<string, unknown>) => ({ ...body, source: undefined });
    const baseline = new Map<string, unknown>();
    for (const [i, input] of sample.entries()) {
      const client = clients[i % clients.length] as string;
      baseline.set(`${client}|${i}`, strip((await lookup(input, client)).body));
    }
    await admin(`${base}/coarse-30`, { method: "PATCH", body: { shadowRate: 1 } });
    const report0 = (await admin(`${base}/coarse-30`)).body;
    const comparedBefore =
      report0.arms.control.agreement.compared + report0.arms.candidate.agreement.compared;
    const agreedBefore =
      report0.arms.control.agreement.agreed + report0.arms.candidate.agreement.agreed;
    for (const [i, input] of sample.entries()) {
      const client = clients[i % clients.length] as string;
      const reply = await lookup(input, client);
      expect(strip(reply.body)).toEqual(baseline.get(`${client}|${i}`));
    }
    await t.service.experiments.shadow.drain();
    const series = (await (await fetch(`${t.url}/metrics`)).text())
      .split("\n")
      .filter((line) => /^predcache_shadow_comparisons_total\{.*experiment="coarse-30"/.test(line));
    const counted = series.reduce((n, line) => n + Number(line.split(" ").at(-1)), 0);
    expect(counted).toBeGreaterThanOrEqual(sample.length);
    const report = (await admin(`${base}/coarse-30`)).body;
    expect(report.status ?? 200).toBe(200);
    const compared =
      report.arms.control.agreement.compared + report.arms.candidate.agreement.compared;
    expect(compared - comparedBefore).toBe(sample.length);
    const agreed = report.arms.control.agreement.agreed + report.arms.candidate.agreement.agreed;

    // The tables part, recomputed directly from the two downloaded tables.
    const tables = await getJson(`${t.url}/v1/models/${MODEL}/tables`);
    const newest = (version: string) =>
      (tables.body.tables as { modelVersion: string; url: string }[]).find(
        (x) => x.modelVersion === version,
      ) as { url: string };
    const open = async (version: string) =>
      LookupTable.open(await (await fetch(`${t.url}${newest(version).url}`)).arrayBuffer());
    const [a, b] = await Promise.all([open(control.version), open(candidate.version)]);
    let common = 0;
    let changed = 0;
    let disagreeing = 0;
    let sum = 0;
    let max = 0;
    for (const input of inputs) {
      const key = control.encoder.encode(input);
      if (!key.ok) throw new Error("bad input");
      const x = a.getByKey(key.value.key) as Prediction;
      const y = b.getByKey(key.value.key) as Prediction;
      common++;
      const change = Math.abs(
        (mainValueOf(control.manifest, x) as number) - (mainValueOf(control.manifest, y) as number),
      );
      if (change !== 0) changed++;
      if (!agreementOf(control.manifest, x, y).agreed) disagreeing++;
      sum += change;
      max = Math.max(max, change);
    }
    expect(report.tables).toMatchObject({
      common,
      changed,
      disagreeing,
      control: { entries: inputs.length },
      candidate: { entries: inputs.length },
    });
    expect(report.tables.meanAbsChange).toBeCloseTo(sum / common, 12);
    expect(report.tables.maxAbsChange).toBeCloseTo(max, 12);
    expect(changed).toBeGreaterThan(0);
    // Shadow agreement on the sample, recomputed from the tables (agreement is symmetric).
    const sampleAgreeing = sample.filter((input) => {
      const key = control.encoder.encode(input);
      if (!key.ok) return false;
      const x = a.getByKey(key.value.key) as Prediction;
      const y = b.getByKey(key.value.key) as Prediction;
      return agreementOf(control.manifest, x, y).agreed;
    }).length;
    expect(agreed - agreedBefore).toBe(sampleAgreeing);
    console.log(
      `report: ${common} inputs in both tables, ${changed} changed, ${disagreeing} decisions flipped, mean |Δ| ${(sum / common).toFixed(4)}, max |Δ| ${max.toFixed(4)}`,
    );
    for (const arm of ["control", "candidate"] as const) {
      const r = report.arms[arm];
      expect(r.hits).toBeLessThanOrEqual(r.lookups);
      expect(r.main.bins.reduce((n: number, bin: { count: number }) => n + bin.count, 0)).toBe(
        r.main.count,
      );
      console.log(
        `report ${arm}: ${r.lookups} lookups, hit ratio ${r.hitRatio?.toFixed(3)}, mean ${r.main.output} ${r.main.mean?.toFixed(4)}, agreement ${r.agreement.agreed}/${r.agreement.compared}`,
      );
    }
  });

  it("counts each arm's lookups, hits and main output exactly", async () => {
    const started = await admin(base, {
      method: "POST",
      body: { id: "counted", candidate: candidate.version, fraction: 0.5 },
    });
    expect(started.status).toBe(409); // coarse-30 still runs
    await admin(`${base}/coarse-30/stop`, { method: "POST", body: { outcome: "revert" } });
    const experiment = (
      await admin(base, {
        method: "POST",
        body: { id: "counted", candidate: candidate.version, fraction: 0.5 },
      })
    ).body as Experiment;
    const expected = {
      control: { lookups: 0, sum: 0 },
      candidate: { lookups: 0, sum: 0 },
    };
    for (const [i, input] of inputs.slice(0, 40).entries()) {
      const client = `counted-${i}`;
      const reply = await lookup(input, client);
      const arm = armOf(experiment, client);
      expect(reply.body.experiment.arm).toBe(arm);
      const model = arm === "candidate" ? candidate : control;
      expected[arm].lookups++;
      expected[arm].sum += mainValueOf(model.manifest, reply.body.prediction) as number;
    }
    const report = (await admin(`${base}/counted`)).body;
    for (const arm of ["control", "candidate"] as const) {
      expect(report.arms[arm].lookups).toBe(expected[arm].lookups);
      // Every input was precomputed for both versions: all hits.
      expect(report.arms[arm].hitRatio).toBe(expected[arm].lookups > 0 ? 1 : null);
      if (expected[arm].lookups > 0)
        expect(report.arms[arm].main.mean).toBeCloseTo(
          expected[arm].sum / expected[arm].lookups,
          9,
        );
    }
  });

  it("answers an arm whose version a process has not loaded with control, counted in neither arm", async () => {
    const experiment = (await admin(`${base}/counted`)).body as Experiment;
    const before = (await admin(`${base}/counted`)).body.arms;
    // A process whose models folder lacks the candidate (say, its folder moved away).
    const models = await modelsDirWithCoarseCandidate();
    const candidateDir = candidate.directory.endsWith("-coarse") ? `${MODEL}-coarse` : MODEL;
    await rm(join(models, candidateDir), { recursive: true });
    const logged = capturedLog();
    const lone = await startTestService({
      env: { ...env, PREDCACHE_MODELS_DIR: models },
      liveWorker: false,
      log: logged.log,
    });
    try {
      const client = Array.from({ length: 60 }, (_, i) => `lone-${i}`).find(
        (id) => armOf(experiment, id) === "candidate",
      ) as string;
      const reply = await lookup(inputs[5] as Record<string, string>, client, lone);
      expect(reply.status, JSON.stringify(reply.body)).toBe(200);
      expect(reply.body).toMatchObject({
        version: control.version,
        experiment: { id: "counted", arm: "control" },
      });
      // Said once, however many lookups and refreshes of the experiment (every 500 ms).
      await new Promise((r) => setTimeout(r, 700));
      expect((await lookup(inputs[6] as Record<string, string>, client, lone)).status).toBe(200);
      const warnings = logged.lines.filter((l) => l.experiment === "counted" && l.level === 40);
      expect(warnings).toHaveLength(1);
      const ready = await getJson(`${lone.url}/readyz`);
      expect(ready.body.warnings).toEqual([
        expect.stringMatching(
          new RegExp(
            `experiment counted of ${MODEL}: its candidate version ${candidate.version} is not loaded here`,
          ),
        ),
      ]);
    } finally {
      await lone.close(); // flushes its tallies
    }
    const after = (await admin(`${base}/counted`)).body.arms;
    expect(after.control.lookups).toBe(before.control.lookups);
    expect(after.candidate.lookups).toBe(before.candidate.lookups);
  });

  it("stops: revert puts everyone on the active version, promote on the candidate, within 1 s", async () => {
    const input = inputs[2] as Record<string, string>;
    const clients = Array.from({ length: 30 }, (_, i) => `stop-client-${i}`);
    // Checked on the other API process: the stop goes through this one.
    const everyone = (version: string) => async () => {
      const replies = await Promise.all(clients.map((client) => lookup(input, client, other)));
      return replies.every((r) => r.body.version === version && r.body.experiment === undefined);
    };
    const reverted = await admin(`${base}/counted/stop`, {
      method: "POST",
      body: { outcome: "revert" },
    });
    expect(reverted.status).toBe(200);
    expect(reverted.body).toMatchObject({ state: "reverted", active: control.version });
    const revertMs = await switchTime(everyone(control.version));
    // Stopped experiments leave no series behind (coarse-30 had some: see the shadow case).
    const metrics = await (await fetch(`${t.url}/metrics`)).text();
    expect(metrics).toMatch(/# TYPE predcache_shadow_comparisons_total counter/);
    expect(metrics).not.toMatch(/experiment="coarse-30"/);
    expect(
      (await admin(`${base}/counted/stop`, { method: "POST", body: { outcome: "revert" } })).status,
    ).toBe(409);

    await admin(base, {
      method: "POST",
      body: { id: "to-promote", candidate: candidate.version, fraction: 0.2 },
    });
    // A promote meanwhile is made, and says the experiment's arms go on being served.
    const during = await admin(`/admin/v1/models/${MODEL}/versions/${control.version}/promote`, {
      method: "POST",
    });
    expect(during.status).toBe(200);
    expect(during.body.warnings).toContainEqual(
      expect.stringMatching(/experiment to-promote is running .* until it stops/),
    );
    const promoted = await admin(`${base}/to-promote/stop`, {
      method: "POST",
      body: { outcome: "promote" },
    });
    expect(promoted.body).toMatchObject({ state: "promoted", active: candidate.version });
    const promoteMs = await switchTime(everyone(candidate.version));
    console.log(
      `stop: everyone on the active version ${revertMs.toFixed(0)} ms after a revert, on the candidate ${promoteMs.toFixed(0)} ms after a promote`,
    );
    const listed = (await admin(base)).body.experiments as Experiment[];
    expect(listed.map((x) => [x.id, x.state])).toEqual(
      expect.arrayContaining([
        ["coarse-30", "reverted"],
        ["counted", "reverted"],
        ["to-promote", "promoted"],
      ]),
    );
  });
});
