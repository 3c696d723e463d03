/**
 * /metrics for processes without the API (worker-only), /healthz for a container's
 * healthcheck (the process answers) and /readyz (its workers take jobs and reach Redis):
 * a bare node:http listener. A port already taken fails the start (serveMetrics
 * rejects): health checks sent there would be answered by another process.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import type { AdminToken } from "../admin/tokens.ts";
import { refuseConnect } from "../api/connect-refusal.ts";
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

/** A JSON error, as the API's: { error: { code, message } }. */
function refuse(
  res: ServerResponse,
  status: number,
  code: string,
  message: string,
  headers: Record<string, string> = {},
): void {
  json(res, status, { error: { code, message } }, headers);
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
    // The path only: a scraper or probe adding a query string is still answered.
    const url = req.url ?? "/";
    const query = url.indexOf("?");
    const path = query === -1 ? url : url.slice(0, query);
    if (path !== "/healthz" && path !== "/readyz" && path !== "/metrics") {
      refuse(
        res,
        404,
        "not_found",
        `${path.slice(0, 200)} is not served here (/metrics, /healthz, /readyz)`,
      );
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      refuse(res, 405, "method_not_allowed", `${path} answers GET and HEAD`, {
        allow: "GET, HEAD",
      });
      return;
    }
    if (path === "/healthz") {
      json(res, 200, { status: "ok" });
      return;
    }
    if (path === "/readyz") {
      void readyz(res, readiness);
      return;
    }
    const refused = refuseScrape(tokens, req.headers.authorization);
    if (refused) {
      const { code, message } = refused.error;
      refuse(res, refused.error.status, code, message, { "www-authenticate": refused.challenge });
      return;
    }
    metrics.text().then(
      (text) => res.writeHead(200, { "content-type": metrics.contentType }).end(text),
      (error: unknown) => {
        log.error({ err: error }, "metrics could not be rendered");
        refuse(res, 500, "internal", "metrics could not be rendered");
      },
    );
  });
  // CONNECT (a proxy's method): node would close the connection without a word.
  server.on("connect", (_req: IncomingMessage, socket: Duplex) => refuseConnect(socket));
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
