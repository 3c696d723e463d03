/**
 * The load generator, closed-loop or paced (live misses, and whatever needs per-request
 * latencies finer than autocannon's whole milliseconds), forked as its own process
 * (autocannon runs in its own thread for the same reason) so its work does not compete
 * with the service's event loop. For each job received over IPC it sends every query
 * once and answers with one outcome per request and the time the whole job took,
 * measured here so process start-up and IPC are not counted. It exits when the parent
 * disconnects.
 *
 * Plain keep-alive sockets, one request at a time each, not node:http's client nor fetch():
 * the service, Redis and this generator share the machine's cores, so what the generator
 * spends comes off the service. Measured per request (warm, 64 in flight): fetch ~700 µs,
 * node:http with a keep-alive agent ~100 µs (at 3,800 live answers/s, 40% of a core),
 * these sockets ~20 µs. The service answers with a Content-Length (JSON), which is all the
 * parsing here reads; any other answer is a failed request, not a guess.
 */
import { connect, type Socket } from "node:net";
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

const HEAD_END = Buffer.from("\r\n\r\n");
const CONTENT_LENGTH = /\r\ncontent-length:[ \t]*(\d+)/i;

/** A keep-alive connection carrying one request at a time. */
class Connection {
  private readonly socket: Socket;
  private received: Buffer = Buffer.alloc(0);
  private waiting: { done: (answer: Answer) => void; fail: (error: Error) => void } | undefined;
  closed = false;

  constructor(
    private readonly url: URL,
    private readonly host: string,
  ) {
    this.socket = connect(Number(url.port || 80), url.hostname);
    this.socket.setNoDelay(true);
    this.socket.on("data", (chunk: Buffer) => this.read(chunk));
    const end = (error?: Error) => {
      this.closed = true;
      const waiting = this.waiting;
      this.waiting = undefined;
      waiting?.fail(error ?? new Error("connection closed"));
    };
    this.socket.on("error", end);
    this.socket.on("close", () => end());
  }

  get(query: string, headers: Record<string, string> | undefined): Promise<Answer> {
    if (this.waiting) throw new Error("one request at a time");
    let head = `GET ${this.url.pathname}?${query} HTTP/1.1\r\nHost: ${this.host}\r\n`;
    if (headers)
      for (const [name, value] of Object.entries(headers)) head += `${name}: ${value}\r\n`;
    return new Promise((done, fail) => {
      this.waiting = { done, fail };
      this.socket.write(`${head}\r\n`);
    });
  }

  private read(chunk: Buffer): void {
    this.received = this.received.length ? Buffer.concat([this.received, chunk]) : chunk;
    const headEnd = this.received.indexOf(HEAD_END);
    if (headEnd < 0) return;
    const head = this.received.toString("latin1", 0, headEnd);
    const length = CONTENT_LENGTH.exec(head)?.[1];
    if (!head.startsWith("HTTP/1.1 ") || length === undefined) {
      this.socket.destroy(new Error(`unexpected answer: ${head.slice(0, 200)}`));
      return;
    }
    const bodyEnd = headEnd + HEAD_END.length + Number(length);
    if (this.received.length < bodyEnd) return;
    const body = this.received.toString("utf8", headEnd + HEAD_END.length, bodyEnd);
    this.received = this.received.subarray(bodyEnd);
    const waiting = this.waiting;
    this.waiting = undefined;
    waiting?.done({ status: Number(head.slice(9, 12)), body });
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Connections to one server, at most `size`, each lent to one request at a time. */
class Pool {
  private readonly idle: Connection[] = [];
  private readonly all = new Set<Connection>();
  private readonly url: URL;
  private readonly host: string;

  constructor(url: string) {
    this.url = new URL(url);
    this.host = this.url.host;
  }

  async get(query: string, headers: Record<string, string> | undefined): Promise<Answer> {
    let connection = this.idle.pop();
    while (connection?.closed) {
      this.all.delete(connection);
      connection = this.idle.pop();
    }
    if (!connection) {
      connection = new Connection(this.url, this.host);
      this.all.add(connection);
    }
    try {
      const answer = await connection.get(query, headers);
      this.idle.push(connection);
      return answer;
    } catch (error) {
      this.all.delete(connection);
      connection.close();
      throw error;
    }
  }

  close(): void {
    for (const connection of this.all) connection.close();
    this.all.clear();
    this.idle.length = 0;
  }
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
  const pool = new Pool(job.url);
  const started = performance.now();
  const outcomes = job.ratePerSec ? await paced(job, pool) : await closedLoop(job, pool);
  const seconds = (performance.now() - started) / 1000;
  pool.close();
  return { outcomes, seconds };
}

/** Sends query `i`; its latency counts from `since` (performance.now()). */
async function send(
  pool: Pool,
  { queries, headers }: LiveClientJob,
  i: number,
  since: number,
): Promise<LiveClientOutcome> {
  const answer = await pool
    .get(queries[i] as string, headers?.length ? headers[i % headers.length] : undefined)
    .catch(() => ({ status: 0, body: "" }));
  const source = sourceOf(answer.body);
  return {
    live: answer.status === 200 && source === "live",
    source,
    status: answer.status,
    ms: performance.now() - since,
  };
}

async function closedLoop(job: LiveClientJob, pool: Pool): Promise<LiveClientOutcome[]> {
  const outcomes: LiveClientOutcome[] = [];
  let next = 0;
  const lane = async () => {
    while (next < job.queries.length) {
      const i = next++;
      outcomes.push(await send(pool, job, i, performance.now()));
    }
  };
  await Promise.all(Array.from({ length: job.inFlight }, lane));
  return outcomes;
}

async function paced(job: LiveClientJob, pool: Pool): Promise<LiveClientOutcome[]> {
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
    const outcome = send(pool, job, i, since);
    pending.add(outcome);
    void outcome.finally(() => pending.delete(outcome));
    outcomes.push(outcome);
  }
  return Promise.all(outcomes);
}

process.on("message", (message) => {
  void run(message as LiveClientJob).then((result) => process.send?.(result));
});
