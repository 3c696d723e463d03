/**
 * The worker-only process's probe server: /readyz says not ready unless every worker is,
 * and a port another process answers on refuses the start.
 */
import { connect, createServer } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { parseAdminTokens } from "../../src/admin/tokens.ts";
import { createLogger } from "../../src/log.ts";
import { type ReadinessCheck, serveMetrics } from "../../src/observability/metrics-server.ts";

let stop: (() => Promise<void>) | undefined;
afterEach(async () => {
  await stop?.();
  stop = undefined;
});

function freePort(): Promise<number> {
  return new Promise((done) => {
    const probe = createServer().listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => done(port));
    });
  });
}

async function readyz(checks: ReadinessCheck[]) {
  const port = await freePort();
  stop = await serveMetrics("127.0.0.1", port, createLogger("silent"), checks);
  const r = await fetch(`http://127.0.0.1:${port}/readyz`);
  return { status: r.status, body: await r.json() };
}

const up: ReadinessCheck = async () => ({ running: true, redis: true });

describe("worker /readyz", () => {
  it("is 200 when every worker runs and reaches Redis", async () => {
    const r = await readyz([up, up]);
    expect(r).toEqual({
      status: 200,
      body: { status: "ready", workers: [up, up].map(() => ({ running: true, redis: true })) },
    });
  });

  it("is 503 when a worker does not run, does not reach Redis, or cannot tell", async () => {
    const cases: ReadinessCheck[] = [
      async () => ({ running: false, redis: true }),
      async () => ({ running: true, redis: false }),
      async () => ({ running: true, redis: true, paused: true }),
      async () => {
        throw new Error("closed");
      },
    ];
    for (const check of cases) {
      const r = await readyz([up, check]);
      expect(r.status).toBe(503);
      expect(r.body.status).toBe("not_ready");
      expect(r.body.workers[0]).toEqual({ running: true, redis: true });
      await stop?.();
      stop = undefined;
    }
  });

  it("is 503 with no worker to speak for", async () => {
    expect((await readyz([])).status).toBe(503);
  });

  it("refuses to start on a port another process answers on", async () => {
    const port = await freePort();
    stop = await serveMetrics("127.0.0.1", port, createLogger("silent"), [up]);
    await expect(serveMetrics("127.0.0.1", port, createLogger("silent"), [up])).rejects.toThrow(
      /cannot serve .* \(EADDRINUSE\): set PREDCACHE_METRICS_PORT/,
    );
  });
});

describe("worker /metrics with PREDCACHE_METRICS_TOKENS", () => {
  const SECRET = "scraper-secret-0123456789";

  it("asks for a token (401), refuses a wrong one (403), answers the right one; probes stay open", async () => {
    const port = await freePort();
    const tokens = parseAdminTokens(`prometheus:${SECRET}`, "metrics token");
    stop = await serveMetrics("127.0.0.1", port, createLogger("silent"), [up], tokens);
    const scrape = (authorization?: string) =>
      fetch(`http://127.0.0.1:${port}/metrics`, {
        headers: authorization ? { authorization } : {},
      });

    const none = await scrape();
    expect(none.status).toBe(401);
    expect(none.headers.get("www-authenticate")).toBe('Bearer realm="predcache-metrics"');
    expect(await none.json()).toEqual({
      error: { code: "unauthorized", message: expect.stringContaining("Bearer") },
    });
    for (const wrong of ["Bearer not-the-secret-at-all", `Basic ${btoa(`x:${SECRET}`)}`]) {
      const refused = await scrape(wrong);
      expect(refused.status, wrong).toBe(wrong.startsWith("Bearer") ? 403 : 401);
      expect((await refused.json()).error.code).not.toBe(undefined);
    }
    const ok = await scrape(`Bearer ${SECRET}`);
    expect(ok.status).toBe(200);
    expect(await ok.text()).toMatch(/^# TYPE /m);
    expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${port}/readyz`)).status).toBe(200);
  });
});

describe("worker probe server refusals", () => {
  it("answers other paths 404, other methods 405 and CONNECT 405, as JSON; a query is ignored", async () => {
    const port = await freePort();
    stop = await serveMetrics("127.0.0.1", port, createLogger("silent"), [up]);
    const base = `http://127.0.0.1:${port}`;

    const missing = await fetch(`${base}/nope`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toEqual({
      error: { code: "not_found", message: expect.stringContaining("/metrics") },
    });
    const posted = await fetch(`${base}/metrics`, { method: "POST", body: "x" });
    expect(posted.status).toBe(405);
    expect(posted.headers.get("allow")).toBe("GET, HEAD");
    expect((await posted.json()).error.code).toBe("method_not_allowed");
    expect((await fetch(`${base}/metrics?name[]=x`)).status).toBe(200);
    expect(await (await fetch(`${base}/healthz?probe=1`)).json()).toEqual({ status: "ok" });

    const answer = await new Promise<string>((done, fail) => {
      const socket = connect(port, "127.0.0.1", () =>
        socket.write("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
      );
      let text = "";
      socket.on("data", (chunk) => {
        text += chunk.toString();
      });
      socket.on("end", () => done(text));
      socket.on("error", fail);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 405 /);
    expect(answer).toContain('"code":"method_not_allowed"');
  });
});
