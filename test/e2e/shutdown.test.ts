/** SIGTERM under load: the API stops accepting, finishes every in-flight request, exits 0. */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { type AddressInfo, createServer } from "node:net";
import { join } from "node:path";
import { Redis } from "ioredis";
import { describe, expect, inject, it } from "vitest";
import { Precompute } from "../../precompute/job.ts";
import { Keys } from "../../src/cache/keys.ts";
import { loadConfig } from "../../src/config.ts";
import { queuePrefix } from "../../src/live/jobs.ts";
import { startRedisServer } from "../../src/redis/embedded.ts";
import { loadRegistry } from "../../src/service.ts";
import { uniquePrefix } from "../helpers/service.ts";

/** An entry point as its own process, with a fresh data folder (the checkout's may hold tables). */
function spawnEntry(script: string, env: Record<string, string>): ChildProcess {
  return spawn(process.execPath, ["--import", "tsx", `src/main/${script}`], {
    env: {
      ...process.env,
      LOG_LEVEL: "info",
      LOG_FORMAT: "json",
      PORT: "0",
      PREDCACHE_DATA_DIR: mkdtempSync(join(inject("scratchDir"), "data-")),
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
}

/** The API as its own process, and the URL it listens on once it does. */
function startApi(env: Record<string, string>): { child: ChildProcess; url: Promise<string> } {
  const child = spawnEntry("serve.ts", env);
  child.stderr?.pipe(process.stderr);
  const url = new Promise<string>((resolve, reject) => {
    let buffered = "";
    child.stdout?.on("data", (chunk) => {
      buffered += chunk;
      const found = /"url":"(http:\/\/[^"]+)"/.exec(buffered);
      if (found) resolve(found[1] as string);
    });
    child.once("exit", (code) => reject(new Error(`API exited early (${code})`)));
  });
  return { child, url };
}

describe("graceful shutdown", () => {
  it("completes every in-flight request after SIGTERM, then exits 0", async () => {
    const { child, url: listening } = startApi({
      REDIS_URL: inject("redisUrl"),
      PREDCACHE_PREFIX: uniquePrefix("shutdown"),
    });
    const url = await listening;
    const exited = new Promise<number | null>((done) => child.once("exit", (code) => done(code)));
    // 40 distinct misses with no live worker: each waits its full second, then answers 202.
    const inFlight = Array.from({ length: 40 }, (_, i) =>
      fetch(
        `${url}/v1/models/flight-delay/predict?origin=ATL&destination=BOS&hour=${i % 24}&dayOfWeek=${1 + (i % 7)}&wait=1000`,
      ).then(async (r) => ({ status: r.status, body: await r.json() })),
    );
    await new Promise((r) => setTimeout(r, 300));
    const signalled = Date.now();
    child.kill("SIGTERM");
    const answers = await Promise.all(inFlight);
    expect(answers.map((a) => a.status)).toEqual(Array(40).fill(202));
    for (const a of answers) expect(a.body.job.url).toMatch(/^\/v1\/jobs\//);
    // Once the last request is answered the listener is gone: no new work is taken.
    await expect(fetch(`${url}/healthz`)).rejects.toThrow();
    expect(await exited).toBe(0);
    console.log(
      `SIGTERM: 40 in-flight requests answered, exit 0 after ${Date.now() - signalled} ms`,
    );
  });

  it("answers lookups still waiting on the live model with 202 at once, however long their wait", async () => {
    const { child, url: listening } = startApi({
      REDIS_URL: inject("redisUrl"),
      PREDCACHE_PREFIX: uniquePrefix("shutdown-wait"),
      PREDCACHE_WAIT_MAX_MS: "30000",
    });
    const url = await listening;
    const exited = new Promise<number | null>((done) => child.once("exit", (code) => done(code)));
    // No live worker: each would wait its 20 s, past the 10 s the shutdown allows itself.
    const waiting = Array.from({ length: 5 }, (_, i) =>
      fetch(
        `${url}/v1/models/flight-delay/predict?origin=LAS&destination=MSP&hour=${i}&dayOfWeek=3&wait=20000`,
      ).then(async (r) => ({ status: r.status, body: await r.json() })),
    );
    await new Promise((r) => setTimeout(r, 500));
    const signalled = Date.now();
    child.kill("SIGTERM");
    const answers = await Promise.all(waiting);
    const answeredAfter = Date.now() - signalled;
    expect(answers.map((a) => a.status)).toEqual(Array(5).fill(202));
    for (const a of answers) expect(a.body.job.url).toMatch(/^\/v1\/jobs\//);
    expect(answeredAfter).toBeLessThan(5_000);
    expect(await exited).toBe(0);
    console.log(`SIGTERM: 5 lookups waiting 20 s answered 202 after ${answeredAfter} ms, exit 0`);
  });

  it("takes a Ctrl-C that reaches it twice at once (terminal and npm) as one", async () => {
    const { child, url: listening } = startApi({
      REDIS_URL: inject("redisUrl"),
      PREDCACHE_PREFIX: uniquePrefix("ctrl-c"),
    });
    const url = await listening;
    const exited = new Promise<number | null>((done) => child.once("exit", (code) => done(code)));
    // A miss waiting its second (no live worker): the shutdown has something to wait for.
    const waiting = fetch(
      `${url}/v1/models/flight-delay/predict?origin=ATL&destination=DEN&hour=3&dayOfWeek=2&wait=1000`,
    );
    await new Promise((r) => setTimeout(r, 200));
    child.kill("SIGINT");
    // Delivered apart, as npm's forwarded copy follows the terminal's by a moment.
    await new Promise((r) => setTimeout(r, 30));
    child.kill("SIGINT");
    expect((await waiting).status).toBe(202);
    expect(await exited).toBe(0);
  });

  it("stops a worker within the bound, exit 0, when Redis is gone", async () => {
    const redis = await startRedisServer();
    const child = spawnEntry("work.ts", {
      REDIS_URL: redis.url,
      PREDCACHE_PREFIX: uniquePrefix("worker-stop"),
      PREDCACHE_METRICS_PORT: "0",
    });
    child.stderr?.pipe(process.stderr);
    try {
      let out = "";
      const exited = new Promise<number | null>((done) => child.once("exit", (code) => done(code)));
      await new Promise<void>((ready, fail) => {
        child.stdout?.on("data", (chunk) => {
          out += chunk;
          if (out.includes("workers ready")) ready();
        });
        child.once("exit", (code) => fail(new Error(`worker exited early (${code})`)));
      });
      await redis.stop();
      await new Promise((r) => setTimeout(r, 500));
      const signalled = Date.now();
      child.kill("SIGTERM");
      // Not the 10 s bound's "shutdown took too long" and exit 1.
      expect(await exited).toBe(0);
      expect(out).not.toMatch(/took too long/);
      console.log(`worker without Redis: exit 0 ${Date.now() - signalled} ms after SIGTERM`);
    } finally {
      child.kill("SIGKILL");
      await redis.stop().catch(() => {});
    }
  }, 30_000);

  it("says why it could not start in one fatal log line, and exits 1", async () => {
    const taken = createServer();
    await new Promise<void>((done) => taken.listen(0, "127.0.0.1", done));
    const { port } = taken.address() as AddressInfo;
    try {
      const child = spawnEntry("serve.ts", {
        HOST: "127.0.0.1",
        PORT: String(port),
        REDIS_URL: inject("redisUrl"),
        PREDCACHE_PREFIX: uniquePrefix("no-start"),
      });
      let out = "";
      let err = "";
      child.stdout?.on("data", (chunk) => {
        out += chunk;
      });
      child.stderr?.on("data", (chunk) => {
        err += chunk;
      });
      const code = await new Promise<number | null>((done) => child.once("exit", done));
      expect(code).toBe(1);
      const fatal = out
        .split("\n")
        .filter(Boolean)
        .map((line) => JSON.parse(line))
        .find((line) => line.level === 60);
      expect(fatal?.msg).toMatch(/could not start: .*EADDRINUSE.*: set PORT to a free port/);
      expect(err).not.toMatch(/^\s+at /m); // no raw stack trace
    } finally {
      taken.close();
    }
  }, 30_000);
});

describe("a second signal", () => {
  it("exits 1 at once even while a precompute run infers (not an abort)", async () => {
    const prefix = uniquePrefix("second-signal");
    const redis = new Redis(inject("redisUrl"));
    const registry = await loadRegistry(loadConfig({}));
    const precompute = new Precompute(redis, new Keys(prefix), registry, {
      queuePrefix: queuePrefix(prefix),
    });
    const child = spawnEntry("work.ts", {
      REDIS_URL: inject("redisUrl"),
      PREDCACHE_PREFIX: prefix,
      PREDCACHE_WORKERS: "precompute",
      PREDCACHE_METRICS_PORT: "0",
    });
    let err = "";
    child.stderr?.on("data", (chunk) => {
      err += chunk;
    });
    try {
      const exited = new Promise<number | null>((done) => child.once("exit", (code) => done(code)));
      const { runId } = await precompute.enqueue({
        model: "flight-delay",
        source: {
          kind: "grid",
          axes: { origin: "all", destination: "all", hour: "all", dayOfWeek: [3] },
        },
        chunkSize: 100_000,
      });
      // Rows are being inferred: the run has begun writing.
      for (let i = 0; i < 300; i++) {
        const status = await precompute.status(runId);
        if ((status?.written ?? 0) > 0) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      child.kill("SIGTERM");
      await new Promise((r) => setTimeout(r, 1_300)); // past the pause a terminal's echo has
      child.kill("SIGTERM");
      expect(await exited).toBe(1);
      expect(err).not.toMatch(/terminate called|Napi::Error/);
    } finally {
      child.kill("SIGKILL");
      await precompute.close();
      await registry.close();
      redis.disconnect();
    }
  }, 60_000);
});
