/**
 * /metrics for processes without the API (worker-only), and /healthz for a container's
 * healthcheck: a bare node:http listener. A port already taken is logged and skipped —
 * metrics must never stop a worker.
 */
import { createServer } from "node:http";
import type { Logger } from "../log.ts";
import { processMetrics } from "./metrics.ts";

export function serveMetrics(host: string, port: number, log: Logger): () => Promise<void> {
  if (port === 0) return async () => {};
  const metrics = processMetrics();
  const server = createServer((req, res) => {
    if (req.url === "/healthz") {
      res.writeHead(200, { "content-type": "application/json" }).end('{"status":"ok"}');
      return;
    }
    if (req.url !== "/metrics") {
      res.writeHead(404).end();
      return;
    }
    metrics.text().then(
      (text) => res.writeHead(200, { "content-type": metrics.contentType }).end(text),
      () => res.writeHead(500).end(),
    );
  });
  server.on("error", (error) =>
    log.error(
      { err: error.message, port },
      "worker metrics not served (set PREDCACHE_METRICS_PORT)",
    ),
  );
  server.listen(port, host, () =>
    log.info({ port }, `worker metrics on http://${host}:${port}/metrics`),
  );
  return () => new Promise((done) => server.close(() => done()));
}
