/** examples/offline-app: sync a table from a running server, then answer lookups with the server gone. */
import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildClient } from "../../scripts/build-client.ts";
import { Keys } from "../../src/cache/keys.ts";
import { switchActiveVersion } from "../../src/model/active.ts";
import type { PrecomputeWorkerProcess } from "../../src/service.ts";
import {
  eventually,
  getJson,
  modelsDirWithVersions,
  precomputeInputs,
  precomputeWorkerFor,
  startTestService,
  type TestService,
  tempDataDir,
} from "../helpers/service.ts";

const covered = { origin: "LAS", destination: "LAX", hour: "16", dayOfWeek: "6" };
const uncovered = { origin: "ABQ", destination: "ORD", hour: "3", dayOfWeek: "2" };
const pairs = (input: Record<string, string>) => Object.entries(input).map(([k, v]) => `${k}=${v}`);

let t: TestService | undefined;
let worker: PrecomputeWorkerProcess | undefined;
let file: string;
let serverAnswer: unknown;

function app(args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((done) => {
    execFile(
      process.execPath,
      ["--import", "tsx", "examples/offline-app/app.ts", ...args],
      { env: { ...process.env, NODE_OPTIONS: "" } },
      (error, stdout, stderr) =>
        done({ code: error ? Number(error.code ?? 1) : 0, out: stdout.trim(), err: stderr.trim() }),
    );
  });
}

beforeAll(async () => {
  // The example imports predcache/client, which resolves to dist: build it from this tree.
  await buildClient(fileURLToPath(new URL("../../dist/client", import.meta.url)));
  const dataDir = await tempDataDir();
  file = join(dataDir, "app.pctable");
  // A second version, with no table: what a promote made before its precompute looks like.
  const models = await modelsDirWithVersions(["untabled"]);
  t = await startTestService({
    env: { PREDCACHE_DATA_DIR: dataDir, PREDCACHE_MODELS_DIR: models },
  });
  worker = await precomputeWorkerFor(t);
  await precomputeInputs(t, [covered, { ...covered, hour: "17" }]);
  serverAnswer = (
    await getJson(`${t.url}/v1/models/flight-delay/predict?${new URLSearchParams(covered)}`)
  ).body.prediction;
});
afterAll(async () => {
  await worker?.close();
  await t?.close();
});

describe("examples/offline-app", () => {
  it("syncs the table, revalidates it, and asks the server for what it lacks", async () => {
    const url = (t as TestService).url;
    const first = await app(["sync", "--server", url, "--file", file]);
    expect(first).toMatchObject({ code: 0 });
    expect(first.out).toMatch(/^full: .* holds 2 predictions of flight-delay/);
    expect((await app(["sync", "--server", url, "--file", file])).out).toMatch(/^unchanged: /);
    const asked = await app(["ask", "--server", url, "--file", file, ...pairs(uncovered)]);
    expect(JSON.parse(asked.out)).toMatchObject({ source: expect.stringMatching(/^server:/) });
  });

  it("with a stored table that fails verification, asks the server, and sync replaces it", async () => {
    const url = (t as TestService).url;
    const good = await readFile(file);
    const bytes = Buffer.from(good);
    const at = bytes.length >> 1;
    bytes[at] = bytes[at] === 0 ? 1 : 0;
    await writeFile(file, bytes);
    // Not answered from the damaged table, nor refused: the server answers a covered input.
    const asked = await app(["ask", "--server", url, "--file", file, ...pairs(covered)]);
    expect(asked.code).toBe(0);
    expect(asked.err).toMatch(/fails verification \(.*checksum.*\): asking the server/);
    expect(JSON.parse(asked.out)).toMatchObject({
      source: expect.stringMatching(/^server:/),
      prediction: serverAnswer,
    });
    const synced = await app(["sync", "--server", url, "--file", file]);
    expect(synced).toMatchObject({ code: 0 });
    expect(synced.err).toMatch(/fails verification \(.*checksum/);
    expect(synced.out).toMatch(/^full: /);
    expect(Buffer.compare(await readFile(file), good)).toBe(0);
  });

  it("sync removes a table the server no longer serves answers of, and a later sync brings one", async () => {
    const service = t as TestService;
    const url = service.url;
    const active = service.service.active.get("flight-delay") as string;
    const untabled = service.registry.versions("flight-delay").find((v) => v.version !== active)
      ?.version as string;
    const switchTo = async (version: string) => {
      await switchActiveVersion(
        service.service.redis,
        new Keys(service.config.prefix),
        "flight-delay",
        version,
      );
      await eventually(async () =>
        service.service.active.get("flight-delay") === version ? true : undefined,
      );
    };
    await switchTo(untabled);
    try {
      const synced = await app(["sync", "--server", url, "--file", file]);
      expect(synced).toMatchObject({ code: 0 });
      expect(synced.out).toMatch(/^none: .*no table yet; removed/);
      await expect(readFile(file)).rejects.toThrow(/ENOENT/);
      const asked = await app(["ask", "--server", url, "--file", file, ...pairs(covered)]);
      expect(JSON.parse(asked.out)).toMatchObject({
        source: expect.stringMatching(/^server:/),
        version: untabled,
      });
    } finally {
      await switchTo(active);
    }
    const back = await app(["sync", "--server", url, "--file", file]);
    expect(back.out).toMatch(/^full: /);
  });

  it("answers covered inputs from the stored table with the server gone", async () => {
    await worker?.close();
    await t?.close();
    worker = undefined;
    t = undefined;
    const hit = await app(["lookup", "--file", file, ...pairs(covered)]);
    expect(hit.code).toBe(0);
    expect(JSON.parse(hit.out)).toEqual({ source: "table", prediction: serverAnswer });
    const miss = await app(["lookup", "--file", file, ...pairs(uncovered)]);
    expect(JSON.parse(miss.out)).toEqual({ source: "none", covered: false });
    const bad = await app([
      "lookup",
      "--file",
      file,
      "origin=LAS",
      "destination=LAX",
      "hour=99",
      "dayOfWeek=6",
    ]);
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/hour/);
  });
});
