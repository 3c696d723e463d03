/** `npx predcache` as an operator runs it: a subprocess against a real server. */
import { execFile } from "node:child_process";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LookupTable } from "../../src/client/lookup-table.ts";
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
    const file = await writeSeedCsv([
      { origin: "SFO", destination: "LAX", hour: 7, dayOfWeek: 1 },
      { origin: "ORD", destination: "ATL", hour: 18, dayOfWeek: 5 },
      { origin: "SEA", destination: "DEN", hour: 9, dayOfWeek: 3 },
    ]);
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
  });

  it("exits 2 for usage errors and unknown models, with a clear message", async () => {
    const unknown = await cli(["versions", "nope"]);
    expect(unknown.code).toBe(2);
    expect(unknown.err).toMatch(/no model named "nope"/);
    const run = await cli(["precompute", "nope", "--source", "traffic", "--top", "5"]);
    expect(run.code).toBe(2);
    expect((await cli(["precompute", "flight-delay"])).code).toBe(2); // --source missing
    expect((await cli(["bogus"])).code).toBe(2);
    expect((await cli(["precompute", "flight-delay", "--source", "grid:{nope"])).code).toBe(2);
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
    expect((await cli(["tables", "flight-delay"])).out).toContain(table.header.generation);
    const stats = await cli(["--json", "stats"]);
    expect(JSON.parse(stats.out).models["flight-delay"]).toHaveProperty("hitRatio");
    const audit = await cli(["audit"]);
    expect(audit.out).toMatch(/ops\s+POST \/models\/:model\/rollback/);
    expect((await cli(["--json", "gc", "flight-delay"])).code).toBe(0);
  });
});
