/** The README's quick start as a user runs it: `npm start` with no REDIS_URL. */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { Redis } from "ioredis";
import { afterEach, describe, expect, it } from "vitest";

interface LogLine {
  msg: string;
  url?: string;
  redisPid?: number;
  redis?: string;
  state?: string;
  pid?: number;
}

function startNpm(env: Record<string, string>): {
  child: ChildProcess;
  lines: LogLine[];
  waitFor(pattern: RegExp): Promise<LogLine>;
} {
  const { REDIS_URL: _, ...inherited } = process.env;
  const child = spawn("npm", ["start", "--silent"], {
    env: { ...inherited, PORT: "0", LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: LogLine[] = [];
  const waiters: { pattern: RegExp; done: (l: LogLine) => void }[] = [];
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (text) => {
    let line: LogLine;
    try {
      line = JSON.parse(text);
    } catch {
      line = { msg: text };
    }
    lines.push(line);
    for (const w of waiters.filter((w) => w.pattern.test(line.msg))) w.done(line);
  });
  return {
    child,
    lines,
    waitFor: (pattern) =>
      new Promise((done, fail) => {
        const found = lines.find((l) => pattern.test(l.msg));
        if (found) return done(found);
        const timer = setTimeout(
          () =>
            fail(new Error(`no log line ${pattern} in:\n${lines.map((l) => l.msg).join("\n")}`)),
          30_000,
        );
        waiters.push({
          pattern,
          done: (l) => {
            clearTimeout(timer);
            done(l);
          },
        });
      }),
  };
}

/**
 * The exit code (or the signal npm passes on), once every process holding its output —
 * the script npm ran included — has exited.
 */
function exited(child: ChildProcess): Promise<number | string | null> {
  return new Promise((done) => child.once("close", (code, signal) => done(code ?? signal)));
}

/** Keys in a Redis, asked on a connection of its own. */
async function dbsize(url: string): Promise<number> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    return await redis.dbsize();
  } finally {
    redis.disconnect();
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

let dataDir: string | undefined;
afterEach(async () => {
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

describe("npm start", () => {
  it("runs its own redis-server, serves the demo model, and leaves no redis-server behind on SIGTERM", async () => {
    dataDir = await mkdtemp(join(tmpdir(), "predcache-start-"));
    const app = startNpm({ PREDCACHE_DATA_DIR: dataDir });
    const redisLine = await app.waitFor(/embedded redis-server/);
    const listening = await app.waitFor(/listening on/);
    expect(redisLine.redisPid).toBeGreaterThan(0);
    expect(alive(redisLine.redisPid as number)).toBe(true);
    const health = await fetch(`${listening.url}/healthz`);
    expect(health.status).toBe(200);
    const models = (await (await fetch(`${listening.url}/v1/models`)).json()) as {
      models: { name: string; activeVersion: string }[];
    };
    expect(models.models.map((m) => m.name)).toEqual(["flight-delay"]);
    expect(models.models[0]?.activeVersion).toMatch(/^[0-9a-f]{12}$/);

    // First start: the common inputs get precomputed, so a common route is a cache hit
    // (from the resident table once it is loaded, from Redis until then).
    const seeded = await app.waitFor(/seed precompute finished/);
    expect(seeded).toMatchObject({ state: "completed" });
    const hit = await fetch(
      `${listening.url}/v1/models/flight-delay/predict?origin=LAS&destination=LAX&hour=16&dayOfWeek=6`,
    );
    expect(((await hit.json()) as { source: string }).source).toMatch(/^(table|redis)$/);

    app.child.kill("SIGTERM");
    expect([0, "SIGTERM"]).toContain(await exited(app.child));
    expect(app.lines.map((l) => l.msg)).toContain("stopped"); // the clean shutdown ran to its end
    const deadline = Date.now() + 5_000;
    while (alive(redisLine.redisPid as number) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 50));
    expect(alive(redisLine.redisPid as number)).toBe(false);
  });

  it("starts its redis-server again when it dies, with its data, and serves again", async () => {
    dataDir = await mkdtemp(join(tmpdir(), "predcache-start-"));
    const app = startNpm({ PREDCACHE_DATA_DIR: dataDir, PREDCACHE_SEED_ON_START: "false" });
    const redisLine = await app.waitFor(/embedded redis-server/);
    const listening = await app.waitFor(/listening on/);
    const url = `${listening.url}/v1/models/flight-delay/predict?origin=SEA&destination=BOS&hour=9&dayOfWeek=2`;
    const live = (await (await fetch(`${url}&wait=5000`)).json()) as { source: string };
    expect(live.source).toBe("live");
    await new Promise((r) => setTimeout(r, 1_500)); // the append-only file syncs every second
    const keysBefore = await dbsize(redisLine.redis as string);
    expect(keysBefore).toBeGreaterThan(0);
    process.kill(redisLine.redisPid as number, "SIGKILL");
    const again = await app.waitFor(/redis-server started again/);
    expect(again.redisPid).toBeGreaterThan(0);
    expect(again.redisPid).not.toBe(redisLine.redisPid);
    expect(app.lines.some((l) => /redis-server exited/.test(l.msg))).toBe(true);
    // The service reconnects by itself, and the answer written before is still there.
    const ready = async () => (await fetch(`${listening.url}/readyz`)).status === 200;
    for (let i = 0; i < 100 && !(await ready()); i++) await new Promise((r) => setTimeout(r, 100));
    expect(await ready()).toBe(true);
    expect(await dbsize(redisLine.redis as string)).toBeGreaterThanOrEqual(keysBefore);
    const stored = (await (await fetch(url)).json()) as { source: string };
    expect(stored.source).toBe("memory");

    app.child.kill("SIGTERM");
    expect([0, "SIGTERM"]).toContain(await exited(app.child));
    const deadline = Date.now() + 5_000;
    while (alive(again.redisPid as number) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 50));
    expect(alive(again.redisPid as number)).toBe(false);
  });

  it("leaves no redis-server behind when the service is killed with SIGKILL", async () => {
    dataDir = await mkdtemp(join(tmpdir(), "predcache-start-"));
    const app = startNpm({ PREDCACHE_DATA_DIR: dataDir, PREDCACHE_SEED_ON_START: "false" });
    const redisLine = await app.waitFor(/embedded redis-server/);
    const listening = await app.waitFor(/listening on/);
    const redisPid = redisLine.redisPid as number;
    expect(listening.pid).toBeGreaterThan(0);
    expect(alive(redisPid)).toBe(true);

    // No exit handler runs on SIGKILL: only the watchdog can stop the server.
    const npmExited = new Promise((done) => app.child.once("exit", done));
    process.kill(listening.pid as number, "SIGKILL");
    await npmExited; // not "close": a server left behind would hold npm's stderr open
    const deadline = Date.now() + 10_000;
    while (alive(redisPid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const leftBehind = alive(redisPid);
    if (leftBehind) process.kill(redisPid, "SIGKILL"); // not this test's orphan to keep
    expect(leftBehind).toBe(false);
  });

  it("fails with a message naming the fix when redis-server is not installed", async () => {
    dataDir = await mkdtemp(join(tmpdir(), "predcache-start-"));
    const app = startNpm({
      PREDCACHE_DATA_DIR: dataDir,
      PREDCACHE_REDIS_SERVER: "/nonexistent/redis-server",
    });
    const code = await exited(app.child);
    expect(code).not.toBe(0);
    const messages = app.lines.map((l) => l.msg).join("\n");
    expect(messages).toMatch(/not found on PATH/);
    expect(messages).toMatch(/apt-get install redis-server/);
    expect(messages).toMatch(/REDIS_URL/);
  });

  it("refuses a bad setting with one clear line and exit 2, every entry point", async () => {
    for (const entry of ["src/main/start.ts", "src/main/serve.ts", "src/main/work.ts"]) {
      const { code, stderr } = await new Promise<{ code: number | null; stderr: string }>(
        (done) => {
          execFile(
            process.execPath,
            ["--import", "tsx", entry],
            { env: { ...process.env, PORT: "abc", PREDCACHE_WAIT_MAX_MS: "-5" } },
            (error, _stdout, stderr) =>
              done({ code: error ? Number((error as { code?: number }).code) : 0, stderr }),
          );
        },
      );
      expect(code, entry).toBe(2);
      expect(stderr).toMatch(/^predcache: invalid configuration:/);
      expect(stderr).toMatch(/PORT: .*"abc"/);
      expect(stderr).toMatch(/PREDCACHE_WAIT_MAX_MS/);
      expect(stderr).not.toMatch(/\n\s+at /); // no stack trace
    }
  });
});
