/**
 * Experiments whose versions take different inputs, or whose candidate fails: no reply
 * fails because of the other arm's shadow comparisons, and the report counts the lookups
 * that failed and the comparisons that could not be made.
 */
import { cp, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ModelVersion } from "../../src/model/registry.ts";
import {
  editHour,
  eventually,
  getJson,
  labelled,
  modelsDirWithVersions,
  startTestService,
  type TestService,
  uniquePrefix,
} from "../helpers/service.ts";

const SECRET = "experiment-failures-token-0123456789";
const base = "/admin/v1/models/flight-delay/experiments";
let t: TestService;
/** A second API process on the same Redis. */
let other: TestService;
let models: string;
/** The demo model as shipped: the control of every experiment here. */
let original: ModelVersion;
/** Refuses hours past 20, which the control takes. */
let narrow: ModelVersion;
/** Takes hours up to 1000, which the model fails on past 23. */
let wide: ModelVersion;

beforeAll(async () => {
  models = await modelsDirWithVersions(["narrow", "wide", "minutes"]);
  await editHour(models, "narrow", (hour) => {
    hour.max = 20;
  });
  await editHour(models, "wide", (hour) => {
    hour.max = 1000;
  });
  const minutes = join(models, "flight-delay-minutes", "manifest.json");
  const manifest = JSON.parse(await readFile(minutes, "utf8"));
  await writeFile(minutes, JSON.stringify({ ...manifest, mainOutput: "expectedDelayMinutes" }));
  const env = {
    PREDCACHE_PREFIX: uniquePrefix("expfail"),
    PREDCACHE_MODELS_DIR: models,
    PREDCACHE_ADMIN_TOKENS: `ops:${SECRET}`,
    PREDCACHE_AUDIT_RATE: "0",
  };
  t = await startTestService({ env });
  other = await startTestService({ env, liveWorker: false });
  narrow = labelled(t.registry, "narrow");
  wide = labelled(t.registry, "wide");
  // The original version serves the control arm (the newest folder loaded may be active).
  original = t.registry
    .versions("flight-delay")
    .find(
      (v) => ![narrow, wide].includes(v) && v.manifest.mainOutput !== "expectedDelayMinutes",
    ) as ModelVersion;
  const promoted = await admin(
    `/admin/v1/models/flight-delay/versions/${original.version}/promote`,
    {},
  );
  expect(promoted.status).toBe(200);
});
afterAll(async () => {
  await other.close();
  await t.close();
});

function admin(path: string, body?: unknown) {
  return getJson(`${t.url}${path}`, {
    method: body ? "POST" : "GET",
    headers: {
      authorization: `Bearer ${SECRET}`,
      ...(body ? { "content-type": "application/json" } : {}),
    },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
}

function lookup(client: string, hour: number, dayOfWeek = 2) {
  const query = new URLSearchParams({
    origin: "SEA",
    destination: "DEN",
    hour: String(hour),
    dayOfWeek: String(dayOfWeek),
    wait: "5000",
  });
  return getJson(`${t.url}/v1/models/flight-delay/predict?${query}`, {
    headers: { "x-client-id": client },
  });
}

describe("experiments with failures", () => {
  it("counts shadow samples the other version refuses, and fails no reply for them", async () => {
    const started = await admin(base, {
      id: "narrow",
      candidate: narrow.version,
      fraction: 0.5,
      shadowRate: 1,
    });
    expect(started.status).toBe(201);
    // Said at the start, before any client of its cohort is refused.
    expect(started.body.warnings).toEqual([
      expect.stringMatching(/^the candidate takes hour from 0 to 20, control from 0 to 23: .*422/),
    ]);
    const clients = Array.from({ length: 24 }, (_, i) => `client-${i}`);
    // At once: control clients ask hour 22 (the candidate refuses it: their shadow
    // comparisons cannot be made), candidate clients ask valid misses of their version.
    const replies = await Promise.all(
      clients.flatMap((client, i) => [
        lookup(client, 22, 1 + (i % 7)),
        lookup(client, 5, 1 + (i % 7)),
      ]),
    );
    const byArm = { control: [] as number[], candidate: [] as number[] };
    for (const r of replies) {
      const arm = r.body.experiment?.arm ?? (r.status === 422 ? "candidate" : undefined);
      expect(arm, JSON.stringify(r.body)).toBeDefined();
      byArm[arm as "control" | "candidate"].push(r.status);
    }
    // Control clients: every reply 200. Candidate clients: 422 for hour 22, 200 for hour 5.
    expect(byArm.control.every((s) => s === 200)).toBe(true);
    expect(byArm.candidate.filter((s) => s !== 422).every((s) => s === 200)).toBe(true);
    const controlHour22 = byArm.control.length / 2;
    expect(controlHour22).toBeGreaterThan(0);
    await t.service.experiments?.shadow.drain();
    const report = await eventually(async () => {
      const r = (await admin(`${base}/narrow`)).body;
      return r.arms.control.agreement.notCompared.refused === controlHour22 ? r : undefined;
    });
    expect(report.arms.control.agreement.notCompared).toEqual({
      dropped: 0,
      refused: controlHour22,
      failed: 0,
    });
    expect(report.arms.candidate.agreement.notCompared.failed).toBe(0);
    // The candidate's own refusals (its clients' 422s) are in its report, apart.
    const refused = byArm.candidate.filter((s) => s === 422).length;
    expect(refused).toBeGreaterThan(0);
    expect(report.arms.candidate.refused).toBe(refused);
    expect(report.arms.control.refused).toBe(0);
    expect(report.arms.control.anonymous).toBe(0);
    // Lookups with no client id are control's, and counted apart.
    for (let i = 0; i < 3; i++) {
      const query = "origin=SEA&destination=DEN&hour=5&dayOfWeek=3&wait=5000";
      const anonymous = await getJson(`${t.url}/v1/models/flight-delay/predict?${query}`);
      expect(anonymous.body.experiment).toEqual({ id: "narrow", arm: "control" });
    }
    const counted = await eventually(async () => {
      const r = (await admin(`${base}/narrow`)).body;
      return r.arms.control.anonymous === 3 ? r : undefined;
    });
    expect(counted.arms.control.lookups).toBe(report.arms.control.lookups + 3);
    // A rollback meanwhile says, as a promote does, that the arms keep their versions.
    const rolled = await admin("/admin/v1/models/flight-delay/rollback", {});
    expect(rolled.status).toBe(200);
    // (The version rolled back to, never precomputed here, is said to be cold too.)
    expect(rolled.body.warnings).toEqual([
      expect.stringMatching(/has nothing precomputed/),
      expect.stringMatching(/^experiment narrow is running/),
    ]);
    await admin(`/admin/v1/models/flight-delay/versions/${original.version}/promote`, {});
    expect((await admin(`${base}/narrow/stop`, { outcome: "revert" })).status).toBe(200);
  });

  it("counts an arm's failed lookups in its lookups, and says how many failed", async () => {
    const started = await admin(base, { id: "wide", candidate: wide.version, fraction: 1 });
    expect(started.status, JSON.stringify(started.body)).toBe(201);
    const ok = await lookup("anyone", 7, 3);
    expect(ok.status).toBe(200);
    expect(ok.body.experiment).toEqual({ id: "wide", arm: "candidate" });
    const failed = await lookup("anyone", 900, 3);
    expect(failed.status).toBe(500);
    // A 202 names what is computed for whom, as its poll does.
    const asked = await getJson(
      `${t.url}/v1/models/flight-delay/predict?origin=BOS&destination=ORD&hour=4&dayOfWeek=3&wait=0`,
      { headers: { "x-client-id": "anyone" } },
    );
    expect(asked.status).toBe(202);
    const named = {
      model: "flight-delay",
      version: wide.version,
      key: '["BOS","ORD",4,3]',
      experiment: { id: "wide", arm: "candidate" },
    };
    expect(asked.body).toMatchObject({ status: "pending", ...named });
    // The model's description is the one of the version this client is served.
    const described = await getJson(`${t.url}/v1/models/flight-delay`, {
      headers: { "x-client-id": "anyone" },
    });
    expect(described.body).toMatchObject({
      version: wide.version,
      experiment: { id: "wide", arm: "candidate" },
    });
    expect(
      described.body.inputSchema.features.find((f: { name: string }) => f.name === "hour").max,
    ).toBe(1000);
    expect(described.headers.get("vary")).toMatch(/x-client-id/i);
    const poll = await getJson(`${t.url}${asked.body.job.url}`, {
      headers: { "x-client-id": "anyone" },
    });
    if (poll.status === 202) expect(poll.body).toMatchObject(named);
    else expect(poll.body).toMatchObject({ status: "completed", ...named });
    const report = await eventually(async () => {
      const r = (await admin(`${base}/wide`)).body;
      return r.arms.candidate.lookups === 3 ? r : undefined;
    });
    expect(report.arms.candidate).toMatchObject({ lookups: 3, failed: 1, hits: 0 });
    expect(report.arms.candidate.main.count).toBe(1);
    expect((await admin(`${base}/wide/stop`, { outcome: "revert" })).status).toBe(200);
  });

  it("refuses a candidate whose main output differs from the control's", async () => {
    const minutes = labelled(t.registry, "minutes");
    const r = await admin(base, { id: "minutes", candidate: minutes.version, fraction: 0.5 });
    expect(r.status).toBe(400);
    expect(r.body.error.message).toMatch(/main outputs differ/);
    expect((await admin(`${base}/minutes`)).status).toBe(404);
  });

  it("starts on a version only this process found, and every process serves it", async () => {
    // Dropped into the models folder, found by this process alone (no reload announced).
    const source = join(models, "flight-delay-narrow");
    const dir = join(models, "flight-delay-late");
    await cp(source, dir, { recursive: true });
    const file = join(dir, "manifest.json");
    const manifest = JSON.parse(await readFile(file, "utf8"));
    const outputs = manifest.outputs.map((o: { digits: number }) => ({ ...o, digits: 6 }));
    await writeFile(file, JSON.stringify({ ...manifest, label: "late", outputs }));
    await t.registry.reload();
    const late = labelled(t.registry, "late");
    expect(other.registry.get("flight-delay", late.version)).toBeUndefined();
    const started = await admin(base, { id: "late", candidate: late.version, fraction: 1 });
    expect(started.status).toBe(201);
    const served = await eventually(async () => {
      const r = await getJson(
        `${other.url}/v1/models/flight-delay/predict?origin=SFO&destination=LAX&hour=7&dayOfWeek=1&wait=5000`,
        { headers: { "x-client-id": "someone" } },
      );
      return r.body.experiment?.arm === "candidate" ? r : undefined;
    }, 3_000);
    expect(served.body.version).toBe(late.version);
    const stopped = await admin(`${base}/late/stop`, { outcome: "revert" });
    expect(stopped.status).toBe(200);
    // The audit says what each action did.
    const audit = await eventually(async () => {
      const entries = (await admin("/admin/v1/audit?limit=2&refused=false")).body.entries;
      return entries?.length === 2 ? entries : undefined;
    });
    expect(audit.map((e: { detail?: string }) => e.detail)).toEqual([
      `late: reverted, active ${stopped.body.active}`,
      `late: ${stopped.body.control} vs ${late.version}, fraction 1, shadow 0`,
    ]);
  });
});
