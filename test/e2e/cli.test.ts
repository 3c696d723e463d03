/** `npx predcache` as an operator runs it: a subprocess against a real server. */
import { execFile } from "node:child_process";
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { num } from "../../precompute/experiment-view.ts";
import { LookupTable } from "../../src/client/lookup-table.ts";
import { armOf, type Experiment } from "../../src/experiment/experiment.ts";
import type { ExperimentReport } from "../../src/experiment/report.ts";
import type { PrecomputeWorkerProcess } from "../../src/service.ts";
import { writeSeedCsv } from "../helpers/precompute.ts";
import {
  getJson,
  modelsDirWithVersions,
  precomputeWorkerFor,
  startTestService,
  type TestService,
  tempDataDir,
  uniquePrefix,
} from "../helpers/service.ts";

const TOKEN = "cli-test-token-0123456789abcdef";
/** The first test precomputes these for the first version; the experiment test for the other. */
const SEED_INPUTS = [
  { origin: "SFO", destination: "LAX", hour: 7, dayOfWeek: 1 },
  { origin: "ORD", destination: "ATL", hour: 18, dayOfWeek: 5 },
  { origin: "SEA", destination: "DEN", hour: 9, dayOfWeek: 3 },
];
let t: TestService;
let worker: PrecomputeWorkerProcess;
let versions: [string, string];
let dataDir: string;

interface Run {
  code: number;
  out: string;
  err: string;
}

function cli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((done) => {
    execFile(
      process.execPath,
      ["bin/predcache.js", ...args],
      {
        env: { ...process.env, PREDCACHE_SERVER: t.url, PREDCACHE_TOKEN: TOKEN, ...env },
        timeout: 60_000,
      },
      (error, stdout, stderr) =>
        done({ code: error ? Number(error.code ?? 1) : 0, out: stdout, err: stderr }),
    );
  });
}

/** Polls a lookup until it answers from `version`; returns how long that took. */
async function switchedWithin(version: string): Promise<number> {
  const start = Date.now();
  for (;;) {
    const r = await getJson(
      `${t.url}/v1/models/flight-delay/predict?origin=SFO&destination=LAX&hour=7&dayOfWeek=1&wait=2000`,
    );
    if (r.body?.version === version) return Date.now() - start;
    if (Date.now() - start > 5_000) throw new Error(`lookups still on ${r.body?.version}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

beforeAll(async () => {
  dataDir = await tempDataDir();
  const env = {
    PREDCACHE_PREFIX: uniquePrefix("cli"),
    PREDCACHE_MODELS_DIR: await modelsDirWithVersions(["next"]),
    PREDCACHE_DATA_DIR: dataDir,
    PREDCACHE_ADMIN_TOKENS: `ops:${TOKEN}`,
  };
  t = await startTestService({ env });
  worker = await precomputeWorkerFor(t);
  versions = t.registry.versions("flight-delay").map((v) => v.version) as [string, string];
});
afterAll(async () => {
  await worker.close();
  await t.close();
});

describe("npx predcache", () => {
  it("precompute --watch follows a run to completion (plain progress lines off a TTY)", async () => {
    const file = await writeSeedCsv(SEED_INPUTS);
    const run = await cli([
      "precompute",
      "flight-delay",
      "--source",
      `seed:${file}`,
      "--version",
      versions[0],
      "--chunk-size",
      "1",
      "--watch",
    ]);
    expect(run.err).toMatch(/chunks \d\/3/);
    expect(run.out).toMatch(/^run run-\S+ started: flight-delay@/m);
    expect(run.out).toMatch(/completed \(3 written/);
    expect(run.code).toBe(0);

    const json = await cli(["--json", "runs"]);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.out)[0]).toMatchObject({ state: "completed", written: 3 });

    // --on-server: the path is the server's (here in its data folder, and local too, as
    // when both run in one folder), read there rather than uploaded.
    const onServer = join(dataDir, "on-server.csv");
    await writeFile(onServer, "origin,destination,hour,dayOfWeek\nSFO,LAX,7,1\nBOS,MIA,8,2\n");
    const named = await cli([
      "precompute",
      "flight-delay",
      "--source",
      `seed:${onServer}`,
      "--on-server",
      "--version",
      versions[0],
      "--watch",
    ]);
    expect(named.code).toBe(0);
    // Past the server's upload limit (16 MiB): refused, with what to do instead.
    const huge = join(dataDir, "huge.csv");
    const row = `${"X".repeat(250)},LAX,7,1\n`;
    await writeFile(huge, `origin,destination,hour,dayOfWeek\n${row.repeat(70_000)}`);
    const tooLarge = await cli(["precompute", "flight-delay", "--source", `seed:${huge}`]);
    expect(tooLarge.code).toBe(2);
    expect(tooLarge.err).toMatch(/larger than .*run again with --on-server/);
    const [latest] = JSON.parse((await cli(["--json", "runs"])).out);
    expect(latest).toMatchObject({
      state: "completed",
      source: { kind: "seed", file: onServer },
      sourceDescription: "seed file on-server.csv",
    });
  });

  it("cancels a run; watching a cancelled run exits 1", async () => {
    // 3,000 one-input chunks: far more than can finish while the next CLI call starts.
    const many = Array.from({ length: 3_000 }, (_, i) => ({
      origin: "BOS",
      destination: "MIA",
      hour: i % 24,
      dayOfWeek: 1 + (i % 7),
    }));
    const started = await cli([
      "--json",
      "precompute",
      "flight-delay",
      "--source",
      `seed:${await writeSeedCsv(many)}`,
      "--version",
      versions[0],
      "--chunk-size",
      "1",
    ]);
    expect(started.code).toBe(0);
    const { runId } = JSON.parse(started.out);
    const cancel = await cli(["cancel", runId]);
    expect(cancel).toMatchObject({ code: 0 });
    expect(cancel.out).toMatch(/cancelled/);
    const watched = await cli(["run", runId, "--watch"]);
    expect(watched.code).toBe(1);
    expect(watched.out).toMatch(/cancelled/);

    // A server away for a moment (an API restart): the watch asks again, not exit 3.
    const port = await new Promise<number>((done) => {
      const probe = createServer().listen(0, "127.0.0.1", () => {
        const { port } = probe.address() as AddressInfo;
        probe.close(() => done(port));
      });
    });
    const later = cli(["run", runId, "--watch"], { PREDCACHE_SERVER: `http://127.0.0.1:${port}` });
    await new Promise((r) => setTimeout(r, 1_500));
    // Back, as a proxy to the API on the port the CLI was given.
    const proxy = createServer(async (req, res) => {
      const answer = await fetch(`${t.url}${req.url}`, {
        headers: { authorization: String(req.headers.authorization ?? "") },
      });
      res.writeHead(answer.status, { "content-type": "application/json" });
      res.end(await answer.text());
    });
    await new Promise<void>((done) => proxy.listen(port, "127.0.0.1", done));
    try {
      const rode = await later;
      expect(rode.code).toBe(1); // the run's own outcome: cancelled
      expect(rode.out).toMatch(/cancelled/);
    } finally {
      proxy.close();
    }
  });

  it("promotes and rolls back; lookups switch version within 1 s each time", async () => {
    const [v1, v2] = versions;
    expect((await cli(["promote", "flight-delay", v1])).code).toBe(0);
    await switchedWithin(v1);
    const promoted = await cli(["promote", "flight-delay", v2]);
    expect(promoted.code).toBe(0);
    expect(promoted.out).toContain(`${v1} → ${v2}`);
    const toV2 = await switchedWithin(v2);
    expect(toV2).toBeLessThan(1_000);
    const listed = await cli(["versions", "flight-delay"]);
    expect(listed.out).toMatch(new RegExp(`${v2}\\s+\\S+\\s+active`));
    expect(listed.out).toMatch(new RegExp(`${v1}\\s+\\S+\\s+rollback target`));
    const back = await cli(["rollback", "flight-delay"]);
    expect(back.code).toBe(0);
    expect(back.out).toContain(`${v2} → ${v1}`);
    const toV1 = await switchedWithin(v1);
    expect(toV1).toBeLessThan(1_000);
    console.log(`promote switched lookups in ${toV2} ms, rollback in ${toV1} ms`);
  });

  it("exits 3 with a clear message for a missing or wrong token and an unreachable server", async () => {
    const missing = await cli(["runs"], { PREDCACHE_TOKEN: "" });
    expect(missing.code).toBe(3);
    expect(missing.err).toMatch(/token/i);
    const wrong = await cli(["runs", "--token", "not-the-token-at-all"]);
    expect(wrong.code).toBe(3);
    expect(wrong.err).toMatch(/not valid/);
    expect(wrong.err).not.toContain("not-the-token-at-all");
    const away = await cli(["runs", "--server", "http://127.0.0.1:9"]);
    expect(away.code).toBe(3);
    expect(away.err).toMatch(/cannot reach/);
    // A server that cannot serve for now (its Redis away): try again, not a failed run.
    const unavailable = createServer((_req, res) => {
      res.writeHead(503, { "content-type": "application/json", "retry-after": "1" });
      res.end(JSON.stringify({ error: { code: "redis_unavailable", message: "Redis is away" } }));
    });
    await new Promise<void>((done) => unavailable.listen(0, "127.0.0.1", done));
    try {
      const { port } = unavailable.address() as AddressInfo;
      const busy = await cli(["runs", "--server", `http://127.0.0.1:${port}`]);
      expect(busy.code).toBe(3);
      expect(busy.err).toMatch(/unavailable for now: Redis is away/);
    } finally {
      await new Promise((done) => unavailable.close(done));
    }
  });

  it("exits 2 for usage errors and unknown models, with a clear message", async () => {
    const notUrl = await cli(["runs", "--server", "not-a-url"]);
    expect(notUrl.code).toBe(2);
    expect(notUrl.err).toMatch(/must be an http\(s\) URL/);
    // With --json, the server's error code is there for scripts.
    const missingRun = await cli(["--json", "run", "run-nope"]);
    expect(missingRun.code).toBe(2);
    expect(JSON.parse(missingRun.err).error).toMatchObject({ code: "not_found", exitCode: 2 });
    const unwritable = await cli(["download", "flight-delay", "--out", "/no/such/dir/t.pctable"]);
    expect(unwritable.code).toBe(1);
    expect(unwritable.err).toMatch(/cannot write \/no\/such\/dir\/t\.pctable/);
    // An unknown version: the loaded ones are listed, to pick from.
    const noVersion = await cli(["promote", "flight-delay", "v3"]);
    expect(noVersion.code).toBe(2);
    expect(noVersion.err).toMatch(
      /has no loaded version v3 \(loaded: [0-9a-f]{12}.*reload first\)/,
    );
    const unknown = await cli(["versions", "nope"]);
    expect(unknown.code).toBe(2);
    expect(unknown.err).toMatch(/no model named "nope"/);
    const asJson = await cli(["versions", "nope", "--json"]);
    expect(asJson.code).toBe(2);
    expect(JSON.parse(asJson.err)).toEqual({
      error: {
        code: "model_not_found",
        message: expect.stringMatching(/no model named "nope"/),
        exitCode: 2,
      },
    });
    const run = await cli(["precompute", "nope", "--source", "traffic", "--top", "5"]);
    expect(run.code).toBe(2);
    expect((await cli(["precompute", "flight-delay"])).code).toBe(2); // --source missing
    const usageAsJson = await cli(["--json", "precompute", "flight-delay"]);
    expect(usageAsJson.code).toBe(2);
    expect(JSON.parse(usageAsJson.err)).toEqual({
      error: { message: expect.stringMatching(/--source/), exitCode: 2 },
    });
    // The server's issues are named, not only its summary.
    const badVersion = await cli([
      "precompute",
      "flight-delay",
      "--source",
      "traffic:5",
      "--version",
      "nope",
    ]);
    expect(badVersion.code).toBe(2);
    expect(badVersion.err).toMatch(/invalid precompute request: version: /);
    expect((await cli(["bogus"])).code).toBe(2);
    expect((await cli(["precompute", "flight-delay", "--source", "grid:{nope"])).code).toBe(2);
    const tooBig = await cli([
      "precompute",
      "flight-delay",
      "--source",
      'grid:{"origin":["SFO"],"destination":["LAX"],"hour":"all","dayOfWeek":"all"}',
      "--grid-max",
      "100",
    ]);
    expect(tooBig.code).toBe(2);
    expect(tooBig.err).toMatch(/over the limit of 100: .*--grid-max/);
    const partial = await cli(["precompute", "flight-delay", "--source", 'grid:{"hour":[7]}']);
    expect(partial.code).toBe(2);
    expect(partial.err).toMatch(/no axis for origin, destination, dayOfWeek/);
    // A local file that cannot be parsed, or with bad rows: refused, named, nothing started.
    const ragged = join(dataDir, "ragged.csv");
    await writeFile(ragged, "origin,destination,hour,dayOfWeek\nSFO,LAX,7,1\nSFO,LAX,7\n");
    const unparsable = await cli(["precompute", "flight-delay", "--source", `seed:${ragged}`]);
    expect(unparsable.code).toBe(2);
    expect(unparsable.err).toContain("ragged.csv cannot be read");
    const bad = join(dataDir, "bad.csv");
    await writeFile(bad, "origin,destination,hour,dayOfWeek\nSFO,LAX,7,1\nSFO,LAX,99,1\n");
    const invalid = await cli(["precompute", "flight-delay", "--source", `seed:${bad}`]);
    expect(invalid.code).toBe(2);
    expect(invalid.err).toMatch(/1 of 2 inputs are invalid: row 2: hour must be between 0 and 23/);
    // Options for another kind of source, a count given twice, an empty id: refused.
    for (const [args, said] of [
      [["--source", "traffic:5", "--limit", "3"], /--limit is for seed sources/],
      [["--source", `seed:${bad}`, "--top", "7"], /--top is for traffic sources/],
      [["--source", `seed:${bad}`, "--grid-max", "9"], /--grid-max is for grid sources/],
      [["--source", "traffic:5", "--on-server"], /--on-server is for seed sources/],
      [["--source", "traffic:5", "--top", "7"], /give the traffic count once/],
      [["--source", "traffic:abc"], /traffic:K must be a positive integer/],
    ] as const) {
      const refused = await cli(["precompute", "flight-delay", ...args]);
      expect(refused.code, args.join(" ")).toBe(2);
      expect(refused.err).toMatch(said);
    }
    const empty = await cli(["cancel", ""]);
    expect(empty.code).toBe(2);
    expect(empty.err).toMatch(/<id> must not be empty/);
  });

  it("downloads the newest table and verifies it; shows stats, tables and the audit log", async () => {
    const out = join(dataDir, "cli.pctable");
    const download = await cli(["download", "flight-delay", "--out", out]);
    expect(download.code).toBe(0);
    expect(download.out).toMatch(/verified/);
    const table = await LookupTable.open(
      new Uint8Array(await import("node:fs/promises").then((fs) => fs.readFile(out))),
    );
    expect(table.size).toBeGreaterThan(0);
    // Into a folder: <model>.pctable there, and no temporary file left anywhere.
    const folder = await mkdtemp(join(dataDir, "downloads-"));
    for (const into of [folder, `${folder}/`]) {
      const again = await cli(["download", "flight-delay", "--out", into]);
      expect(again.code, again.err).toBe(0);
      expect(await readdir(folder)).toEqual(["flight-delay.pctable"]);
    }
    expect((await cli(["tables", "flight-delay"])).out).toContain(table.header.generation);
    const stats = await cli(["--json", "stats"]);
    expect(JSON.parse(stats.out).models["flight-delay"]).toHaveProperty("hitRatio");
    const audit = await cli(["audit"]);
    expect(audit.out).toMatch(/ops\s+POST \/models\/:model\/rollback/);
    expect((await cli(["--json", "gc", "flight-delay"])).code).toBe(0);
  });

  it("reload says which dropped folders could not be loaded, and exits 1", async () => {
    const broken = join(t.config.modelsDir, "zz-broken-drop");
    await mkdir(broken, { recursive: true });
    try {
      await copyFile("seeds/models/flight-delay/manifest.json", join(broken, "manifest.json"));
      const onnx = await readFile("seeds/models/flight-delay/model.onnx");
      await writeFile(join(broken, "model.onnx"), onnx.subarray(0, 100));
      const r = await cli(["reload", "flight-delay"]);
      expect(r.code).toBe(1);
      expect(r.out).toMatch(/not loaded: .*zz-broken-drop/);
    } finally {
      await rm(broken, { recursive: true, force: true });
    }
  });

  it("reads tables with --api-key (or PREDCACHE_API_KEY) when the server requires API keys", async () => {
    const KEY = "cli-read-key-0123456789abcdef";
    const keyed = await startTestService({
      env: {
        PREDCACHE_PREFIX: t.config.prefix,
        PREDCACHE_MODELS_DIR: t.config.modelsDir,
        PREDCACHE_DATA_DIR: dataDir,
        PREDCACHE_ADMIN_TOKENS: `ops:${TOKEN}`,
        PREDCACHE_API_KEYS: `app:${KEY}`,
      },
      liveWorker: false,
    });
    try {
      const at = { PREDCACHE_SERVER: keyed.url };
      const refused = await cli(["tables", "flight-delay"], at);
      expect(refused.code).toBe(3);
      expect(refused.err).toMatch(/--api-key/);
      const listed = await cli(["tables", "flight-delay", "--api-key", KEY], at);
      expect(listed.code).toBe(0);
      expect(listed.out).toMatch(/[0-9a-f]{12}\.[0-9a-z]+/);
      const out = join(dataDir, "keyed.pctable");
      const download = await cli(["download", "flight-delay", "--out", out], {
        ...at,
        PREDCACHE_API_KEY: KEY,
      });
      expect(download.code).toBe(0);
      // The admin routes still take the admin token.
      expect((await cli(["runs", "--api-key", KEY], at)).code).toBe(0);
    } finally {
      await keyed.close();
    }
  });

  it("runs an experiment: start, list, set the split, report, stop --revert", async () => {
    const control = t.service.active.get("flight-delay") as string;
    const candidate = versions.find((v) => v !== control) as string;
    // The candidate's table too, so the report compares tables on the same 3 inputs.
    const { runId } = await t.service.precompute.enqueue({
      model: "flight-delay",
      version: candidate,
      source: { kind: "inline", inputs: SEED_INPUTS },
    });
    expect((await t.service.precompute.waitUntilDone(runId, 30_000)).state).toBe("completed");

    const started = await cli([
      "experiment",
      "start",
      "flight-delay",
      "--candidate",
      candidate,
      "--fraction",
      "0.3",
      "--id",
      "cli-exp",
    ]);
    expect(started.err).toBe("");
    expect(started.code).toBe(0);
    expect(started.out).toContain(`control ${control}, candidate ${candidate}`);
    expect(started.out).toContain("candidate for 30% of clients, shadow 0%");
    const listed = await cli(["experiment", "list", "flight-delay"]);
    expect(listed.out).toMatch(
      new RegExp(`cli-exp\\s+running\\s+${control}\\s+${candidate}\\s+30%`),
    );

    const set = await cli([
      "--json",
      "experiment",
      "set",
      "flight-delay",
      "cli-exp",
      "--fraction",
      "0.5",
    ]);
    expect(set.code).toBe(0);
    const experiment = JSON.parse(set.out) as Experiment;
    expect(experiment).toMatchObject({ fraction: 0.5, shadowRate: 0, state: "running" });

    const counted = { control: 0, candidate: 0 };
    for (let i = 0; i < 20; i++) {
      const client = `cli-client-${i}`;
      const reply = await getJson(
        `${t.url}/v1/models/flight-delay/predict?origin=SFO&destination=LAX&hour=7&dayOfWeek=1`,
        { headers: { "x-client-id": client } },
      );
      expect(reply.body.experiment).toEqual({ id: "cli-exp", arm: armOf(experiment, client) });
      counted[armOf(experiment, client)]++;
    }
    expect(counted.control * counted.candidate).toBeGreaterThan(0);

    // The raw report straight from the API (one subprocess fewer): the text must show it.
    const report = (
      await getJson(`${t.url}/admin/v1/models/flight-delay/experiments/cli-exp`, {
        headers: { authorization: `Bearer ${TOKEN}` },
      })
    ).body as ExperimentReport;
    expect(report.arms.control).toMatchObject({ version: control, lookups: counted.control });
    expect(report.arms.candidate).toMatchObject({ version: candidate, lookups: counted.candidate });
    expect(report.tables.common).toBe(SEED_INPUTS.length);
    const text = await cli(["experiment", "report", "flight-delay", "cli-exp"]);
    expect(text.code).toBe(0);
    console.log(text.out);
    for (const arm of ["control", "candidate"] as const) {
      const a = report.arms[arm];
      // arm, version, lookups, hit ratio (all precomputed: 100%), mean, stddev.
      expect(text.out).toMatch(
        new RegExp(
          `^${arm}\\s+${a.version}\\s+${counted[arm]}\\s+100\\.0%\\s+${num(a.main.mean)}\\s`,
          "m",
        ),
      );
    }
    expect(text.out).toContain("candidate for 50% of clients");
    expect(text.out).toMatch(
      /delayProbability, share of each arm's answers:\n.*control\s+candidate/,
    );
    expect(text.out).toContain("█");
    const compared = report.tables;
    expect(text.out).toContain(`common ${compared.common}  changed ${compared.changed}`);
    expect(text.out).toContain(`decisions flipped ${compared.disagreeing}`);
    expect(text.out).toContain(`max |change| ${num(compared.maxAbsChange)}`);

    const stopped = await cli(["experiment", "stop", "flight-delay", "cli-exp", "--revert"]);
    expect(stopped.code).toBe(0);
    expect(stopped.out).toContain(`experiment cli-exp reverted: flight-delay serves ${control}`);
    // The server refuses a second stop (409): a refused request, exit 2.
    const again = await cli(["experiment", "stop", "flight-delay", "cli-exp", "--promote"]);
    expect(again.code).toBe(2);
    expect(again.err).toMatch(/has ended \(reverted\)/);
  });

  it("refuses experiment commands that are not well formed, with exit 2", async () => {
    const neither = await cli(["experiment", "stop", "flight-delay", "cli-exp"]);
    expect(neither.code).toBe(2);
    expect(neither.err).toMatch(/exactly one of --promote or --revert/);
    const both = await cli(["experiment", "stop", "flight-delay", "x", "--promote", "--revert"]);
    expect(both.code).toBe(2);
    const split = await cli([
      "experiment",
      "start",
      "flight-delay",
      "--candidate",
      "v",
      "--fraction",
      "1.5",
    ]);
    expect(split.code).toBe(2);
    expect(split.err).toMatch(/--fraction must be a number from 0 to 1/);
    expect((await cli(["experiment", "set", "flight-delay", "cli-exp"])).code).toBe(2);
  });
});
