/** The admin API: token guard on every route, audit log, runs, versions, stats, gc. */
import { createHash } from "node:crypto";
import { copyFile, mkdir, readFile, rename, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuditLog } from "../../src/admin/audit.ts";
import { loadConfig } from "../../src/config.ts";
import { createLogger } from "../../src/log.ts";
import type { PrecomputeWorkerProcess } from "../../src/service.ts";
import {
  eventually,
  getJson,
  modelsDirWithVersions,
  precomputeWorkerFor,
  startTestService,
  type TestService,
  tempDataDir,
  uniquePrefix,
} from "../helpers/service.ts";

const SECRET = "s3cret-admin-token-0123456789";
const OTHER = "another-token-abcdefghijklmnop";
const logLines: string[] = [];
const routes: [string, string][] = [
  ["POST", "/admin/v1/models/flight-delay/precompute"],
  ["GET", "/admin/v1/runs"],
  ["GET", "/admin/v1/runs/run-x"],
  ["DELETE", "/admin/v1/runs/run-x"],
  ["GET", "/admin/v1/models/flight-delay/versions"],
  ["POST", "/admin/v1/models/flight-delay/versions/abc/promote"],
  ["POST", "/admin/v1/models/flight-delay/rollback"],
  ["POST", "/admin/v1/models/flight-delay/reload"],
  ["POST", "/admin/v1/models/flight-delay/gc"],
  ["GET", "/admin/v1/stats"],
  ["GET", "/admin/v1/audit"],
];

let t: TestService;
let worker: PrecomputeWorkerProcess;
let versions: [string, string];
let modelsDir: string;

function admin(path: string, init: { method?: string; body?: unknown; token?: string } = {}) {
  return getJson(`${t.url}${path}`, {
    method: init.method ?? "GET",
    headers: {
      authorization: `Bearer ${init.token ?? SECRET}`,
      ...(init.body ? { "content-type": "application/json" } : {}),
    },
    ...(init.body ? { body: JSON.stringify(init.body) } : {}),
  });
}

const inputs = [
  { origin: "SFO", destination: "LAX", hour: 7, dayOfWeek: 1 },
  { origin: "ORD", destination: "ATL", hour: 18, dayOfWeek: 5 },
  { origin: "SEA", destination: "DEN", hour: 9, dayOfWeek: 3 },
];

beforeAll(async () => {
  modelsDir = await modelsDirWithVersions(["next"]);
  const dataDir = await tempDataDir();
  const env = {
    PREDCACHE_PREFIX: uniquePrefix("admin"),
    PREDCACHE_MODELS_DIR: modelsDir,
    PREDCACHE_DATA_DIR: dataDir,
    PREDCACHE_ADMIN_TOKENS: `ops:${SECRET},ci:${OTHER}`,
    PREDCACHE_KEEP_VERSIONS: "1",
  };
  const sink = new Writable({
    write(chunk, _encoding, done) {
      logLines.push(String(chunk));
      done();
    },
  });
  t = await startTestService({ env, log: createLogger("trace", "test", sink) });
  worker = await precomputeWorkerFor(t);
  versions = t.registry.versions("flight-delay").map((v) => v.version) as [string, string];
});
afterAll(async () => {
  await worker.close();
  await t.close();
});

describe("admin API auth", () => {
  it("refuses every route without a token (401) and with a wrong one (403)", async () => {
    for (const [method, path] of routes) {
      const none = await getJson(`${t.url}${path}`, { method });
      expect(none.status, `${method} ${path}`).toBe(401);
      expect(none.body.error.code).toBe("unauthorized");
      expect(none.headers.get("www-authenticate")).toMatch(/^Bearer/);
      const wrong = await admin(path, { method, token: "wrong-token-wrong-token" });
      expect(wrong.status, `${method} ${path}`).toBe(403);
      const malformed = await getJson(`${t.url}${path}`, {
        method,
        headers: { authorization: SECRET },
      });
      expect(malformed.status).toBe(401);
    }
  });

  it("never logs a token, and audits who did what with the token's id", async () => {
    await admin("/admin/v1/models/flight-delay/rollback", { method: "POST", token: OTHER });
    await admin("/admin/v1/runs");
    const all = logLines.join("");
    expect(all).not.toContain(SECRET);
    expect(all).not.toContain(OTHER);
    const { body } = await admin("/admin/v1/audit");
    const entry = body.entries.find((e: { actor: string }) => e.actor === "ci");
    expect(entry).toMatchObject({
      action: "POST /models/:model/rollback",
      target: "/admin/v1/models/flight-delay/rollback",
    });
    expect(
      body.entries.some(
        (e: { actor: string; status: number }) => e.actor === "anonymous" && e.status === 401,
      ),
    ).toBe(true);
    expect(JSON.stringify(body)).not.toContain(SECRET);
  });

  it("keeps refused attempts apart and bounded: a flood of them pushes no real entry out", async () => {
    await admin("/admin/v1/models/flight-delay/rollback", { method: "POST" });
    // A small cap for refusals, so a flood past it is quick to send.
    const capped = new AuditLog(
      t.service.redis,
      t.service.keys,
      createLogger("silent"),
      10_000,
      20,
    );
    const long = `/admin/v1/${"a".repeat(15_000)}`;
    for (let i = 0; i < 300; i++)
      await capped.record({ actor: "anonymous", action: `GET ${long}`, target: long, status: 401 });
    // Over HTTP too: refusals are recorded as ever, into their own stream.
    expect((await getJson(`${t.url}${long}`)).status).toBe(401);
    const refused = await t.service.redis.xlen(t.service.keys.auditRefused());
    expect(refused).toBeLessThan(300);
    const all = (await admin("/admin/v1/audit?limit=10000")).body.entries;
    expect(all.some((e: { actor: string }) => e.actor === "ci")).toBe(true);
    expect(all.some((e: { actor: string }) => e.actor === "anonymous")).toBe(true);
    for (const e of all) expect(e.target.length + e.action.length).toBeLessThan(500);
    const actions = (await admin("/admin/v1/audit?limit=10000&refused=false")).body.entries;
    expect(actions.length).toBeGreaterThan(0);
    expect(actions.every((e: { status: number }) => e.status !== 401 && e.status !== 403)).toBe(
      true,
    );
    expect((await admin("/admin/v1/audit?refused=maybe")).status).toBe(400);
  });

  it("puts the queue dashboard (bull-board) behind the token, with a Basic prompt for browsers", async () => {
    const none = await fetch(`${t.url}/admin/queues`);
    expect(none.status).toBe(401);
    expect(none.headers.get("www-authenticate")).toMatch(/^Basic realm="predcache-admin"/);
    const basic = (secret: string) => `Basic ${Buffer.from(`any:${secret}`).toString("base64")}`;
    expect(
      (
        await fetch(`${t.url}/admin/queues`, {
          headers: { authorization: basic("wrong-token-wrong") },
        })
      ).status,
    ).toBe(401); // with the challenge again: a browser asks anew only after a 401
    const page = await fetch(`${t.url}/admin/queues`, {
      headers: { authorization: basic(SECRET) },
    });
    expect(page.status).toBe(200);
    expect(await page.text()).toMatch(/predcache queues/);
    // With a trailing slash: sent to the page, once the token is checked.
    expect((await fetch(`${t.url}/admin/queues/`, { redirect: "manual" })).status).toBe(401);
    const slashed = await fetch(`${t.url}/admin/queues/?x=1`, {
      headers: { authorization: basic(SECRET) },
      redirect: "manual",
    });
    expect(slashed.status).toBe(308);
    expect(slashed.headers.get("location")).toBe("/admin/queues?x=1");
    const api = await admin("/admin/queues/api/queues?activeQueue=live&page=1&jobsPerPage=10");
    expect(api.status).toBe(200);
    expect(api.body.queues.map((q: { name: string }) => q.name).sort()).toEqual([
      "live",
      "precompute",
      "precompute-chunks",
    ]);
    expect((await getJson(`${t.url}/admin/queues/api/queues`)).status).toBe(401);
    // What is changed through the dashboard is audited like any admin change, refusals too.
    const pause = "/admin/queues/api/queues/precompute-chunks/pause";
    expect((await admin(pause, { method: "PUT" })).status).toBe(200);
    try {
      expect(await t.service.precompute.chunkQueue.isPaused()).toBe(true);
    } finally {
      await t.service.precompute.chunkQueue.resume();
    }
    expect((await getJson(`${t.url}${pause}`, { method: "PUT" })).status).toBe(401);
    // A change sent by another site's page (cached Basic credentials ride along): refused.
    const host = new URL(t.url).host;
    for (const from of [
      { origin: "https://evil.example" },
      { "sec-fetch-site": "cross-site" },
      { "sec-fetch-site": "same-site", origin: `http://${host}` },
    ]) {
      const forged = await fetch(`${t.url}/admin/queues/api/queues/live/add`, {
        method: "POST",
        headers: { authorization: basic(SECRET), "content-type": "text/plain", ...from },
        body: JSON.stringify({ name: "csrf-probe", data: {}, options: { delay: 86_400_000 } }),
      });
      expect(forged.status).toBe(403);
    }
    expect(await t.service.live.queue.getDelayedCount()).toBe(0);
    const own = await fetch(`${t.url}${pause}`, {
      method: "PUT",
      headers: { authorization: basic(SECRET), origin: `http://${host}` },
    });
    expect(own.status).toBe(200);
    await t.service.precompute.chunkQueue.resume();
    expect(page.headers.get("x-frame-options")).toBe("DENY");
    const { entries } = (await admin("/admin/v1/audit?limit=20")).body;
    expect(entries).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          actor: "ops",
          action: "PUT /queues/api/queues/precompute-chunks/pause",
          status: 200,
        }),
        expect.objectContaining({ actor: "anonymous", target: pause, status: 401 }),
      ]),
    );
    // The two refused visits to the page itself above: audited once each, not twice.
    const page401s = entries.filter((e: { target: string }) => e.target === "/admin/queues");
    expect(page401s.map((e: { status: number }) => e.status).sort()).toEqual([401, 401]);
  });

  it("is off, with a clear error, when no token is configured", async () => {
    const off = await startTestService({ env: { PREDCACHE_ADMIN_TOKENS: "" }, liveWorker: false });
    try {
      const r = await getJson(`${off.url}/admin/v1/runs`, {
        headers: { authorization: `Bearer ${SECRET}` },
      });
      expect(r.status).toBe(403);
      expect(r.body.error.message).toMatch(/PREDCACHE_ADMIN_TOKENS/);
      // Without credentials, an attempt is anonymous's (not an "unknown token").
      expect((await getJson(`${off.url}/admin/v1/runs`)).status).toBe(403);
      // Refused attempts are recorded after the reply (in the background): both, in time.
      const actors = await eventually(async () => {
        const entries = await off.service.redis.xrevrange(
          off.service.keys.auditRefused(),
          "+",
          "-",
          "COUNT",
          2,
        );
        return entries.length === 2 ? entries.map(([, f]) => f[f.indexOf("actor") + 1]) : undefined;
      });
      expect(actors.sort()).toEqual(["anonymous", "unknown-token"]);
    } finally {
      await off.close();
    }
  });

  it("refuses short secrets at start without echoing them", () => {
    expect(() => loadConfig({ PREDCACHE_ADMIN_TOKENS: "ops:short" })).toThrow(/at least 16/);
    // A digest one digit short (or not hex) is a mistake, not a plain secret "sha256:…".
    const digest = "a".repeat(63);
    for (const bad of [`ops:sha256:${digest}`, "ops:sha256:zzzz", `ops:SHA256:${digest}bb`])
      expect(() => loadConfig({ PREDCACHE_ADMIN_TOKENS: bad })).toThrow(/64 hex digits/);
    expect(() => loadConfig({ PREDCACHE_API_KEYS: `app:sha256:${digest}` })).toThrow(
      /64 hex digits/,
    );
    expect(() => loadConfig({ PREDCACHE_ADMIN_TOKENS: "ops:short" })).not.toThrow(/short/);
    // A secret with a space could never be sent as "Bearer <secret>": refused, for every kind.
    for (const setting of [
      "PREDCACHE_ADMIN_TOKENS",
      "PREDCACHE_API_KEYS",
      "PREDCACHE_METRICS_TOKENS",
    ])
      expect(() => loadConfig({ [setting]: "x:abc def ghi jkl mno" })).toThrow(
        new RegExp(`${setting}: .* no spaces`),
      );
    // One secret under two ids, as written or one of them hashed: whose action is whose?
    const secret = "shared-secret-0123456789";
    const hashed = createHash("sha256").update(secret).digest("hex");
    for (const tokens of [`alice:${secret},bob:${secret}`, `alice:${secret},bob:sha256:${hashed}`])
      expect(() => loadConfig({ PREDCACHE_ADMIN_TOKENS: tokens })).toThrow(
        /alice and bob have the same secret/,
      );
    expect(() =>
      loadConfig({ PREDCACHE_ADMIN_TOKENS: `alice:${secret},bob:${secret}x` }),
    ).not.toThrow();
  });
});

describe("admin API runs and versions", () => {
  it("starts a run (202), refuses an identical active one (409), reports progress", async () => {
    // Long enough (200 one-input chunks) that the second request surely meets it running.
    const many = Array.from({ length: 200 }, (_, i) => ({
      origin: "SFO",
      destination: "LAX",
      hour: i % 24,
      dayOfWeek: 1 + (Math.floor(i / 24) % 7),
    }));
    const body = {
      source: { kind: "inline", inputs: [...inputs, ...many] },
      version: versions[0],
      chunkSize: 1,
    };
    const started = await admin("/admin/v1/models/flight-delay/precompute", {
      method: "POST",
      body,
    });
    expect(started.status).toBe(202);
    expect(started.headers.get("location")).toBe(`/admin/v1/runs/${started.body.runId}`);
    const again = await admin("/admin/v1/models/flight-delay/precompute", { method: "POST", body });
    expect(again.status).toBe(409);
    expect(again.body.error.details.runId).toBe(started.body.runId);
    const done = await eventually(async () => {
      const r = await admin(`/admin/v1/runs/${started.body.runId}`);
      return r.body.state === "completed" ? r.body : undefined;
    }, 30_000);
    expect(done.chunks).toEqual({ planned: 203, done: 203, total: 203 });
    // 3 + 168 distinct inputs (SFO→LAX × 24 hours × 7 days, one of them also in `inputs`)
    expect(done.written + done.skipped).toBe(203);
    expect(done.written).toBe(170);
    const listed = await admin("/admin/v1/runs");
    expect(listed.body.runs.map((r: { id: string }) => r.id)).toContain(started.body.runId);
    expect(listed.headers.get("cache-control")).toBe("no-store");
    // The audit entry says which run it started, of which version.
    const { entries } = (await admin("/admin/v1/audit?refused=false")).body;
    expect(entries).toContainEqual(
      expect.objectContaining({
        action: "POST /models/:model/precompute",
        status: 202,
        detail: `run ${started.body.runId} of version ${versions[0]}`,
      }),
    );
  });

  it("answers bad requests with 400/404 and changes nothing", async () => {
    const before = (await admin("/admin/v1/runs")).body.runs.length;
    const cases: [string, unknown, number][] = [
      ["/admin/v1/models/nope/precompute", { source: { kind: "inline", inputs } }, 404],
      // An uploaded row with a "__proto__" field: unknown, as on every lookup path.
      [
        "/admin/v1/models/flight-delay/precompute",
        JSON.parse(
          '{"source":{"kind":"inline","inputs":[{"origin":"SFO","destination":"LAX","hour":1,"dayOfWeek":1,"__proto__":"x"}]}}',
        ),
        422,
      ],
      [
        "/admin/v1/models/flight-delay/precompute",
        { source: { kind: "seed", file: "/etc/passwd" } },
        400,
      ],
      ["/admin/v1/models/flight-delay/precompute", { source: { kind: "magic" } }, 400],
      // Inputs that can never be computed: refused with the run, not failed after it.
      [
        "/admin/v1/models/flight-delay/precompute",
        { source: { kind: "inline", inputs: [...inputs, { origin: "SFO", hour: 99 }] } },
        422,
      ],
      [
        "/admin/v1/models/flight-delay/precompute",
        // Features without a default left out: which ones is said, nothing is planned.
        { source: { kind: "grid", axes: { hour: [1] } } },
        400,
      ],
      [
        "/admin/v1/models/flight-delay/precompute",
        {
          source: {
            kind: "grid",
            axes: {
              origin: ["SFO"],
              destination: ["LAX"],
              dayOfWeek: [1],
              hour: { min: 5, max: 1 },
            },
          },
        },
        400,
      ],
      // A misspelt field would change the run: refused, not dropped.
      [
        "/admin/v1/models/flight-delay/precompute",
        { source: { kind: "inline", inputs }, promte: true },
        400,
      ],
      [
        "/admin/v1/models/flight-delay/precompute",
        { source: { kind: "seed", file: "seeds/inputs/flight-delay-common.csv", limt: 10 } },
        400,
      ],
      [
        "/admin/v1/models/flight-delay/precompute",
        { source: { kind: "traffic", top: 5 }, version: "ffffffffffff" },
        404,
      ],
    ];
    // Seed files on the server whose top is bad: refused with the request, as uploaded
    // inputs are, not started and failed.
    const seedFile = async (name: string, text: string | Buffer) => {
      const file = join(t.config.dataDir, name);
      await writeFile(file, text);
      return file;
    };
    const header = "origin,destination,hour,dayOfWeek\n";
    for (const [name, text, status] of [
      ["header-only.csv", header, 400],
      ["empty.csv", "", 400],
      ["wrong-header.csv", "Origin,Destination,Hour,DayOfWeek\nSFO,LAX,7,1\n", 422],
      ["bad-row.csv", `${header}SFO,LAX,7,1\nSFO,LAX,99,1\n`, 422],
      ["ragged.csv", `${header}SFO,LAX,7\n`, 400],
      [
        "bad-line.jsonl",
        '{"origin":"SFO","destination":"LAX","hour":7,"dayOfWeek":1}\nnope\n',
        400,
      ],
    ] as const)
      cases.push([
        "/admin/v1/models/flight-delay/precompute",
        { source: { kind: "seed", file: await seedFile(name, text) } },
        status,
      ]);
    // A link under the data folder to a file outside every root: refused like the file.
    const link = join(t.config.dataDir, "passwd.csv");
    await symlink("/etc/passwd", link).catch(() => {});
    cases.push([
      "/admin/v1/models/flight-delay/precompute",
      { source: { kind: "seed", file: link } },
      400,
    ]);
    for (const [path, body, status] of cases) {
      const r = await admin(path, { method: "POST", body });
      expect(r.status, JSON.stringify(body)).toBe(status);
      expect(r.body.error.message).toBeTruthy();
      if ((body as { version?: string }).version)
        expect(r.body.error.code).toBe("version_not_found");
    }
    const notJson = await getJson(`${t.url}/admin/v1/models/flight-delay/precompute`, {
      method: "POST",
      headers: { authorization: `Bearer ${SECRET}`, "content-type": "application/json" },
      body: "{nope",
    });
    expect(notJson.status).toBe(400);
    const asText = await getJson(`${t.url}/admin/v1/models/flight-delay/precompute`, {
      method: "POST",
      headers: { authorization: `Bearer ${SECRET}`, "content-type": "text/plain" },
      body: JSON.stringify({ source: { kind: "inline", inputs } }),
    });
    expect(asText.status).toBe(415);
    expect(asText.body.error.code).toBe("unsupported_media_type");
    expect((await admin("/admin/v1/runs")).body.runs.length).toBe(before);
    expect((await admin("/admin/v1/runs/run-nope")).status).toBe(404);
    expect((await admin("/admin/v1/runs/run-nope", { method: "DELETE" })).status).toBe(404);
    for (const limit of ["1.5", "-1", "0", "abc", ""])
      for (const listing of ["runs", "audit"]) {
        const r = await admin(`/admin/v1/${listing}?limit=${limit}`);
        expect(r.status, `${listing}?limit=${limit}`).toBe(400);
        expect(r.body.error.code).toBe("bad_request");
      }
    expect((await admin("/admin/v1/runs?limit=1")).body.runs.length).toBeLessThanOrEqual(1);
  });

  it("cancels a run", async () => {
    const many = Array.from({ length: 24 }, (_, h) => ({
      origin: "BOS",
      destination: "MIA",
      hour: h,
      dayOfWeek: 2,
    }));
    const started = await admin("/admin/v1/models/flight-delay/precompute", {
      method: "POST",
      body: { source: { kind: "inline", inputs: many }, version: versions[0], chunkSize: 1 },
    });
    const cancelled = await admin(`/admin/v1/runs/${started.body.runId}`, { method: "DELETE" });
    expect(cancelled.status).toBe(200);
    expect(cancelled.body.state).toBe("cancelled");
    await new Promise((r) => setTimeout(r, 500));
    const after = (await admin(`/admin/v1/runs/${started.body.runId}`)).body;
    expect(after.state).toBe("cancelled");
    expect(after.table).toBeNull(); // a cancelled run publishes no table (and promotes nothing)
  });

  it("promotes, rolls back, and lists versions with entries, tables and the rollback target", async () => {
    const [v1, v2] = versions;
    const first = await admin(`/admin/v1/models/flight-delay/versions/${v1}/promote`, {
      method: "POST",
    });
    expect(first.status).toBe(200);
    const second = await admin(`/admin/v1/models/flight-delay/versions/${v2}/promote`, {
      method: "POST",
    });
    expect(second.body).toMatchObject({ model: "flight-delay", active: v2, previous: v1 });
    const listed = await admin("/admin/v1/models/flight-delay/versions");
    const byId = Object.fromEntries(
      listed.body.versions.map((v: { version: string }) => [v.version, v]),
    );
    expect(byId[v2]).toMatchObject({ active: true, rollbackTarget: false });
    expect(byId[v1]).toMatchObject({ active: false, rollbackTarget: true });
    expect(byId[v1].entries).toBeGreaterThanOrEqual(3);
    expect(byId[v1].tables.length).toBeGreaterThan(0);
    const back = await admin("/admin/v1/models/flight-delay/rollback", { method: "POST" });
    expect(back.body).toEqual({ model: "flight-delay", active: v1, previous: v2, warnings: [] });
    await eventually(async () => {
      const r = await getJson(
        `${t.url}/v1/models/flight-delay/predict?origin=SFO&destination=LAX&hour=7&dayOfWeek=1`,
      );
      return r.body.version === v1 ? true : undefined;
    }, 1_000);
    const unknown = await admin("/admin/v1/models/flight-delay/versions/ffffffffffff/promote", {
      method: "POST",
    });
    expect(unknown.status).toBe(404);
    expect(unknown.body.error).toMatchObject({
      code: "version_not_found",
      details: { versions: expect.arrayContaining([v1, v2]) },
    });
    expect((await admin("/admin/v1/models/nope/rollback", { method: "POST" })).status).toBe(404);
  });

  it("answers a delta between two versions' tables that no delta can bridge with 409", async () => {
    // The second version rounds its outputs to another number of digits: its packed
    // columns have other scales, so the first's values cannot be re-based onto them.
    const [v1, v2] = versions;
    for (const version of [v1, v2]) {
      const run = await admin("/admin/v1/models/flight-delay/precompute", {
        method: "POST",
        body: { source: { kind: "inline", inputs }, version },
      });
      expect(run.status).toBe(202);
      await eventually(async () => {
        const r = await admin(`/admin/v1/runs/${run.body.runId}`);
        return r.body.state === "completed" ? true : undefined;
      }, 30_000);
    }
    const listing = await getJson(`${t.url}/v1/models/flight-delay/tables`);
    const tables = listing.body.tables as {
      generation: string;
      modelVersion: string;
      encodingHash: string;
    }[];
    const from = tables.find((x) => x.modelVersion === v1);
    const to = tables.find((x) => x.modelVersion === v2);
    if (!from || !to) throw new Error("a table of each version");
    expect(from.encodingHash).toBe(to.encodingHash);
    const delta = await getJson(
      `${t.url}/v1/models/flight-delay/tables/${to.generation}/delta?from=${from.generation}`,
    );
    expect(delta.status).toBe(409);
    expect(delta.body.error).toMatchObject({ code: "conflict" });
    expect(delta.body.error.message).toBe(
      "the two tables have different value columns: download the full table",
    );
    // The full table, which the client then falls back to, is there.
    const full = await fetch(`${t.url}/v1/models/flight-delay/tables/${to.generation}`);
    expect(full.status).toBe(200);
    expect((await full.arrayBuffer()).byteLength).toBeGreaterThan(0);
  });

  it("reports hit ratios, queue depths, top missed inputs and table coverage", async () => {
    const v1 = versions[0];
    await admin(`/admin/v1/models/flight-delay/versions/${v1}/promote`, { method: "POST" });
    for (const input of inputs) {
      const q = new URLSearchParams(Object.entries(input).map(([k, v]) => [k, String(v)]));
      await getJson(`${t.url}/v1/models/flight-delay/predict?${q}`);
    }
    await getJson(
      `${t.url}/v1/models/flight-delay/predict?origin=ABQ&destination=ORD&hour=3&dayOfWeek=2&wait=0`,
    );
    const { status, body } = await admin("/admin/v1/stats");
    expect(status).toBe(200);
    const m = body.models["flight-delay"];
    expect(m.lookups).toBeGreaterThanOrEqual(4);
    // Counted by the version that answered: they add up to the lookups.
    const byVersion = Object.values(m.byVersion as Record<string, number>);
    expect(byVersion.reduce((a, b) => a + b, 0)).toBe(m.lookups);
    expect(m.misses).toBeGreaterThanOrEqual(1);
    expect(m.coverage.window).toBeGreaterThanOrEqual(4);
    expect(m.coverage.covered).toBeGreaterThanOrEqual(3);
    expect(m.coverage.ratio).toBeGreaterThan(0);
    expect(m.coverage.ratio).toBeLessThan(1);
    expect(body.queues.live).toHaveProperty("waiting");
    expect(body.queues.precompute).toHaveProperty("completed");
    expect(m.topMissed).toContainEqual({ key: '["ABQ","ORD",3,2]', count: 1 });
  });

  it("registers a version folder dropped into the models directory, without a restart", async () => {
    const source = join(modelsDir, "flight-delay");
    const dropped = join(modelsDir, "flight-delay-dropped");
    await mkdir(dropped);
    await copyFile(join(source, "model.onnx"), join(dropped, "model.onnx"));
    const manifest = JSON.parse(await readFile(join(source, "manifest.json"), "utf8"));
    manifest.label = "dropped";
    manifest.outputs = manifest.outputs.map((o: { digits: number }) => ({
      ...o,
      digits: o.digits + 3,
    }));
    await writeFile(join(dropped, "manifest.json"), JSON.stringify(manifest));
    const broken = join(modelsDir, "flight-delay-broken");
    await mkdir(broken);
    await writeFile(join(broken, "manifest.json"), "{ not json");
    // A valid manifest that does not fit its model: every miss on it would fail.
    const misfit = join(modelsDir, "flight-delay-misfit");
    await mkdir(misfit);
    await copyFile(join(source, "model.onnx"), join(misfit, "model.onnx"));
    await writeFile(
      join(misfit, "manifest.json"),
      JSON.stringify({
        ...manifest,
        label: "misfit",
        encoding: { ...manifest.encoding, input: { ...manifest.encoding.input, dtype: "float32" } },
      }),
    );

    const reloaded = await admin("/admin/v1/models/flight-delay/reload", { method: "POST" });
    expect(reloaded.status).toBe(200);
    expect(reloaded.body.added).toHaveLength(1);
    expect(reloaded.body.failed).toEqual([
      expect.objectContaining({ directory: broken }),
      expect.objectContaining({
        directory: misfit,
        error: expect.stringMatching(/input "features" is INT64, the manifest says float32/),
      }),
    ]);
    const fresh = reloaded.body.added[0].version;
    expect(reloaded.body.versions).toContain(fresh);
    // Served at once through this API, and computed by the live worker (which rescans).
    const answer = await getJson(
      `${t.url}/v1/models/flight-delay/predict?origin=SFO&destination=LAX&hour=7&dayOfWeek=1&version=${fresh}&wait=3000`,
    );
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ version: fresh, source: "live" });
    expect(
      (await admin("/admin/v1/models/flight-delay/reload", { method: "POST" })).body.added,
    ).toEqual([]);
    // Its folder moved away: still loaded, but a restart would not load it, so it is not
    // made active (nor the version every lookup then finds unloaded), by a promote or by
    // an experiment's stop that promotes it.
    const wasActive = (await admin("/admin/v1/models/flight-delay/versions")).body.versions.find(
      (v: { active: boolean }) => v.active,
    ).version;
    const experiments = "/admin/v1/models/flight-delay/experiments";
    const started = await admin(experiments, {
      method: "POST",
      body: { candidate: fresh, fraction: 0.5, id: "gone-candidate" },
    });
    expect(started.status).toBe(201);
    await rename(dropped, `${dropped}.away`);
    try {
      const gone = await admin(`/admin/v1/models/flight-delay/versions/${fresh}/promote`, {
        method: "POST",
      });
      expect(gone.status).toBe(409);
      expect(gone.body.error.message).toMatch(/its folder no longer holds it/);
      const stop = await admin(`${experiments}/gone-candidate/stop`, {
        method: "POST",
        body: { outcome: "promote" },
      });
      expect(stop.status).toBe(409);
      expect(stop.body.error.message).toMatch(/its folder no longer holds it/);
      const still = (await admin(experiments)).body.experiments;
      expect(still.find((x: { id: string }) => x.id === "gone-candidate").state).toBe("running");
      // Nor a run asked to promote it when done (the worker checks again before it does).
      const run = await admin("/admin/v1/models/flight-delay/precompute", {
        method: "POST",
        body: {
          version: fresh,
          promote: true,
          source: {
            kind: "inline",
            inputs: [{ origin: "SFO", destination: "LAX", hour: 7, dayOfWeek: 1 }],
          },
        },
      });
      expect(run.status).toBe(409);
      expect(run.body.error.message).toMatch(/its folder no longer holds it/);
    } finally {
      await rename(`${dropped}.away`, dropped);
    }
    // Back in place: promoted by the stop, with a promote's warning (nothing precomputed).
    const stopped = await admin(`${experiments}/gone-candidate/stop`, {
      method: "POST",
      body: { outcome: "promote" },
    });
    expect(stopped.status).toBe(200);
    expect(stopped.body).toMatchObject({ state: "promoted", active: fresh });
    expect(stopped.body.warnings).toEqual([expect.stringMatching(/has nothing precomputed/)]);
    const back = await admin(`/admin/v1/models/flight-delay/versions/${wasActive}/promote`, {
      method: "POST",
    });
    expect(back.status).toBe(200);
    await rm(broken, { recursive: true });
    await rm(misfit, { recursive: true });
    expect((await admin("/admin/v1/models/unknown-model/reload", { method: "POST" })).status).toBe(
      404,
    );
  });

  it("makes a model new to the models directory active when a reload loads it, as a start would", async () => {
    const source = join(modelsDir, "flight-delay");
    const folder = join(modelsDir, "second-model");
    await mkdir(folder);
    await copyFile(join(source, "model.onnx"), join(folder, "model.onnx"));
    const manifest = JSON.parse(await readFile(join(source, "manifest.json"), "utf8"));
    await writeFile(
      join(folder, "manifest.json"),
      JSON.stringify({ ...manifest, name: "second-model" }),
    );
    const reloaded = await admin("/admin/v1/models/second-model/reload", { method: "POST" });
    expect(reloaded.status).toBe(200);
    const [version] = reloaded.body.versions;
    // Active at once: its versions say so, and so does its tables listing (which a client
    // reads to pick the table of the version that answers).
    const versions = (await admin("/admin/v1/models/second-model/versions")).body.versions;
    expect(versions).toEqual([expect.objectContaining({ version, active: true })]);
    const tables = await getJson(`${t.url}/v1/models/second-model/tables`);
    expect(tables.body).toMatchObject({ activeVersion: version, servedVersion: version });
    const answer = await getJson(
      `${t.url}/v1/models/second-model/predict?origin=SFO&destination=LAX&hour=7&dayOfWeek=1&wait=3000`,
    );
    expect(answer.body).toMatchObject({ model: "second-model", version });
  });

  it("refuses a body an action does not take, and does nothing", async () => {
    const before = (await admin("/admin/v1/models/flight-delay/versions")).body.versions;
    const active = before.find((v: { active: boolean }) => v.active).version;
    const other = before.find((v: { active: boolean }) => !v.active).version;
    // Promoting the active version changes nothing, and says so.
    const again = await admin(`/admin/v1/models/flight-delay/versions/${active}/promote`, {
      method: "POST",
    });
    expect(again.status).toBe(200);
    expect(again.body.warnings).toContainEqual(expect.stringMatching(/active version already/));
    const refused = [
      ["/admin/v1/models/flight-delay/rollback", { to: other }],
      [`/admin/v1/models/flight-delay/versions/${other}/promote`, { x: 1 }],
      ["/admin/v1/models/flight-delay/gc", { dryRun: "yes" }],
      ["/admin/v1/models/flight-delay/gc", { dryrun: true }],
      ["/admin/v1/models/flight-delay/reload", { model: "x" }],
    ] as const;
    for (const [path, body] of refused) {
      const r = await admin(path, { method: "POST", body });
      expect(r.status, path).toBe(400);
      expect(r.body.error.code).toBe("bad_request");
    }
    // Options in the URL instead of the body: refused, not ignored (a gc meant as a dry
    // run must not run for real), as filters a list does not have.
    for (const [method, path] of [
      ["POST", "/admin/v1/models/flight-delay/gc?dryRun=true"],
      ["POST", `/admin/v1/models/flight-delay/versions/${other}/promote?force=1`],
      ["POST", "/admin/v1/models/flight-delay/rollback?to=x"],
      ["GET", "/admin/v1/runs?state=running"],
      ["GET", "/admin/v1/audit?limit=1&actor=bob"],
    ] as const) {
      const r = await admin(path, { method });
      expect(r.status, path).toBe(400);
      expect(r.body.error.details.unknown, path).toHaveLength(1);
    }
    expect((await admin("/admin/v1/runs?limit=2")).status).toBe(200);
    expect((await admin("/admin/v1/nothing-here?x=1")).status).toBe(404);
    const garbage = await fetch(`${t.url}/admin/v1/models/flight-delay/rollback`, {
      method: "POST",
      headers: { authorization: `Bearer ${SECRET}`, "content-type": "application/json" },
      body: "garbage",
    });
    expect(garbage.status).toBe(400);
    expect((await admin("/admin/v1/models/flight-delay/versions")).body.versions).toEqual(before);
    expect(before.find((v: { active: boolean }) => v.active).version).toBe(active);
    // An empty object is no fields: taken.
    const empty = await admin(`/admin/v1/models/flight-delay/versions/${active}/promote`, {
      method: "POST",
      body: {},
    });
    expect(empty.status).toBe(200);
  });

  it("collects versions retention does not keep, never the active one or the rollback target", async () => {
    const [v1, v2] = versions;
    // The newest loaded version (the one dropped in above), which KEEP_VERSIONS=1 keeps.
    const newest = (await admin("/admin/v1/models/flight-delay/versions")).body.versions[0].version;
    expect([v1, v2]).not.toContain(newest);
    await admin(`/admin/v1/models/flight-delay/versions/${v1}/promote`, { method: "POST" });
    await admin(`/admin/v1/models/flight-delay/versions/${v2}/promote`, { method: "POST" });
    expect((await admin("/admin/v1/audit?limit=1&refused=false")).body.entries[0]).toMatchObject({
      action: "POST /models/:model/versions/:version/promote",
      detail: `${v1} → ${v2}`,
    });
    const guarded = await admin("/admin/v1/models/flight-delay/gc", { method: "POST" });
    expect(guarded.status).toBe(200);
    expect(guarded.body.kept.sort()).toEqual([v1, v2, newest].sort()); // v1: the rollback target
    expect(guarded.body.collected).toEqual([]);

    await t.service.redis.del(t.service.keys.history("flight-delay")); // no rollback target now
    const before = (await admin("/admin/v1/models/flight-delay/versions")).body.versions;
    const v1Before = before.find((v: { version: string }) => v.version === v1);
    expect(v1Before.entries).toBeGreaterThan(0);
    // A run still to fill v1 keeps it (queued: the run queue is paused meanwhile).
    await t.service.precompute.runQueue.pause();
    try {
      const queued = await admin("/admin/v1/models/flight-delay/precompute", {
        method: "POST",
        body: {
          version: v1,
          source: {
            kind: "inline",
            inputs: [{ origin: "SFO", destination: "LAX", hour: 1, dayOfWeek: 1 }],
          },
        },
      });
      expect(queued.status).toBe(202);
      const held = await admin("/admin/v1/models/flight-delay/gc", { method: "POST" });
      expect(held.body.kept).toContain(v1);
      expect(held.body.collected).toEqual([]);
      expect(
        (await admin(`/admin/v1/runs/${queued.body.runId}`, { method: "DELETE" })).status,
      ).toBe(200);
      // A list of chunk keys an ended run left (as runs did before they deleted their own).
      const keys = t.service.keys;
      await t.service.redis.hset(keys.runMeta(queued.body.runId), "chunksPlanned", 1);
      await t.service.redis.hdel(keys.runMeta(queued.body.runId), "keysDropped");
      await t.service.redis.set(keys.runChunkKeys(queued.body.runId, 0), "left behind");
    } finally {
      await t.service.precompute.runQueue.resume();
    }
    // While gc deletes v1 (its mark, as gc sets it), a run to fill v1 is refused: what it
    // wrote would be deleted under it.
    const mark = t.service.keys.collecting("flight-delay", v1);
    await t.service.redis.set(mark, "1", "PX", 60_000);
    try {
      const refusedRun = await admin("/admin/v1/models/flight-delay/precompute", {
        method: "POST",
        body: {
          version: v1,
          source: {
            kind: "inline",
            inputs: [{ origin: "SFO", destination: "LAX", hour: 2, dayOfWeek: 1 }],
          },
        },
      });
      expect(refusedRun.status).toBe(409);
      expect(refusedRun.body.error.details).toMatchObject({ version: v1, reason: "collecting" });
    } finally {
      await t.service.redis.del(mark);
    }
    // A dry run says what gc would delete, and deletes nothing.
    const dry = await admin("/admin/v1/models/flight-delay/gc", {
      method: "POST",
      body: { dryRun: true },
    });
    expect(dry.status).toBe(200);
    expect(dry.body).toMatchObject({ dryRun: true, runKeyListsDeleted: 0 });
    expect(dry.body.collected).toEqual([
      expect.objectContaining({ version: v1, tablesDeleted: v1Before.tables.length }),
    ]);
    expect(
      (await admin("/admin/v1/models/flight-delay/versions")).body.versions.find(
        (v: { version: string }) => v.version === v1,
      ),
    ).toMatchObject({ entries: v1Before.entries, tables: v1Before.tables });
    const collected = await admin("/admin/v1/models/flight-delay/gc", { method: "POST" });
    expect(collected.body.dryRun).toBe(false);
    expect(collected.body.collected[0]?.keysDeleted).toBe(dry.body.collected[0].keysDeleted);
    expect(collected.body.runKeyListsDeleted).toBe(1);
    // The audit log tells the dry run from the gc, and what each collected.
    type Entry = { action: string; detail?: string };
    const gcs = await eventually(async () => {
      const { entries } = (await admin("/admin/v1/audit?limit=5&refused=false")).body;
      const found = (entries as Entry[]).filter((e) => e.action === "POST /models/:model/gc");
      return found[0]?.detail?.startsWith("collected ") ? found : undefined;
    });
    // Older tables of the versions kept are counted apart, not under the collected one.
    expect(gcs[0]?.detail).toMatch(
      new RegExp(
        `^collected ${v1} \\(\\d+ keys\\); \\d+ older tables of kept versions; \\d+ bytes of tables in all$`,
      ),
    );
    expect(gcs[1]?.detail).toMatch(new RegExp(`^dry run: would collect ${v1} `));
    // Marked done: the next gc reads one field of that run and deletes nothing.
    expect(
      (await admin("/admin/v1/models/flight-delay/gc", { method: "POST" })).body.runKeyListsDeleted,
    ).toBe(0);
    expect(collected.body.kept.sort()).toEqual([v2, newest].sort());
    expect(collected.body.collected).toEqual([
      expect.objectContaining({ version: v1, tablesDeleted: v1Before.tables.length }),
    ]);
    expect(collected.body.collected[0].keysDeleted).toBeGreaterThan(0);
    const after = (await admin("/admin/v1/models/flight-delay/versions")).body.versions;
    expect(after.find((v: { version: string }) => v.version === v1)).toMatchObject({
      entries: 0,
      tables: [],
    });
    expect(after.find((v: { version: string }) => v.version === v2)).toMatchObject({
      active: true,
    });
    // Promoting a version with nothing precomputed (v1, just collected) works, with a warning.
    const cold = await admin(`/admin/v1/models/flight-delay/versions/${v1}/promote`, {
      method: "POST",
    });
    expect(cold.status).toBe(200);
    expect(cold.body.warnings).toEqual([expect.stringMatching(/nothing precomputed/)]);
    // Rolling back onto it (gc keeps only the first rollback target) is said alike.
    await admin(`/admin/v1/models/flight-delay/versions/${v2}/promote`, { method: "POST" });
    const back = await admin("/admin/v1/models/flight-delay/rollback", { method: "POST" });
    expect(back.body).toMatchObject({ active: v1, previous: v2 });
    expect(back.body.warnings).toEqual([expect.stringMatching(/nothing precomputed/)]);
    await admin(`/admin/v1/models/flight-delay/versions/${v2}/promote`, { method: "POST" });
  });
});
