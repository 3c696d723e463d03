/**
 * /metrics for processes without the API (worker-only), /healthz for a container's
 * healthcheck (the process answers) and /readyz (its workers take jobs and reach Redis):
 * a bare node:http listener. A port already taken fails the start (serveMetrics
 * rejects): health checks sent there would be answered by another process.
 */
import { createServer, type ServerResponse } from "node:http";
import type { AdminToken } from "../admin/tokens.ts";
import type { Logger } from "../log.ts";
import { processMetrics } from "./metrics.ts";
import { refuseScrape } from "./metrics-guard.ts";

/** One worker's state, as /readyz tells it (paused: a queue it takes jobs from is). */
export interface Readiness {
  running: boolean;
  redis: boolean;
  paused?: boolean;
}

/** What /readyz asks of each worker of the process. */
export type ReadinessCheck = () => Promise<Readiness>;

function json(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  res
    .writeHead(status, {
      "content-type": "application/json",
      "cache-control": "no-store",
      ...headers,
    })
    .end(JSON.stringify(body));
}

/**
 * 200 when every worker runs, reaches Redis and has no queue paused (it takes jobs), else
 * 503; each worker's state either way.
 */
async function readyz(res: ServerResponse, checks: readonly ReadinessCheck[]): Promise<void> {
  const workers = await Promise.all(
    checks.map((check) => check().catch((): Readiness => ({ running: false, redis: false }))),
  );
  const ready = workers.length > 0 && workers.every((w) => w.running && w.redis && !w.paused);
  json(res, ready ? 200 : 503, { status: ready ? "ready" : "not_ready", workers });
}

export async function serveMetrics(
  host: string,
  port: number,
  log: Logger,
  readiness: readonly ReadinessCheck[] = [],
  /** Tokens a /metrics scrape must send (/healthz and /readyz stay open); none: open. */
  tokens: readonly AdminToken[] = [],
): Promise<() => Promise<void>> {
  if (port === 0) return async () => {};
  const metrics = processMetrics();
  const server = createServer((req, res) => {
    if (req.url === "/healthz") {
      res.writeHead(200, { "content-type": "application/json" }).end('{"status":"ok"}');
      return;
    }
    if (req.url === "/readyz") {
      void readyz(res, readiness);
      return;
    }
    if (req.url !== "/metrics") {
      res.writeHead(404).end();
      return;
    }
    const refused = refuseScrape(tokens, req.headers.authorization);
    if (refused) {
      const { code, message } = refused.error;
      json(
        res,
        refused.error.status,
        { error: { code, message } },
        {
          "www-authenticate": refused.challenge,
        },
      );
      return;
    }
    metrics.text().then(
      (text) => res.writeHead(200, { "content-type": metrics.contentType }).end(text),
      () => res.writeHead(500).end(),
    );
  });
  await new Promise<void>((done, fail) => {
    server.once("error", (error: NodeJS.ErrnoException) =>
      fail(
        new Error(
          `cannot serve /metrics, /healthz and /readyz on ${host}:${port} (${error.code ?? error.message}): set PREDCACHE_METRICS_PORT to a free port, or 0 for none`,
        ),
      ),
    );
    server.listen(port, host, () => done());
  });
  server.on("error", (error) => log.error({ err: error.message, port }, "worker metrics server"));
  log.info({ port }, `worker metrics on http://${host}:${port}/metrics`);
  return () => new Promise((done) => server.close(() => done()));
}
