/**
 * The live-miss load generator, forked as its own process (autocannon runs in its own
 * thread for the same reason) so its fetch work does not compete with the service's event
 * loop. For each job received over IPC it sends every query once, `inFlight` at a time, and
 * answers with one outcome per request and the time the whole job took, measured here so
 * process start-up and IPC are not counted. It exits when the parent disconnects.
 */
import { performance } from "node:perf_hooks";

export interface LiveClientJob {
  /** The predict URL, without a query. */
  url: string;
  /** One query string per request. */
  queries: string[];
  inFlight: number;
}

export interface LiveClientOutcome {
  /** A 200 whose source is "live": answered by the model, not by a cache nor a 202. */
  live: boolean;
  status: number;
  ms: number;
}

export interface LiveClientResult {
  outcomes: LiveClientOutcome[];
  seconds: number;
}

async function run({ url, queries, inFlight }: LiveClientJob): Promise<LiveClientResult> {
  const outcomes: LiveClientOutcome[] = [];
  let next = 0;
  const lane = async () => {
    while (next < queries.length) {
      const query = queries[next++];
      const started = performance.now();
      const response = await fetch(`${url}?${query}`);
      const body: unknown = await response.json().catch(() => undefined);
      const source = typeof body === "object" && body !== null && "source" in body && body.source;
      outcomes.push({
        live: response.status === 200 && source === "live",
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
