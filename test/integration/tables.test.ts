import { readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HybridClient, PendingAnswerError } from "../../src/client/hybrid-client.ts";
import { InvalidInputError, LookupTable } from "../../src/client/lookup-table.ts";
import type { ModelVersion } from "../../src/model/registry.ts";
import { type EmbeddedRedis, startRedisServer } from "../../src/redis/embedded.ts";
import type { PrecomputeWorkerProcess } from "../../src/service.ts";
import { buildTable } from "../../src/table/builder.ts";
import { applyDelta } from "../../src/table/delta.ts";
import { parseTable } from "../../src/table/format.ts";
import { storedKeys } from "../../src/table/rebuild-marks.ts";
import { DirectoryTableStore } from "../../src/table/store.ts";
import { promotedFetch } from "../helpers/client.ts";
import { writeSeedCsv } from "../helpers/precompute.ts";
import {
  capturedLog,
  closeOrReport,
  eventually,
  getJson,
  precomputeWorkerFor,
  startTestService,
  type TestService,
  tempDataDir,
  uniquePrefix,
} from "../helpers/service.ts";

let redis: EmbeddedRedis;
let t: TestService;
let worker: PrecomputeWorkerProcess;
let rows: Record<string, string>[];
let first: { generation: string; url: string; checksum: string };

async function seedRows(n: number): Promise<Record<string, string>[]> {
  const text = await readFile("seeds/inputs/flight-delay-common.csv", "utf8");
  const [header, ...lines] = text.trim().split("\n");
  const names = (header as string).split(",");
  return lines.slice(0, n).map((line) => {
    const row = Object.fromEntries(line.split(",").map((v, i) => [names[i] as string, v]));
    const { frequency: _, ...input } = row;
    return input;
  });
}

async function runAndWait(file: string): Promise<string> {
  const { runId } = await t.service.precompute.enqueue({
    model: "flight-delay",
    source: { kind: "seed", file },
    chunkSize: 100,
  });
  const done = await t.service.precompute.waitUntilDone(runId, 60_000);
  expect(done.state).toBe("completed");
  return done.table as string;
}

/** Precomputes these inputs in one run, which must complete; returns the table it published. */
async function runInline(inputs: Record<string, unknown>[]): Promise<string> {
  const { runId } = await t.service.precompute.enqueue({
    model: "flight-delay",
    source: { kind: "inline", inputs },
  });
  const done = await t.service.precompute.waitUntilDone(runId, 60_000);
  expect(done.state).toBe("completed");
  return done.table as string;
}

/** The listing, and its latest table downloaded and opened. */
async function latestOpened() {
  const listing = (await getJson(`${t.url}/v1/models/flight-delay/tables`)).body;
  const bytes = await (await fetch(`${t.url}${listing.latest.url}`)).arrayBuffer();
  return { listing, table: await LookupTable.open(new Uint8Array(bytes)) };
}

/** Flips `count` bytes in the middle of a stored table, as damage on disk would. */
/** Entries the active version has in Redis (every bucket's fields). */
async function entriesInRedis(): Promise<number> {
  const { redis: client, keys, active } = t.service;
  let total = 0;
  const version = active.get("flight-delay") as string;
  for await (const batch of storedKeys(client, keys, "flight-delay", version))
    total += batch.length;
  return total;
}

/** Cuts a table file short, as a full disk or a stopped copy leaves it. */
async function truncate(generation: string): Promise<string> {
  const file = join(t.config.tablesDir, "flight-delay", `${generation}.pctable`);
  const bytes = await readFile(file);
  await writeFile(file, bytes.subarray(0, bytes.length - 100));
  return file;
}

async function damage(generation: string, count: number): Promise<string> {
  const file = join(t.config.tablesDir, "flight-delay", `${generation}.pctable`);
  const bytes = await readFile(file);
  for (let i = 0; i < count; i++) {
    const at = (bytes.length >> 1) + i * 7;
    bytes[at] = (bytes[at] as number) ^ 0xff;
  }
  await writeFile(file, bytes);
  return file;
}

/** The service's log lines (JSON). */
let logged: Record<string, unknown>[] = [];

beforeAll(async () => {
  redis = await startRedisServer(); // its own, so the test can stop it
  const dataDir = await tempDataDir();
  const env = {
    REDIS_URL: redis.url,
    PREDCACHE_PREFIX: uniquePrefix("tables"),
    PREDCACHE_DATA_DIR: dataDir,
  };
  const captured = capturedLog();
  logged = captured.lines;
  t = await startTestService({ env, log: captured.log });
  worker = await precomputeWorkerFor(t);
  rows = await seedRows(300);
  const generation = await runAndWait(await writeSeedCsv(rows));
  const listing = await getJson(`${t.url}/v1/models/flight-delay/tables`);
  first = listing.body.latest;
  expect(first.generation).toBe(generation);
});
afterAll(async () => {
  // The last case restarts Redis under the running service and worker.
  await closeOrReport("precompute worker", worker.close());
  await closeOrReport("service", t.close());
  await redis.stop();
});

describe("lookup tables", () => {
  it("lists the published table with its version, size, count and checksum", async () => {
    const { status, body } = await getJson(`${t.url}/v1/models/flight-delay/tables`);
    expect(status).toBe(200);
    expect(body.tables[0]).toMatchObject({
      entryCount: 300,
      modelVersion: body.activeVersion,
      encodingHash: expect.stringMatching(/^[0-9a-f]{16}$/),
      checksum: expect.stringMatching(/^[0-9a-f]{64}$/),
    });
    // Public: the seed file is named, not where it lies on the server's disk.
    expect(body.tables[0].source).toMatch(/: seed file [^/]+\.csv$/);
    expect(body.tables[0].bytes).toBeGreaterThan(300 * 8);
  });

  it("downloads a table whose every entry equals the server's answer for the same input", async () => {
    const response = await fetch(`${t.url}${first.url}`);
    expect(response.status).toBe(200);
    expect(response.headers.get("cache-control")).toMatch(/immutable/);
    const bytes = new Uint8Array(await response.arrayBuffer());
    expect(response.headers.get("content-length")).toBe(String(bytes.length));
    const table = await LookupTable.open(bytes);
    expect(table.size).toBe(300);
    const flags = { low: 0, high: 0 };
    for (const input of rows) {
      const server = await getJson(
        `${t.url}/v1/models/flight-delay/predict?${new URLSearchParams(input)}`,
      );
      expect(server.status).toBe(200);
      expect(table.get(input)).toEqual(server.body.prediction);
      // The flags too: lowConfidence from the manifest's bar the table header carries.
      const local = table.lookup(input);
      expect(local).toMatchObject({
        status: "hit",
        lowConfidence: server.body.lowConfidence,
        outOfDistribution: server.body.outOfDistribution ? expect.anything() : [],
      });
      flags[server.body.lowConfidence ? "low" : "high"]++;
    }
    // Both kinds occur among these rows, so the comparison above means something.
    expect(flags.low).toBeGreaterThan(0);
    expect(flags.high).toBeGreaterThan(0);
  });

  it("answers If-None-Match with 304 and Range with 206, per RFC 9110", async () => {
    const full = new Uint8Array(await (await fetch(`${t.url}${first.url}`)).arrayBuffer());
    const etag = `"${first.checksum}"`;
    const notModified = await fetch(`${t.url}${first.url}`, { headers: { "if-none-match": etag } });
    expect(notModified.status).toBe(304);
    expect(notModified.headers.get("etag")).toBe(etag);
    expect((await notModified.arrayBuffer()).byteLength).toBe(0);

    const part = await fetch(`${t.url}${first.url}`, { headers: { range: "bytes=0-99" } });
    expect(part.status).toBe(206);
    expect(part.headers.get("content-range")).toBe(`bytes 0-99/${full.length}`);
    expect(part.headers.get("content-length")).toBe("100");
    expect(new Uint8Array(await part.arrayBuffer())).toEqual(full.subarray(0, 100));

    // The unit is case-insensitive.
    const suffix = await fetch(`${t.url}${first.url}`, { headers: { range: "Bytes=-32" } });
    expect(suffix.status).toBe(206);
    expect(new Uint8Array(await suffix.arrayBuffer())).toEqual(full.subarray(full.length - 32));

    const stale = await fetch(`${t.url}${first.url}`, {
      headers: { range: "bytes=0-9", "if-range": '"other"' },
    });
    expect(stale.status).toBe(200);
    expect((await stale.arrayBuffer()).byteLength).toBe(full.length);

    const beyond = await fetch(`${t.url}${first.url}`, {
      headers: { range: `bytes=${full.length}-` },
    });
    expect(beyond.status).toBe(416);
    expect(beyond.headers.get("content-range")).toBe(`bytes */${full.length}`);
    const closedBeyond = await fetch(`${t.url}${first.url}`, {
      headers: { range: `bytes=${full.length}-${full.length + 10}` },
    });
    expect(closedBeyond.status).toBe(416);
    const reversed = await fetch(`${t.url}${first.url}`, { headers: { range: "bytes=9-2" } });
    expect(reversed.status).toBe(200); // an invalid range is ignored, as RFC 9110 allows

    // HEAD: the GET's status and headers, no body (and no file opened for one).
    const head = await fetch(`${t.url}${first.url}`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("content-length")).toBe(String(full.length));
    expect(head.headers.get("etag")).toBe(etag);
    expect((await head.arrayBuffer()).byteLength).toBe(0);
    const headPart = await fetch(`${t.url}${first.url}`, {
      method: "HEAD",
      headers: { range: "bytes=0-99" },
    });
    expect(headPart.status).toBe(206);
    expect(headPart.headers.get("content-range")).toBe(`bytes 0-99/${full.length}`);
    expect(headPart.headers.get("content-length")).toBe("100");
    // The listing's HEAD says its length too.
    const listingUrl = `${t.url}/v1/models/flight-delay/tables`;
    const listingHead = await fetch(listingUrl, { method: "HEAD" });
    const listingBody = await (await fetch(listingUrl)).text();
    expect(listingHead.headers.get("content-length")).toBe(String(Buffer.byteLength(listingBody)));

    // If-Match: this table's tag or * go on; another tag, or a weak one, is 412.
    for (const ifMatch of [etag, `"other", ${etag}`, "*"])
      expect(
        (await fetch(`${t.url}${first.url}`, { headers: { "if-match": ifMatch } })).status,
      ).toBe(200);
    for (const ifMatch of ['"nope"', `W/${etag}`]) {
      const refused = await getJson(`${t.url}${first.url}`, { headers: { "if-match": ifMatch } });
      expect(refused.status).toBe(412);
      expect(refused.body.error.code).toBe("precondition_failed");
    }
    // Saved under its own name (curl -OJ), not "latest".
    expect(head.headers.get("content-disposition")).toBe(
      `attachment; filename="flight-delay-${first.generation}.pctable"`,
    );
  });

  it("lets browser apps on other origins read tables and predictions (CORS)", async () => {
    const preflight = await fetch(`${t.url}/v1/models/flight-delay/predict`, {
      method: "OPTIONS",
      headers: { origin: "http://app.example", "access-control-request-method": "POST" },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get("access-control-allow-origin")).toBe("*");
    expect(preflight.headers.get("access-control-allow-methods")).toBe("GET, HEAD, POST");
    // An app may send its API key, its client id (experiments) and its request id.
    const allowed = (preflight.headers.get("access-control-allow-headers") ?? "").toLowerCase();
    for (const header of ["authorization", "x-api-key", "x-client-id", "x-request-id"])
      expect(allowed.split(", ")).toContain(header);
    // The job a 202 points at is readable from the app's origin too.
    const job = await fetch(`${t.url}/v1/jobs/flight-delay.${"0".repeat(12)}.${"0".repeat(32)}`, {
      headers: { origin: "http://app.example" },
    });
    expect(job.status).toBe(404);
    expect(job.headers.get("access-control-allow-origin")).toBe("*");
    const jobPreflight = await fetch(`${t.url}/v1/jobs/x`, {
      method: "OPTIONS",
      headers: { origin: "http://app.example", "access-control-request-method": "GET" },
    });
    expect(jobPreflight.status).toBe(204);
    expect(jobPreflight.headers.get("access-control-allow-origin")).toBe("*");
    // Only what the path serves: a job is read, never posted to.
    expect(jobPreflight.headers.get("access-control-allow-methods")).toBe("GET, HEAD");
    const table = await fetch(`${t.url}${first.url}`, {
      headers: { origin: "http://app.example" },
    });
    expect(table.headers.get("access-control-allow-origin")).toBe("*");
    // A table's own headers are readable on table answers (only: each header costs every answer).
    const tableExposed = table.headers.get("access-control-expose-headers");
    for (const name of [
      "ETag",
      "Content-Location",
      "Content-Range",
      "Accept-Ranges",
      "X-Predcache-Generation",
      "X-Request-Id",
    ])
      expect(tableExposed).toContain(name);
    const missing = await fetch(`${t.url}/v1/models/nope/tables`, {
      headers: { origin: "http://app.example" },
    });
    expect(missing.status).toBe(404); // errors carry the header too, so apps can read them
    expect(missing.headers.get("access-control-allow-origin")).toBe("*");
    // A hit from memory (the synchronous path) carries them with its own validators.
    const lookup = `${t.url}/v1/models/flight-delay/predict?origin=SFO&destination=LAX&hour=7&dayOfWeek=1&wait=5000`;
    await fetch(lookup);
    const hit = await fetch(lookup, { headers: { origin: "http://app.example" } });
    expect((await hit.json()).source).toBe("memory");
    expect(hit.headers.get("access-control-allow-origin")).toBe("*");
    const hitExposed = hit.headers.get("access-control-expose-headers");
    for (const name of ["ETag", "Location", "Retry-After", "X-Request-Id"])
      expect(hitExposed).toContain(name);
    expect(hitExposed).not.toContain("Content-Range");
    // No API keys here: no RateLimit headers are ever sent, so none are listed.
    expect(hitExposed).not.toContain("RateLimit");
    expect(hit.headers.get("x-request-id")).toMatch(/^[0-9a-f]{16}$/);
    expect(hit.headers.get("etag")).toMatch(/^"/);
  });

  it("with named origins: allows those, varies by Origin, and refuses others' preflights", async () => {
    const named = await startTestService({
      env: { PREDCACHE_CORS_ORIGINS: "http://app.example,http://other.example" },
      liveWorker: false,
    });
    try {
      const path = `${named.url}/v1/models/flight-delay/tables`;
      const ok = await fetch(path, { headers: { origin: "http://other.example" } });
      expect(ok.headers.get("access-control-allow-origin")).toBe("http://other.example");
      expect(ok.headers.get("vary")).toMatch(/Origin/);
      expect(ok.headers.get("x-request-id")).toMatch(/^[0-9a-f]{16}$/);
      const foreign = await fetch(path, { headers: { origin: "http://evil.example" } });
      expect(foreign.headers.get("access-control-allow-origin")).toBeNull();
      expect(foreign.headers.get("vary")).toMatch(/Origin/);
      const refused = await fetch(path, {
        method: "OPTIONS",
        headers: { origin: "http://evil.example", "access-control-request-method": "GET" },
      });
      expect(refused.status).toBe(204);
      expect(refused.headers.get("access-control-allow-origin")).toBeNull();
      expect(refused.headers.get("access-control-allow-methods")).toBeNull();
      const allowed = await fetch(path, {
        method: "OPTIONS",
        headers: {
          origin: "http://app.example",
          "access-control-request-method": "GET",
          "x-request-id": "pre-1",
        },
      });
      expect(allowed.headers.get("access-control-allow-origin")).toBe("http://app.example");
      expect(allowed.headers.get("access-control-max-age")).toBe("600");
      expect(allowed.headers.get("x-request-id")).toBe("pre-1");
      // Outside /v1/models, and OPTIONS without a preflight's header: no CORS, the path's methods.
      const health = await fetch(`${named.url}/healthz`, {
        headers: { origin: "http://app.example" },
      });
      expect(health.headers.get("access-control-allow-origin")).toBeNull();
      const bare = await fetch(path, { method: "OPTIONS" });
      expect(bare.status).toBe(204);
      expect(bare.headers.get("allow")).toBe("GET, HEAD, OPTIONS");
      expect(bare.headers.get("access-control-allow-methods")).toBeNull();
    } finally {
      await named.close();
    }
  });

  it("serves latest with its immutable versioned URL in Content-Location", async () => {
    const latest = await fetch(`${t.url}/v1/models/flight-delay/tables/latest`);
    expect(latest.status).toBe(200);
    expect(latest.headers.get("content-location")).toBe(first.url);
    expect(latest.headers.get("cache-control")).toBe("no-cache");
    expect((await getJson(`${t.url}/v1/models/flight-delay/tables/nope`)).status).toBe(404);
    expect((await getJson(`${t.url}/v1/models/nope/tables`)).status).toBe(404);
  });

  it("answers covered inputs locally with no network call, and the rest from the server", async () => {
    let calls = 0;
    const statuses: number[] = [];
    const counting: typeof fetch = async (input, init) => {
      calls++;
      const response = await fetch(input, init);
      statuses.push(response.status);
      return response;
    };
    const client = new HybridClient({ baseUrl: t.url, model: "flight-delay", fetch: counting });
    expect(await client.refresh()).toBe("full");
    const before = calls;
    for (const input of rows.slice(0, 50))
      expect((await client.predict(input)).source).toBe("table");
    expect(calls).toBe(before);
    const uncovered = { origin: "ABQ", destination: "ORD", hour: 3, dayOfWeek: 2 };
    const fromServer = await client.predict(uncovered);
    expect(fromServer.source).toMatch(/^server:/);
    expect(calls).toBe(before + 1);
    // The same flags as the API, from the table and from the server.
    const direct = await getJson(
      `${t.url}/v1/models/flight-delay/predict?${new URLSearchParams(rows[0])}`,
    );
    expect((await client.predict(rows[0] as Record<string, string>)).lowConfidence).toBe(
      direct.body.lowConfidence,
    );
    expect(typeof fromServer.lowConfidence).toBe("boolean");
    expect((await client.predict(uncovered)).source).toBe("cache");
    expect(calls).toBe(before + 1);
    // Nothing new: the listing answers 304 to the client's If-None-Match, with no body.
    expect(await client.refresh()).toBe("unchanged");
    expect(statuses.at(-1)).toBe(304);
  });

  it("after a promote, forgets the older version's table and remembered server answers", async () => {
    // A promote to a version with no table yet, as the client sees it, once `promoted`.
    let promoted = false;
    const next = "aaaaaaaaaaaa";
    const client = new HybridClient({
      baseUrl: t.url,
      model: "flight-delay",
      fetch: promotedFetch(() => ({ promoted, next })),
    });
    expect(await client.refresh()).toBe("full");
    const covered = rows[0] as Record<string, string>;
    const uncovered = { origin: "ABQ", destination: "ORD", hour: 4, dayOfWeek: 2 };
    expect((await client.predict(covered)).source).toBe("table");
    expect((await client.predict(uncovered)).source).toMatch(/^server:/);
    expect((await client.predict(uncovered)).source).toBe("cache");
    promoted = true;
    expect(await client.refresh()).toBe("none");
    expect(client.table).toBeUndefined();
    for (const input of [covered, uncovered]) {
      const answer = await client.predict(input);
      expect(answer.source).toMatch(/^server:/);
      expect(answer.version).toBe(next);
    }
  });

  it("runs overlapping refreshes one at a time, so an older download cannot land last", async () => {
    const events: string[] = [];
    const client = new HybridClient({
      baseUrl: t.url,
      model: "flight-delay",
      fetch: async (input, init) => {
        const url = String(input);
        const kind = url.endsWith("/tables") ? "listing" : "table";
        events.push(`${kind} asked`);
        const response = await fetch(input, init);
        if (response.status === 304) {
          events.push(`${kind} done`);
          return response;
        }
        const bytes = await response.arrayBuffer();
        events.push(`${kind} done`);
        return new Response(bytes, { status: response.status, headers: response.headers });
      },
    });
    const outcomes = await Promise.all([client.refresh(), client.refresh()]);
    expect(outcomes).toEqual(["full", "unchanged"]);
    expect(events.slice(0, 5)).toEqual([
      "listing asked",
      "listing done",
      "table asked",
      "table done",
      "listing asked",
    ]);
  });

  it("without a table, refuses what a query string cannot carry; a 202 is a PendingAnswerError", async () => {
    let calls = 0;
    const client = new HybridClient({
      baseUrl: t.url,
      model: "flight-delay",
      wait: 0,
      fetch: (input, init) => {
        calls++;
        return fetch(input, init);
      },
    });
    const base = { origin: "ABQ", destination: "ORD", hour: 5, dayOfWeek: 2 };
    for (const bad of [
      { ...base, origin: null },
      { ...base, hour: true },
      { ...base, version: "x" },
      null,
      [],
    ])
      await expect(
        client.predict(bad as unknown as Record<string, unknown>),
      ).rejects.toBeInstanceOf(InvalidInputError);
    expect(calls).toBe(0);
    const pending = await client.predict({ ...base, hour: 6 }).catch((error: unknown) => error);
    expect(pending).toBeInstanceOf(PendingAnswerError);
    expect((pending as PendingAnswerError).jobUrl).toMatch(new RegExp(`^${t.url}/v1/jobs/`));
    const table = await LookupTable.open(
      new Uint8Array(await (await fetch(`${t.url}${first.url}`)).arrayBuffer()),
    );
    // With a table, too: an invalid input, not a TypeError.
    expect(() => table.get(null as unknown as Record<string, unknown>)).toThrow(InvalidInputError);
    expect(() => new HybridClient({ baseUrl: t.url, model: "other", table })).toThrow(
      /of model flight-delay/,
    );
  });

  it("refreshes through a delta that rebuilds the new generation exactly", async () => {
    const client = new HybridClient({ baseUrl: t.url, model: "flight-delay" });
    await client.refresh();
    const old = client.table as LookupTable;
    const more = await seedRows(450);
    const second = await runAndWait(await writeSeedCsv(more));
    const listing = await getJson(`${t.url}/v1/models/flight-delay/tables`);
    expect(listing.body.latest.generation).toBe(second);
    const delta = new Uint8Array(
      await (
        await fetch(
          `${t.url}/v1/models/flight-delay/tables/${second}/delta?from=${old.header.generation}`,
        )
      ).arrayBuffer(),
    );
    const full = new Uint8Array(
      await (await fetch(`${t.url}/v1/models/flight-delay/tables/${second}`)).arrayBuffer(),
    );
    expect(delta.length).toBeLessThan(full.length);
    expect(await applyDelta(old.parsed, delta)).toEqual(full);
    // Asked again (served from the delta cache): the same bytes; a 304 to its ETag.
    const again = await fetch(
      `${t.url}/v1/models/flight-delay/tables/${second}/delta?from=${old.header.generation}`,
    );
    expect(Buffer.from(await again.arrayBuffer()).equals(Buffer.from(delta))).toBe(true);
    const revalidated = await fetch(
      `${t.url}/v1/models/flight-delay/tables/${second}/delta?from=${old.header.generation}`,
      { headers: { "if-none-match": again.headers.get("etag") as string } },
    );
    expect(revalidated.status).toBe(304);
    // If-Match, as for a table: another tag (or a weak one) is 412, this one or * is 200.
    const deltaUrl = `${t.url}/v1/models/flight-delay/tables/${second}/delta?from=${old.header.generation}`;
    const tag = again.headers.get("etag") as string;
    for (const [ifMatch, status] of [
      ['"other"', 412],
      [`W/${tag}`, 412],
      [tag, 200],
      ["*", 200],
    ] as const) {
      const r = await fetch(deltaUrl, { headers: { "if-match": ifMatch } });
      expect(r.status, ifMatch).toBe(status);
      await r.arrayBuffer();
    }
    const twice = await getJson(
      `${t.url}/v1/models/flight-delay/tables/${second}/delta?from=${old.header.generation}&from=${second}`,
    );
    expect(twice.status).toBe(400);
    expect(await client.refresh()).toBe("delta");
    expect(client.table?.size).toBe(450);
    expect(client.requests.table).toBe(1);
  });

  it("grows the version's table run by run; a run adding nothing publishes no new generation", async () => {
    const before = (await getJson(`${t.url}/v1/models/flight-delay/tables`)).body.latest;
    const extra = { origin: "ABQ", destination: "DEN", hour: "5", dayOfWeek: "4" };
    const grown = await runAndWait(await writeSeedCsv([extra, rows[0] as Record<string, string>]));
    const listing = (await getJson(`${t.url}/v1/models/flight-delay/tables`)).body;
    expect(listing.latest.generation).toBe(grown);
    expect(listing.latest.entryCount).toBe(before.entryCount + 1);
    const table = await LookupTable.open(
      new Uint8Array(await (await fetch(`${t.url}${listing.latest.url}`)).arrayBuffer()),
    );
    expect(table.get(extra)).toBeDefined();
    expect(table.get(rows[0] as Record<string, string>)).toBeDefined(); // carried over
    const same = await runAndWait(await writeSeedCsv([extra]));
    expect(same).toBe(grown);
    expect((await getJson(`${t.url}/v1/models/flight-delay/tables`)).body.tables.length).toBe(
      listing.tables.length,
    );
  });

  it("refuses a delta no smaller than its table; the client then downloads the table", async () => {
    const client = new HybridClient({ baseUrl: t.url, model: "flight-delay" });
    await client.refresh();
    const held = client.table as LookupTable;
    // Many more new entries than the held table has: each costs 8 bytes of hash in a
    // delta, fewer in the table's own index.
    const { runId } = await t.service.precompute.enqueue({
      model: "flight-delay",
      source: {
        kind: "grid",
        axes: {
          origin: ["AUS", "BOS", "BWI", "CLE", "CLT", "CMH", "CVG", "DAL", "DCA", "ELP"],
          destination: ["BDL", "BNA", "BOI", "BTR", "BTV", "BUF"],
          hour: "all",
          dayOfWeek: "all",
        },
      },
    });
    const done = await t.service.precompute.waitUntilDone(runId, 120_000);
    expect(done.state).toBe("completed");
    expect(done.table).not.toBe(held.header.generation);
    const refused = await getJson(
      `${t.url}/v1/models/flight-delay/tables/${done.table}/delta?from=${held.header.generation}`,
    );
    expect(refused.status).toBe(409);
    expect(refused.body.error.message).toMatch(/is not smaller than the table.*full table/);
    expect(await client.refresh()).toBe("full");
    expect(client.table?.header.generation).toBe(done.table);
  });

  it("answers deltas of many pairs at once with a delta, a 409 or 503 overloaded, never more", async () => {
    const listing = (await getJson(`${t.url}/v1/models/flight-delay/tables`)).body;
    const latest = listing.latest;
    const pairs = listing.tables
      .filter(
        (x: { generation: string; encodingHash: string }) =>
          x.generation !== latest.generation && x.encodingHash === latest.encodingHash,
      )
      .map((x: { generation: string }) => `${latest.url}/delta?from=${x.generation}`);
    expect(pairs.length).toBeGreaterThanOrEqual(3);
    const answers = await Promise.all(pairs.map((url: string) => getJson(`${t.url}${url}`)));
    for (const r of answers) {
      expect([200, 409, 503]).toContain(r.status);
      if (r.status === 503) {
        expect(r.body.error.code).toBe("overloaded");
        expect(r.headers.get("retry-after")).toBe("1");
      }
    }
  });

  it("runs finishing together each build on the other's table: the newest holds both", async () => {
    // A second worker, so both runs' finish steps can run at once.
    const second = await precomputeWorkerFor(t);
    try {
      const grid = (origin: string[]) => ({
        kind: "grid" as const,
        axes: {
          origin,
          destination: ["ATL", "ORD", "DFW", "DEN"],
          hour: "all" as const,
          dayOfWeek: "all" as const,
        },
      });
      const sources = [grid(["MIA", "MSP"]), grid(["IAH", "DTW"])];
      const runs = await Promise.all(
        sources.map((source) =>
          t.service.precompute.enqueue({ model: "flight-delay", source, chunkSize: 200 }),
        ),
      );
      const done = await Promise.all(
        runs.map(({ runId }) => t.service.precompute.waitUntilDone(runId, 60_000)),
      );
      expect(done.map((d) => d.state)).toEqual(["completed", "completed"]);
      const listing = (await getJson(`${t.url}/v1/models/flight-delay/tables`)).body;
      const table = await LookupTable.open(
        new Uint8Array(await (await fetch(`${t.url}${listing.latest.url}`)).arrayBuffer()),
      );
      for (const origin of ["MIA", "MSP", "IAH", "DTW"])
        expect(table.get({ origin, destination: "ORD", hour: 13, dayOfWeek: 5 })).toBeDefined();
      expect(table.get(rows[0] as Record<string, string>)).toBeDefined();
    } finally {
      await second.close();
    }
  });

  it("a build whose base was replaced meanwhile builds again on the new table", async () => {
    const active = t.registry.get("flight-delay", t.service.active.get("flight-delay") ?? "");
    if (!active) throw new Error("no active flight-delay");
    const model: ModelVersion = active;
    // In Redis but in no table: a live answer. A writer that takes no table lock (a worker
    // of an older release) publishes it on top of the base while the run below builds.
    const raced = { origin: "ABQ", destination: "BOS", hour: "3", dayOfWeek: "2" };
    const live = await getJson(
      `${t.url}/v1/models/flight-delay/predict?${new URLSearchParams({ ...raced, wait: "5000" })}`,
    );
    expect(live.body.source).toBe("live");
    const added = { origin: "ABQ", destination: "BTV", hour: 4, dayOfWeek: 6 };
    const plain = new DirectoryTableStore(t.config.tablesDir);
    const published: string[] = [];
    class RacingTableStore extends DirectoryTableStore {
      override async read(name: string, generation: string): Promise<Uint8Array> {
        const bytes = await super.read(name, generation);
        if (published.length === 0) {
          const info = await buildTable({
            model,
            generation: `${model.version}.race${Date.now().toString(36)}`,
            source: "a writer without the lock",
            keys: (async function* () {
              yield [live.body.key as string];
            })(),
            store: t.service.tiers.store,
            tables: plain,
            base: parseTable(bytes),
          });
          published.push(info.generation);
        }
        return bytes;
      }
    }
    // Only the racing worker takes the run.
    await worker.close();
    const racing = await precomputeWorkerFor(t, new RacingTableStore(t.config.tablesDir));
    try {
      const built = await runInline([added]);
      expect(published).toHaveLength(1);
      const { listing, table } = await latestOpened();
      expect(listing.latest.generation).toBe(built);
      expect(built).not.toBe(published[0]);
      expect(table.get(added)).toBeDefined();
      expect(table.get(raced)).toEqual(live.body.prediction);
      expect(table.get(rows[0] as Record<string, string>)).toBeDefined();
    } finally {
      await racing.close();
      worker = await precomputeWorkerFor(t);
    }
  });

  it("sets a table damaged on disk aside instead of carrying it into the next generation", async () => {
    const before = (await getJson(`${t.url}/v1/models/flight-delay/tables`)).body.latest;
    const damagedOnly = { origin: "ABQ", destination: "BUF", hour: 5, dayOfWeek: 1 };
    const damaged = await runAndWait(
      await writeSeedCsv([
        Object.fromEntries(Object.entries(damagedOnly).map(([k, v]) => [k, String(v)])),
      ]),
    );
    expect(damaged).not.toBe(before.generation);
    // Its checksum no longer matches.
    const file = await damage(damaged, 5);

    const added = { origin: "ABQ", destination: "BUR", hour: 6, dayOfWeek: 2 };
    const published = await runInline([added]);
    // Built on the last intact table: its entries and the run's, under a valid checksum.
    const { listing, table } = await latestOpened();
    expect(listing.latest.generation).toBe(published);
    expect(listing.tables.map((x: { generation: string }) => x.generation)).not.toContain(damaged);
    await expect(stat(`${file}.damaged`)).resolves.toBeDefined();
    expect(table.get(added)).toBeDefined();
    expect(table.get(rows[0] as Record<string, string>)).toBeDefined();
    // Rebuilt from Redis: what only the damaged table held is in the new one too, with
    // every other entry the version has there (live answers included).
    expect(table.get(damagedOnly)).toBeDefined();
    expect(table.size).toBe(await entriesInRedis());
    expect(table.size).toBeGreaterThan(before.entryCount + 1);
    // And it was answered from Redis meanwhile.
    const lookup = await getJson(
      `${t.url}/v1/models/flight-delay/predict?${new URLSearchParams(
        Object.fromEntries(Object.entries(damagedOnly).map(([k, v]) => [k, String(v)])),
      )}&wait=0`,
    );
    expect(lookup.status).toBe(200);
  });

  it("stops listing and serving a table damaged on disk: the one before it is the latest", async () => {
    const before = (await getJson(`${t.url}/v1/models/flight-delay/tables`)).body.latest;
    const added = { origin: "ABQ", destination: "BZN", hour: 10, dayOfWeek: 5 };
    const published = await runInline([added]);
    expect((await getJson(`${t.url}/v1/models/flight-delay/tables`)).body.latest.generation).toBe(
      published,
    );
    // A flipped byte: its header still reads, its checksum no longer matches.
    const file = await damage(published, 1);
    const listing = (await getJson(`${t.url}/v1/models/flight-delay/tables`)).body;
    expect(listing.latest.generation).toBe(before.generation);
    expect(listing.tables.map((x: { generation: string }) => x.generation)).not.toContain(
      published,
    );
    expect((await getJson(`${t.url}/v1/models/flight-delay/tables/${published}`)).status).toBe(404);
    // Set aside beside it, for a look, as a worker would.
    await expect(stat(`${file}.damaged`)).resolves.toBeDefined();
    const latest = await fetch(`${t.url}/v1/models/flight-delay/tables/latest`);
    await expect(
      LookupTable.open(new Uint8Array(await latest.arrayBuffer())),
    ).resolves.toBeDefined();
  });

  it("sets aside a table cut short, says so, and rebuilds the version's next one from Redis", async () => {
    const before = (await getJson(`${t.url}/v1/models/flight-delay/tables`)).body.latest;
    const only = { origin: "ABQ", destination: "BTV", hour: 9, dayOfWeek: 3 };
    const cut = await runInline([only]);
    const file = await truncate(cut);
    const listing = (await getJson(`${t.url}/v1/models/flight-delay/tables`)).body;
    expect(listing.latest.generation).toBe(before.generation);
    await expect(stat(`${file}.damaged`)).resolves.toBeDefined();
    const said = logged.find((l) => l.table === cut);
    expect(said).toMatchObject({ level: 50 });
    expect(String(said?.err)).toMatch(/^unreadable/);
    expect(String(said?.msg)).toMatch(/rebuilt from Redis/);
    // The next generation holds what only the cut one held, and all the version has.
    const next = { origin: "ABQ", destination: "BTV", hour: 10, dayOfWeek: 3 };
    const published = await runInline([next]);
    const { listing: after, table } = await latestOpened();
    expect(after.latest.generation).toBe(published);
    expect(table.get(only)).toBeDefined();
    expect(table.get(next)).toBeDefined();
    expect(table.size).toBe(await entriesInRedis());
    // Once rebuilt, the next run builds on it again (no rebuild).
    const again = await runInline([{ ...next, hour: 11 }]);
    expect((await latestOpened()).table.size).toBe(table.size + 1);
    expect(again).not.toBe(published);
  });

  it("builds past a damaged table it cannot set aside", async () => {
    const before = (await getJson(`${t.url}/v1/models/flight-delay/tables`)).body.latest;
    await damage(before.generation, 1);
    class ReadOnlyTableStore extends DirectoryTableStore {
      override async setAside(): Promise<void> {
        throw new Error("EROFS: read-only file system");
      }
    }
    await worker.close();
    const stuck = await precomputeWorkerFor(t, new ReadOnlyTableStore(t.config.tablesDir));
    try {
      const added = { origin: "ABQ", destination: "BWI", hour: 8, dayOfWeek: 4 };
      const published = await runInline([added]);
      const { listing, table } = await latestOpened();
      expect(listing.latest.generation).toBe(published);
      expect(table.get(added)).toBeDefined();
    } finally {
      await stuck.close();
      worker = await precomputeWorkerFor(t);
    }
  });

  it("retries a finish step that failed once its table was in place: the run completes on it", async () => {
    // The rename went through, then the step failed (a lost disk or connection after it):
    // the retried step must build on what is now the newest table and complete the run.
    let failures = 0;
    class FailOnceAfterPublish extends DirectoryTableStore {
      override async publish(model: string, generation: string, tempFile: string) {
        const info = await super.publish(model, generation, tempFile);
        if (failures++ === 0) throw new Error("EIO: i/o error, after the rename");
        return info;
      }
    }
    const before = new Set(
      (await getJson(`${t.url}/v1/models/flight-delay/tables`)).body.tables.map(
        (x: { generation: string }) => x.generation,
      ),
    );
    await worker.close();
    const flaky = await precomputeWorkerFor(t, new FailOnceAfterPublish(t.config.tablesDir));
    try {
      const added = { origin: "ABQ", destination: "CAE", hour: 9, dayOfWeek: 3 };
      const published = await runInline([added]);
      expect(failures).toBeGreaterThanOrEqual(1);
      const { listing, table } = await latestOpened();
      expect(listing.latest.generation).toBe(published);
      expect(table.get(added)).toBeDefined();
      expect(table.get(rows[0] as Record<string, string>)).toBeDefined();
      // Every table it listed is intact: the failed attempt left no half-made file.
      const made = (listing.tables as { generation: string; url: string }[]).filter(
        (x) => !before.has(x.generation),
      );
      expect(made.length).toBeGreaterThanOrEqual(1);
      for (const { url } of made) {
        const bytes = await (await fetch(`${t.url}${url}`)).arrayBuffer();
        await expect(LookupTable.open(new Uint8Array(bytes))).resolves.toBeDefined();
      }
    } finally {
      await flaky.close();
      worker = await precomputeWorkerFor(t);
    }
  });

  it("keeps the old table when a download is corrupt", async () => {
    const client = new HybridClient({
      baseUrl: t.url,
      model: "flight-delay",
      fetch: async (input, init) => {
        const response = await fetch(input, init);
        if (!String(input).match(/\/tables\/[0-9a-f]{12}\.[0-9a-z]+$/)) return response;
        const bytes = new Uint8Array(await response.arrayBuffer());
        return new Response(bytes.subarray(0, bytes.length - 100), { status: 200 });
      },
    });
    await expect(client.refresh()).rejects.toThrow();
    expect(client.table).toBeUndefined();
  });

  it("answers every input its resident table covers while Redis is down", async () => {
    await eventually(
      async () => (t.service.tiers.resident?.table("flight-delay") ? true : undefined),
      5_000,
    );
    const cold = await startTestService({
      env: {
        REDIS_URL: redis.url,
        PREDCACHE_PREFIX: t.config.prefix,
        PREDCACHE_DATA_DIR: t.config.dataDir,
      },
      liveWorker: false,
    });
    try {
      const port = redis.port;
      await redis.stop();
      try {
        for (const input of rows) {
          const r = await getJson(
            `${cold.url}/v1/models/flight-delay/predict?${new URLSearchParams(input)}`,
          );
          expect(r.status).toBe(200);
          expect(r.body.source).toBe("table");
        }
        const uncovered = await getJson(
          `${cold.url}/v1/models/flight-delay/predict?origin=ABQ&destination=DEN&hour=2&dayOfWeek=2`,
        );
        expect(uncovered.status).toBe(503);
      } finally {
        redis = await startRedisServer({ port });
      }
    } finally {
      await cold.close();
    }
  });
});
