/**
 * The closed-loop load generator (live misses, and whatever needs per-request latencies
 * finer than autocannon's whole milliseconds), forked as its own process (autocannon
 * runs in its own thread for the same reason) so its fetch work does not compete with
 * the service's event loop. For each job received over IPC it sends every query once, `inFlight` at a time, and
 * answers with one outcome per request and the time the whole job took, measured here so
 * process start-up and IPC are not counted. It exits when the parent disconnects.
 */
import { performance } from "node:perf_hooks";

export interface LiveClientJob {
  /** The predict URL, without a query. */
  url: string;
  /** One query string per request. */
  queries: string[];
  /** Request headers, per request (cycled when fewer than the queries). */
  headers?: Record<string, string>[];
  inFlight: number;
}

export interface LiveClientOutcome {
  /** A 200 whose source is "live": answered by the model, not by a cache nor a 202. */
  live: boolean;
  source: string | undefined;
  status: number;
  ms: number;
}

export interface LiveClientResult {
  outcomes: LiveClientOutcome[];
  seconds: number;
}

async function run({ url, queries, headers, inFlight }: LiveClientJob): Promise<LiveClientResult> {
  const outcomes: LiveClientOutcome[] = [];
  let next = 0;
  const lane = async () => {
    while (next < queries.length) {
      const i = next++;
      const started = performance.now();
      const response = await fetch(`${url}?${queries[i]}`, {
        ...(headers?.length ? { headers: headers[i % headers.length] } : {}),
      });
      const body: unknown = await response.json().catch(() => undefined);
      const found = typeof body === "object" && body !== null && "source" in body && body.source;
      const source = typeof found === "string" ? found : undefined;
      outcomes.push({
        live: response.status === 200 && source === "live",
        source,
        status: response.status,
        ms: performance.now() - started,
      });
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: inFlight }, lane));
  return { outcomes, seconds: (performance.now() - started) / 1000 };
}

process.on("message", (message) => {
  void run(message as LiveClientJob).then((result) => process.send?.(result));
});
