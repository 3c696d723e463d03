/**
 * The load generator, closed-loop or paced (live misses, and whatever needs per-request
 * latencies finer than autocannon's whole milliseconds), forked as its own process
 * (autocannon runs in its own thread for the same reason) so its work does not compete
 * with the service's event loop. For each job received over IPC it sends every query
 * once and answers with one outcome per request and the time the whole job took,
 * measured here so process start-up and IPC are not counted. It exits when the parent
 * disconnects.
 *
 * node:http with a keep-alive agent, not fetch(): measured on the live-miss bench, fetch
 * cost ~700 µs of CPU per request, about as much as the service's whole miss path, on a
 * machine whose cores the service, Redis and this generator share; node:http costs a
 * fraction of that, so the figures measure the service rather than the generator.
 */
import { Agent, request } from "node:http";
import { performance } from "node:perf_hooks";

export interface LiveClientJob {
  /** The predict URL, without a query. */
  url: string;
  /** One query string per request. */
  queries: string[];
  /** Request headers, per request (cycled when fewer than the queries). */
  headers?: Record<string, string>[];
  /** Closed loop: this many requests outstanding; paced: at most this many. */
  inFlight: number;
  /**
   * Paced (open loop): request i is due `i / ratePerSec` seconds after the start, whether
   * or not earlier ones have been answered, and its latency counts from when it was due
   * (so a stalled server is not hidden by the generator waiting on it). Without it, each
   * of `inFlight` lanes sends its next request when its last one is answered.
   */
  ratePerSec?: number;
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

interface Answer {
  status: number;
  body: string;
}

function get(agent: Agent, url: URL, headers: Record<string, string> | undefined): Promise<Answer> {
  return new Promise((done, fail) => {
    const req = request(url, { agent, headers }, (response) => {
      const chunks: Buffer[] = [];
      response.on("data", (chunk: Buffer) => chunks.push(chunk));
      response.on("end", () =>
        done({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString() }),
      );
      response.on("error", fail);
    });
    req.on("error", fail);
    req.end();
  });
}

function sourceOf(body: string): string | undefined {
  try {
    const parsed: unknown = JSON.parse(body);
    const found =
      typeof parsed === "object" && parsed !== null && "source" in parsed && parsed.source;
    return typeof found === "string" ? found : undefined;
  } catch {
    return undefined;
  }
}

async function run(job: LiveClientJob): Promise<LiveClientResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: job.inFlight });
  const started = performance.now();
  const outcomes = job.ratePerSec ? await paced(job, agent) : await closedLoop(job, agent);
  const seconds = (performance.now() - started) / 1000;
  agent.destroy();
  return { outcomes, seconds };
}

/** Sends query `i`; its latency counts from `since` (performance.now()). */
async function send(
  agent: Agent,
  { url, queries, headers }: LiveClientJob,
  i: number,
  since: number,
): Promise<LiveClientOutcome> {
  const answer = await get(
    agent,
    new URL(`${url}?${queries[i]}`),
    headers?.length ? headers[i % headers.length] : undefined,
  ).catch(() => ({ status: 0, body: "" }));
  const source = sourceOf(answer.body);
  return {
    live: answer.status === 200 && source === "live",
    source,
    status: answer.status,
    ms: performance.now() - since,
  };
}

async function closedLoop(job: LiveClientJob, agent: Agent): Promise<LiveClientOutcome[]> {
  const outcomes: LiveClientOutcome[] = [];
  let next = 0;
  const lane = async () => {
    while (next < job.queries.length) {
      const i = next++;
      outcomes.push(await send(agent, job, i, performance.now()));
    }
  };
  await Promise.all(Array.from({ length: job.inFlight }, lane));
  return outcomes;
}

async function paced(job: LiveClientJob, agent: Agent): Promise<LiveClientOutcome[]> {
  if (!(job.inFlight >= 1)) throw new Error("paced load needs inFlight ≥ 1");
  const interval = 1000 / (job.ratePerSec ?? 1);
  const start = performance.now();
  const pending = new Set<Promise<LiveClientOutcome>>();
  const outcomes: Promise<LiveClientOutcome>[] = [];
  for (let i = 0; i < job.queries.length; i++) {
    const due = start + i * interval;
    // Timers fire at ~1 ms granularity (early or late): requests due within the same
    // tick leave together, and each counts from when it was due or, if it leaves before
    // that, from when it leaves. Waiting for a free slot counts: that is the service.
    const early = due - performance.now();
    if (early >= 1) await new Promise((r) => setTimeout(r, early));
    const since = Math.max(due, performance.now());
    while (pending.size >= job.inFlight) await Promise.race(pending);
    const outcome = send(agent, job, i, since);
    pending.add(outcome);
    void outcome.finally(() => pending.delete(outcome));
    outcomes.push(outcome);
  }
  return Promise.all(outcomes);
}

process.on("message", (message) => {
  void run(message as LiveClientJob).then((result) => process.send?.(result));
});
