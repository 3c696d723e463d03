/** HybridClient against a real service: what it keeps, remembers and gives up on. */
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { createServer, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  HybridClient,
  PendingAnswerError,
  RequestTimeoutError,
  ServerError,
  ServerUnreachableError,
} from "../../src/client/hybrid-client.ts";
import type { PrecomputeWorkerProcess } from "../../src/service.ts";
import { promotedFetch } from "../helpers/client.ts";
import {
  closeOrReport,
  precomputeInputs,
  precomputeWorkerFor,
  startTestService,
  type TestService,
  tempDataDir,
  uniquePrefix,
} from "../helpers/service.ts";

const covered = { origin: "LAS", destination: "LAX", hour: "16", dayOfWeek: "6" };
const uncovered = { origin: "ABQ", destination: "ORD", hour: 3, dayOfWeek: 2 };

let t: TestService;
let worker: PrecomputeWorkerProcess;

/** The promise's outcome, or "pending" if it has not settled within `ms`. */
function within<T>(ms: number, promise: Promise<T>): Promise<T | Error | "pending"> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<"pending">((done) => {
    timer = setTimeout(() => done("pending"), ms);
  });
  const settled = promise.catch((error: unknown) => error as Error);
  return Promise.race([settled, late]).finally(() => clearTimeout(timer));
}

/** Starts a server on a free loopback port; its URL and a close that drops open sockets. */
async function serve(
  server: Server | HttpServer,
): Promise<{ url: string; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise((done) => server.close(() => done()));
    },
  };
}

beforeAll(async () => {
  t = await startTestService({
    env: { PREDCACHE_PREFIX: uniquePrefix("hybrid"), PREDCACHE_DATA_DIR: await tempDataDir() },
  });
  worker = await precomputeWorkerFor(t);
  await precomputeInputs(t, [covered]);
});
afterAll(async () => {
  await closeOrReport("precompute worker", worker.close());
  await closeOrReport("service", t.close());
});

describe("HybridClient", () => {
  it("keeps its table when the listing has none but the table's version is still active", async () => {
    // A second API process on the same Redis whose tables folder is empty: it lists the
    // same active version and no table.
    const bare = await startTestService({
      env: { PREDCACHE_PREFIX: t.config.prefix, PREDCACHE_DATA_DIR: await tempDataDir() },
      liveWorker: false,
      registry: t.registry,
    });
    try {
      const held = new HybridClient({ baseUrl: t.url, model: "flight-delay" });
      expect(await held.refresh()).toBe("full");
      const table = held.table;
      const client = new HybridClient({ baseUrl: bare.url, model: "flight-delay", table });
      expect(await client.refresh()).toBe("unchanged");
      expect(client.table).toBe(table);
      expect((await client.predict(covered)).source).toBe("table");
      expect(client.requests.predict).toBe(0);
      // Asked again, the listing is unchanged (a 304) and the table still kept.
      expect(await client.refresh()).toBe("unchanged");
      expect(client.table).toBe(table);
    } finally {
      await bare.close();
    }
  });

  it("without a table, remembers server answers as with one, until the version changes", async () => {
    // A promote to a version with no table yet, as the client sees it, once `promoted`.
    let promoted = false;
    let next = "bbbbbbbbbbbb";
    const client = new HybridClient({
      baseUrl: t.url,
      model: "flight-delay",
      fetch: promotedFetch(() => ({ promoted, next })),
    });
    const sources: string[] = [];
    for (let i = 0; i < 4; i++) sources.push((await client.predict(uncovered)).source);
    expect(sources).toEqual([expect.stringMatching(/^server:/), "cache", "cache", "cache"]);
    // The same request with its fields in another order and a number as text.
    const reordered = { dayOfWeek: "2", hour: "3", destination: "ORD", origin: "ABQ" };
    expect((await client.predict(reordered)).source).toBe("cache");
    expect(client.requests.predict).toBe(1);
    // Kept under the key the server named, so a table of the same version finds it too.
    expect(await client.refresh()).toBe("full");
    expect((await client.predict(uncovered)).source).toBe("cache");
    expect(client.requests.predict).toBe(1);

    promoted = true;
    expect(await client.refresh()).toBe("none");
    const fresh = await client.predict(uncovered);
    expect(fresh).toMatchObject({ source: expect.stringMatching(/^server:/), version: next });
    expect(await client.predict(uncovered)).toMatchObject({ source: "cache", version: next });
    expect(client.requests.predict).toBe(2);

    // An answer of yet another version, with no refresh between: the rest are stale too.
    next = "cccccccccccc";
    const other = { ...uncovered, hour: 4 };
    expect((await client.predict(other)).version).toBe(next);
    expect(await client.predict(uncovered)).toMatchObject({
      source: expect.stringMatching(/^server:/),
      version: next,
    });
    expect(client.requests.predict).toBe(4);
  });

  it("keeps what a newer version answered when an older one's answer comes late", async () => {
    // Two lookups around a promote: the first asked, answered by the old version after
    // the second, asked later, was answered by the new one.
    const [before, after] = ["aaaaaaaaaaaa", "bbbbbbbbbbbb"];
    let release = () => {};
    const held = new Promise<void>((done) => {
      release = done;
    });
    const slow = { ...uncovered, hour: 5 };
    const quick = { ...uncovered, hour: 6 };
    const client = new HybridClient({
      baseUrl: t.url,
      model: "flight-delay",
      fetch: async (input, init) => {
        const response = await fetch(input, init);
        const url = String(input);
        if (!url.includes("/predict?")) return response;
        const late = url.includes("hour=5");
        if (late) await held;
        const body = { ...(await response.json()), version: late ? before : after };
        return new Response(JSON.stringify(body), { status: response.status });
      },
    });
    const first = client.predict(slow);
    expect((await client.predict(quick)).version).toBe(after);
    release();
    // The late answer is given as the server gave it…
    expect((await first).version).toBe(before);
    // …and neither forgets the newer version's answers nor is remembered in their place.
    expect(await client.predict(quick)).toMatchObject({ source: "cache", version: after });
    expect((await client.predict(slow)).source).toMatch(/^server:/);
    expect(client.requests.predict).toBe(3);
  });

  it("says the server is unreachable, while the table still answers what it covers", async () => {
    const held = new HybridClient({ baseUrl: t.url, model: "flight-delay" });
    expect(await held.refresh()).toBe("full");
    // A port nothing listens on.
    const gone = await serve(createHttpServer());
    await gone.close();
    const client = new HybridClient({
      baseUrl: gone.url,
      model: "flight-delay",
      table: held.table,
    });
    expect((await client.predict(covered)).source).toBe("table");
    for (const attempt of [client.predict(uncovered), client.refresh()]) {
      const error = await attempt.catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ServerUnreachableError);
      expect((error as Error).message).toMatch(/cannot reach the server at .*ECONNREFUSED/);
    }
  });

  it("gives the server's refusals as ServerError: status, code, Retry-After", async () => {
    // The real service, asked about a model it does not have.
    const unknown = new HybridClient({ baseUrl: t.url, model: "no-such-model" });
    for (const attempt of [() => unknown.refresh(), () => unknown.predict(uncovered)]) {
      const error = await attempt().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ServerError);
      expect(error).toMatchObject({ status: 404, code: "model_not_found" });
      expect((error as ServerError).requestId).toMatch(/^[0-9a-f]{16}$/);
      expect((error as Error).message).toMatch(/HTTP 404 model_not_found: no model named/);
    }
    // An outage as the service says it (503, its error code, when to come back), and a
    // proxy's page that is not JSON: the status either way.
    const replies = [
      {
        type: "application/json",
        body: JSON.stringify({
          error: { code: "redis_unavailable", message: "Redis is unavailable", details: {} },
        }),
      },
      { type: "text/html", body: "<html>bad gateway</html>" },
    ];
    let next = 0;
    const outage = await serve(
      createHttpServer((_req, res) => {
        const reply = replies[next++ % replies.length] as { type: string; body: string };
        res.writeHead(503, { "content-type": reply.type, "retry-after": "7" });
        res.end(reply.body);
      }),
    );
    try {
      const client = new HybridClient({ baseUrl: outage.url, model: "flight-delay" });
      const said = await client.predict(uncovered).catch((e: unknown) => e);
      expect(said).toMatchObject({ status: 503, code: "redis_unavailable", retryAfter: 7 });
      const page = await client.predict({ ...uncovered, hour: 9 }).catch((e: unknown) => e);
      expect(page).toBeInstanceOf(ServerError);
      expect(page).toMatchObject({ status: 503, code: undefined, retryAfter: 7 });
    } finally {
      await outage.close();
    }
  });

  it("names the out-of-distribution fields, from the table and from the server alike", async () => {
    const odd = { origin: "ZZZ", destination: "LAX", hour: 7, dayOfWeek: 1 };
    const server = new HybridClient({ baseUrl: t.url, model: "flight-delay" });
    const asked = await server.predict(odd);
    expect(asked.source).toMatch(/^server:/);
    expect(asked.outOfDistributionFields).toEqual(["origin"]);
    expect((await server.predict(covered)).outOfDistributionFields).toEqual([]);
  });

  it("refuses options the server would refuse on every lookup", () => {
    const base = { baseUrl: t.url, model: "flight-delay" };
    for (const wait of [-5, 1.5, Number.NaN])
      expect(() => new HybridClient({ ...base, wait })).toThrow(/wait must be a whole number/);
    for (const fallbackCacheSize of [-1, 1.5])
      expect(() => new HybridClient({ ...base, fallbackCacheSize })).toThrow(/fallbackCacheSize/);
    expect(() => new HybridClient({ ...base, wait: 0 })).not.toThrow();
  });

  it("remembers no server answer with fallbackCacheSize 0", async () => {
    const client = new HybridClient({
      baseUrl: t.url,
      model: "flight-delay",
      fallbackCacheSize: 0,
    });
    const other = { ...uncovered, hour: 7 };
    expect((await client.predict(other)).source).toMatch(/^server:/);
    expect((await client.predict(other)).source).toMatch(/^server:/);
    expect(client.requests.predict).toBe(2);
  });

  it("gives up on a server that accepts and never replies, and later refreshes still run", async () => {
    const hung = await serve(createServer(() => {}));
    try {
      const client = new HybridClient({ baseUrl: hung.url, model: "flight-delay", timeoutMs: 300 });
      const asked = await within(5_000, client.predict(uncovered));
      expect(asked).toBeInstanceOf(RequestTimeoutError);
      expect(String(asked)).toMatch(/within 300 ms/);
      // Queued behind a stuck one, a refresh still gets its turn, and its own answer.
      const [one, two] = await Promise.all([
        within(5_000, client.refresh()),
        within(5_000, client.refresh()),
      ]);
      expect(one).toBeInstanceOf(RequestTimeoutError);
      expect(two).toBeInstanceOf(RequestTimeoutError);
    } finally {
      await hung.close();
    }
  });

  it("gives up on a download that stops, not on one that is slow but steady", async () => {
    const listing = await (await fetch(`${t.url}/v1/models/flight-delay/tables`)).text();
    const { latest } = JSON.parse(listing) as { latest: { url: string } };
    const bytes = new Uint8Array(await (await fetch(`${t.url}${latest.url}`)).arrayBuffer());
    let stall = true;
    const server = await serve(
      createHttpServer(async (req, res) => {
        if (req.url?.endsWith("/tables")) {
          res.writeHead(200, { "content-type": "application/json" }).end(listing);
          return;
        }
        res.writeHead(200, { "content-length": String(bytes.length) });
        // Four parts 200 ms apart: 600 ms in all, never 300 ms without a byte.
        const part = Math.ceil(bytes.length / 4);
        for (let at = 0; at < bytes.length; at += part) {
          res.write(bytes.subarray(at, at + part));
          if (stall) return; // the rest never comes
          await new Promise((done) => setTimeout(done, 200));
        }
        res.end();
      }),
    );
    try {
      const client = new HybridClient({
        baseUrl: server.url,
        model: "flight-delay",
        timeoutMs: 300,
      });
      const stalled = await within(5_000, client.refresh());
      expect(stalled).toBeInstanceOf(RequestTimeoutError);
      expect(String(stalled)).toMatch(/downloading the table/);
      expect(client.table).toBeUndefined();
      stall = false;
      expect(await within(5_000, client.refresh())).toBe("full");
    } finally {
      await server.close();
    }
  });

  it("shares one request among concurrent lookups of the same input, and only while it runs", async () => {
    const client = new HybridClient({ baseUrl: t.url, model: "flight-delay" });
    const input = { origin: "ABQ", destination: "ORD", hour: 7, dayOfWeek: 2 };
    const answers = await Promise.all([1, 2, 3].map(() => client.predict(input)));
    expect(client.requests.predict).toBe(1);
    for (const answer of answers) expect(answer).toEqual(answers[0]);
    expect(await client.refresh()).toBe("full");
    const other = { ...input, hour: 8 };
    await Promise.all([client.predict(other), client.predict({ ...other, hour: "8" })]);
    expect(client.requests.predict).toBe(2);

    // A failure is shared too, but not kept: asked again, the client asks again.
    const waitless = new HybridClient({ baseUrl: t.url, model: "flight-delay", wait: 0 });
    const fresh = { ...input, hour: 9 };
    const [one, two] = await Promise.allSettled([waitless.predict(fresh), waitless.predict(fresh)]);
    expect(one).toMatchObject({ reason: expect.any(PendingAnswerError) });
    expect(two).toMatchObject({ reason: expect.any(PendingAnswerError) });
    expect(waitless.requests.predict).toBe(1);
    await waitless.predict(fresh).catch(() => undefined);
    expect(waitless.requests.predict).toBe(2);
  });
});
