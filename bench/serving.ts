import {
  createServer,
  type Server as HttpServer,
  get as httpGet,
  type IncomingHttpHeaders,
} from "node:http";
import type { AddressInfo } from "node:net";
import { arch, availableParallelism, cpus, platform } from "node:os";
import { performance } from "node:perf_hooks";
import { Hono } from "hono";
import { readRoutesCors } from "../src/api/app.ts";
import { cors } from "../src/api/cors.ts";
import { withEdge } from "../src/api/edge.ts";
import { writeReply } from "../src/api/headers.ts";
import { listen, nodeServer } from "../src/api/listen.ts";
import { hitHeaders } from "../src/api/reply.ts";
import { logAnswered, requestLog } from "../src/api/request-log.ts";
import { loadConfig } from "../src/config.ts";
import { createLogger } from "../src/log.ts";
import type { Prediction } from "../src/model/decoding.ts";
import type { ModelVersion } from "../src/model/registry.ts";
import type { RuntimeStats } from "../src/model/runtime.ts";
import { startRedisServer } from "../src/redis/embedded.ts";
import { loadRegistry, type Service } from "../src/service.ts";
import type { AutocannonJob, AutocannonResult } from "./lib/autocannon-client.ts";
import { ForkedLoad } from "./lib/forked-load.ts";
import { cpuPerRequest } from "./lib/in-memory-http.ts";
import type { LiveClientOutcome, LiveClientResult } from "./lib/live-client.ts";
import { placeApart } from "./lib/placement.ts";
import {
  freshPrefix,
  type Predcache,
  runAll,
  type Server,
  startPredcache,
} from "./lib/predcache.ts";
import { median, percentile, ratio, table } from "./lib/report.ts";
import { startWorkerProcess } from "./lib/worker-process.ts";

const HOST = "127.0.0.1";
const MODEL = "flight-delay";
const PREDICT = `/v1/models/${MODEL}/predict`;
const HOT_PATH = `${PREDICT}?origin=SFO&destination=LAX&hour=7&dayOfWeek=1`;
/**
 * Per HTTP scenario: a discarded warm-up, then `seconds` measured in `slices` slices, the
 * scenarios' slices interleaved (short ones: a stall of this shared machine hits one slice
 * of one scenario, and the paired ratio's median leaves it out).
 */
const LOAD = { connections: 50, warmupSeconds: 1, seconds: 10, slices: 20 };
/**
 * Keys of the many-keys Redis-hit scenario (no target: what a hit costs when no two
 * concurrent lookups share a read). Fewer than the URLs the hot front remembers (4,096),
 * so every one is answered ahead of Hono, as the hot key is.
 */
const DISTINCT_KEYS = 2_000;
/**
 * Live misses: `inputs` distinct inputs per config, sent in `slices` interleaved chunks,
 * after `warmupInputs` each. The warm-up is long enough for V8 to have compiled the miss
 * path (queue, worker, Redis client): after 128, V8's compiler threads still took ~30% of
 * the service's CPU during the measured slices, on a machine whose cores everything shares.
 */
const LIVE = { inputs: 2_000, warmupInputs: 1_500, inFlight: 64, waitMs: 5_000, slices: 4 };
/**
 * The pair the target is about: micro-batched with the defaults, then one row per job and
 * per run (PREDCACHE_LIVE_BATCH_ROWS=1, every other setting its default; the worker then
 * holds 4 × rows jobs at once). Then one row per run with as many jobs held at once as
 * the batched config: that tells batching apart from the number of jobs held.
 */
const LIVE_CONFIGS: { name: string; env: Record<string, string> }[] = [
  {
    name: "rows 64, wait 5 ms (defaults; concurrency 256)",
    env: { PREDCACHE_LIVE_BATCH_ROWS: "64", PREDCACHE_LIVE_BATCH_WAIT_MS: "5" },
  },
  { name: "rows 1 (defaults; concurrency 4)", env: { PREDCACHE_LIVE_BATCH_ROWS: "1" } },
  {
    name: "rows 1, concurrency 256",
    env: { PREDCACHE_LIVE_BATCH_ROWS: "1", PREDCACHE_LIVE_CONCURRENCY: "256" },
  },
];
/**
 * Server CPU per request over an in-memory socket: requests per round, rounds (after one
 * warm-up round). Many short rounds: a stall of this shared machine spoils a few of them,
 * and ratios are taken round by round (the scenarios of a round ran back to back).
 */
const CPU = { requests: 4_000, rounds: 25 };
const TARGETS = { l1VsHello: 0.9, redisVsL1: 0.85, batchedVsSingle: 3 };

// ---------------------------------------------------------------------------- servers

/** The floor: node:http with nothing in between. */
function rawServer(body: string): HttpServer {
  const bytes = Buffer.from(body);
  return createServer((_request, response) => {
    response.writeHead(200, { "content-type": "application/json", "content-length": bytes.length });
    response.end(bytes);
  });
}

async function startRawServer(body: string): Promise<Server> {
  const server = rawServer(body);
  await new Promise<void>((done, fail) => {
    server.once("error", fail);
    server.listen(0, HOST, () => done());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${HOST}:${port}`,
    close: () =>
      new Promise((done) => {
        server.close(() => done());
        server.closeIdleConnections();
      }),
  };
}

/** Hono (served through the project's own listen()), on the predict route so routing costs the same. */
function helloWorld(body: string): Hono {
  const app = new Hono();
  app.get(PREDICT, (c) => c.body(body, 200, { "content-type": "application/json" }));
  return app;
}

/**
 * Hono hello-world answering with every header a hit carries, at constant values (the
 * request id too): what the headers alone cost, each validated and written by node:http
 * on every reply, where hello-world sends one. As one plain record, the way a hit sends
 * them: c.body() with more than one header would build a Headers object first, a cost
 * a hit does not pay.
 */
function helloWithHitHeaders(body: string, headers: Record<string, string>): Hono {
  const app = new Hono();
  app.get(PREDICT, () => new Response(body, { status: 200, headers: { ...headers } }));
  return app;
}

/**
 * What predcache does around every lookup it answers ahead of the app (its edge hooks:
 * request id and log line, CORS; then a hit's headers and a constant reply, written as
 * src/api/hot-lookups.ts writes them): the gap from here to an L1 hit is the lookup's own
 * work (version check, L1, metrics).
 */
function edgeOnly(body: string, etag: string): Hono {
  const head = Object.entries(hitHeaders(etag, 30, "application/json")).flat();
  head.push("Content-Length", String(Buffer.byteLength(body)));
  const edge = [requestLog(createLogger("silent")), cors(readRoutesCors(["*"]))];
  return withEdge(new Hono(), edge, (incoming, outgoing, _app, enter) => {
    enter(incoming, outgoing, true);
    writeReply(incoming, outgoing, 200, head, body);
    logAnswered(outgoing);
  });
}

/** `items` starting at index `by`: round r of a round-robin starts with a different one. */
function rotated<T>(items: readonly T[], by: number): T[] {
  const k = by % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

// ---------------------------------------------------------------------------- requests

interface Reply {
  status: number;
  text: string;
  source: string | undefined;
  etag: string;
  /** The reply's own headers (not node's Date, Connection, Keep-Alive, Content-Length). */
  headers: Record<string, string>;
}

const NODE_HEADERS = new Set(["date", "connection", "keep-alive", "content-length"]);

/**
 * One GET on a connection of its own: these checks come between long steps, and a kept-alive
 * connection the server has just timed out may be reset under a request sent on it.
 */
function get(url: string): Promise<Reply> {
  return new Promise((done, fail) => {
    const request = httpGet(url, { agent: false }, (response) => {
      let text = "";
      response.setEncoding("utf8");
      response.on("data", (chunk: string) => {
        text += chunk;
      });
      response.on("end", () =>
        done({
          status: response.statusCode ?? 0,
          text,
          source: sourceOf(text),
          etag: String(response.headers.etag ?? ""),
          headers: ownHeaders(response.headers),
        }),
      );
    });
    request.on("error", fail);
  });
}

function ownHeaders(headers: IncomingHttpHeaders): Record<string, string> {
  const own: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers))
    if (value !== undefined && !NODE_HEADERS.has(name))
      own[name] = Array.isArray(value) ? value.join(", ") : value;
  return own;
}

function sourceOf(text: string): string | undefined {
  try {
    const body: unknown = JSON.parse(text);
    if (typeof body === "object" && body !== null && "source" in body)
      return typeof body.source === "string" ? body.source : undefined;
  } catch {
    // not JSON: no source
  }
  return undefined;
}

/** A scenario that is not served by the tier it claims to measure is a broken bench. */
function expectSource(reply: Reply, source: string, what: string): void {
  if (reply.status !== 200 || reply.source !== source)
    throw new Error(
      `${what}: expected 200 from ${source}, got ${reply.status} ${reply.text.slice(0, 200)}`,
    );
  console.log(`  ${what}: 200, source "${reply.source}"`);
}

// ---------------------------------------------------------------------------- HTTP load

interface Target {
  name: string;
  url: string;
  /** Paths to cycle through on that server instead of the URL's own. */
  paths?: string[];
}

interface Load {
  name: string;
  reqPerSec: number;
  /** Means over the slices (autocannon reports whole milliseconds). */
  p50: number;
  p99: number;
  requests: number;
  /** Connection errors, timeouts and non-2xx answers. */
  failures: number;
  /** req/s of each slice, in round order: round r's slices of all scenarios ran back to back. */
  sliceRates: number[];
  /**
   * This process's CPU time per request (µs), over the slices: every server here runs in
   * it and the load generator does not, so this is the server's own cost over loopback
   * (its share of the kernel's work included).
   */
  cpuMicros: number;
  /** Redis HGETs served per request, over the slices. */
  readsPerRequest: number;
}

/** autocannon in a process of its own (lib/autocannon-client.ts), placed apart from the servers. */
type HttpLoad = ForkedLoad<AutocannonJob, AutocannonResult>;

function fire(load: HttpLoad, target: Target, seconds: number): Promise<AutocannonResult> {
  return load.run({ url: target.url, connections: LOAD.connections, seconds, paths: target.paths });
}

/**
 * Warms every target, then measures them round-robin in slices; `reads` counts the reads
 * Redis has served so far (read between slices: the service's own commands only).
 */
async function hammerAll(
  load: HttpLoad,
  targets: readonly Target[],
  reads: () => Promise<number>,
): Promise<Load[]> {
  for (const target of targets) await fire(load, target, LOAD.warmupSeconds);
  const slices = new Map<Target, AutocannonResult[]>(targets.map((t) => [t, []]));
  const cpuMicros = new Map<Target, number>(targets.map((t) => [t, 0]));
  const readCounts = new Map<Target, number>(targets.map((t) => [t, 0]));
  for (let round = 0; round < LOAD.slices; round++) {
    for (const target of rotated(targets, round)) {
      const readsBefore = await reads();
      const before = process.cpuUsage();
      slices.get(target)?.push(await fire(load, target, LOAD.seconds / LOAD.slices));
      const used = process.cpuUsage(before);
      cpuMicros.set(target, (cpuMicros.get(target) ?? 0) + used.user + used.system);
      readCounts.set(target, (readCounts.get(target) ?? 0) + (await reads()) - readsBefore);
    }
    if (round % 2 === 1) process.stdout.write(".");
  }
  console.log();
  return targets.map((target) => {
    const results = slices.get(target) ?? [];
    const sum = (f: (r: AutocannonResult) => number) => results.reduce((s, r) => s + f(r), 0);
    const requests = sum((r) => r.requests);
    return {
      name: target.name,
      reqPerSec: requests / sum((r) => r.duration),
      p50: sum((r) => r.p50) / results.length,
      p99: sum((r) => r.p99) / results.length,
      requests,
      failures: sum((r) => r.failures),
      sliceRates: results.map((r) => r.requests / r.duration),
      cpuMicros: (cpuMicros.get(target) ?? 0) / requests,
      readsPerRequest: (readCounts.get(target) ?? 0) / requests,
    };
  });
}

/**
 * a vs b round by round: each round ran both within seconds of each other, so a drift of
 * the machine's speed between rounds cancels, and the median ignores a round one stall hit
 * (whereas one slice stalled for seconds drags a whole-run rate down: 0.14× in one round
 * once made a whole-run 0.81× of a run whose rounds were 0.98× at the median).
 */
function pairedRatios(a: Load, b: Load): number[] {
  return a.sliceRates.map((rate, i) => rate / (b.sliceRates[i] as number));
}

/** The target's verdict on the median per round, then the whole run's ratio and the spread. */
function httpVerdict(a: Load, b: Load, target: number): string {
  const ratios = pairedRatios(a, b);
  const middle = median(ratios);
  const fmt = (x: number) => `${x.toFixed(2)}×`;
  return (
    `${fmt(middle)} median per round (target ≥ ${target}×) ${middle >= target ? "PASS" : "MISS"}\n` +
    `                                 whole run ${ratio(a.reqPerSec, b.reqPerSec)}; rounds ` +
    `${fmt(Math.min(...ratios))}–${fmt(Math.max(...ratios))} (${ratios.length})`
  );
}

interface CpuScenario {
  name: string;
  server: HttpServer;
}

interface CpuCost {
  name: string;
  /** Median over the rounds, µs of process CPU per request. */
  micros: number;
  /** µs per request in each round, in round order. */
  rounds: number[];
}

/** a's cost over b's, round by round (as a req/s ratio: b's cost / a's), the median. */
function pairedCpuRatio(a: CpuCost, b: CpuCost): number {
  return median(a.rounds.map((micros, i) => (b.rounds[i] as number) / micros));
}

/** How much more a request of a costs than one of b, round by round, the median (µs). */
function pairedCpuExtra(a: CpuCost, b: CpuCost): number {
  return median(a.rounds.map((micros, i) => micros - (b.rounds[i] as number)));
}

/** The app's node:http server as listen() makes it, not listening (lib/in-memory-http.ts hands it a socket). */
function inMemory(app: Hono): HttpServer {
  return nodeServer(app);
}

/** Every scenario warmed, then measured round-robin, CPU.requests per round. */
async function cpuAll(scenarios: readonly CpuScenario[]): Promise<CpuCost[]> {
  for (const { server } of scenarios) await cpuPerRequest(server, HOT_PATH, CPU.requests);
  const rounds = new Map<CpuScenario, number[]>(scenarios.map((s) => [s, []]));
  for (let round = 0; round < CPU.rounds; round++) {
    for (const scenario of rotated(scenarios, round))
      rounds.get(scenario)?.push(await cpuPerRequest(scenario.server, HOT_PATH, CPU.requests));
    process.stdout.write(".");
  }
  console.log();
  return scenarios.map((s) => {
    const measured = rounds.get(s) ?? [];
    return { name: s.name, micros: median(measured), rounds: measured };
  });
}

/**
 * Stores the model's real predictions for `count` distinct inputs (computed here in
 * batches, as precompute would) in the service's Redis; returns their lookup paths.
 */
async function storeDistinct(app: Predcache, count: number): Promise<string[]> {
  const version = app.service.active.get(MODEL);
  const model = version ? app.registry.get(MODEL, version) : undefined;
  if (!model) throw new Error(`${MODEL} is not served`);
  const inputs = distinctInputs(model, count, 19990909);
  const encoded = inputs.map((input) => {
    const outcome = model.encoder.encode({ ...input });
    if (!outcome.ok) throw new Error(`bench input refused: ${JSON.stringify(outcome.issues)}`);
    return outcome.value;
  });
  const runtime = await app.registry.runtime(model);
  for (let start = 0; start < encoded.length; start += 500) {
    const batch = encoded.slice(start, start + 500);
    const predictions = await runtime.run(batch.map((e) => e.row));
    await app.service.tiers.store.put(
      model,
      batch.map((e, i) => ({ key: e.key, prediction: predictions[i] as Prediction })),
    );
  }
  return inputs.map(
    (input) =>
      `${PREDICT}?${new URLSearchParams({
        origin: input.origin,
        destination: input.destination,
        hour: String(input.hour),
        dayOfWeek: String(input.dayOfWeek),
      })}`,
  );
}

/** HGET calls Redis has served so far (INFO commandstats). */
async function hgetCalls(service: Service): Promise<number> {
  const stats = await service.redis.info("commandstats");
  return Number(/cmdstat_hget:calls=(\d+)/.exec(stats)?.[1] ?? 0);
}

// ---------------------------------------------------------------------------- live misses

interface Input {
  origin: string;
  destination: string;
  hour: number;
  dayOfWeek: number;
}

/** mulberry32: a tiny seeded PRNG, so every run and every config sees the same inputs. */
function prng(seed: number): (below: number) => number {
  let state = seed >>> 0;
  return (below) => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * below);
  };
}

/** `count` distinct inputs drawn from the model's own vocabulary and ranges. */
function distinctInputs(model: ModelVersion, count: number, seed = 20010101): Input[] {
  const feature = (name: string) => {
    const found = model.manifest.encoding.features.find((f) => f.name === name);
    if (!found) throw new Error(`${model.name} has no feature ${name}`);
    return found;
  };
  const vocabulary = (name: string): string[] => {
    const f = feature(name);
    if (f.type !== "categorical") throw new Error(`${name} is not categorical`);
    return f.vocabulary;
  };
  const range = (name: string): { min: number; max: number } => {
    const f = feature(name);
    if (f.type !== "integer") throw new Error(`${name} is not an integer`);
    return f;
  };
  const origins = vocabulary("origin");
  const destinations = vocabulary("destination");
  const hours = range("hour");
  const days = range("dayOfWeek");
  const random = prng(seed);
  const seen = new Set<string>();
  const inputs: Input[] = [];
  while (inputs.length < count) {
    const origin = origins[random(origins.length)];
    const destination = destinations[random(destinations.length)];
    if (!origin || !destination || origin === destination) continue;
    const hour = hours.min + random(hours.max - hours.min + 1);
    const dayOfWeek = days.min + random(days.max - days.min + 1);
    const id = `${origin}-${destination}-${hour}-${dayOfWeek}`;
    if (seen.has(id)) continue;
    seen.add(id);
    inputs.push({ origin, destination, hour, dayOfWeek });
  }
  return inputs;
}

/** The forked load generator of lib/live-client.ts, sending live misses. */
class LiveLoad {
  private readonly load = new ForkedLoad();

  /** Sends every input once, LIVE.inFlight at a time, each waiting for the live model. */
  run(baseUrl: string, inputs: readonly Input[]): Promise<LiveClientResult> {
    return this.load.run({
      url: `${baseUrl}${PREDICT}`,
      queries: inputs.map((input) =>
        new URLSearchParams({
          origin: input.origin,
          destination: input.destination,
          hour: String(input.hour),
          dayOfWeek: String(input.dayOfWeek),
          wait: String(LIVE.waitMs),
        }).toString(),
      ),
      inFlight: LIVE.inFlight,
    });
  }

  close(): Promise<void> {
    return this.load.close();
  }
}

/** One config: its own service + live worker, prefix (so all misses) and registry (so its own run counts). */
interface LiveSetup {
  name: string;
  app: Predcache;
  stats: RuntimeStats;
  batchSizes(): number[];
}

async function startLiveSetup(
  name: string,
  redisUrl: string,
  env: Record<string, string>,
): Promise<LiveSetup> {
  const app = await startPredcache(redisUrl, env, { liveWorker: true });
  // Each waiting miss adds a "closing" listener to the BullMQ Queue (Job.waitUntilFinished);
  // past 10 Node prints MaxListenersExceededWarning again and again. Room for our load:
  app.service.live.queue.setMaxListeners(LIVE.inFlight + 16);
  const version = app.service.active.get(MODEL);
  const model = version ? app.registry.get(MODEL, version) : undefined;
  if (!model) {
    await app.close();
    throw new Error(`${MODEL} is not served`);
  }
  // The runtime counts in place: holding its stats object is enough to read them later.
  const { stats } = await app.registry.runtime(model);
  return {
    name,
    app,
    stats,
    batchSizes: () => Object.values(app.live?.worker.batchSizes() ?? {}).flat(),
  };
}

interface LiveResult {
  name: string;
  completed: number;
  /** Answers that were not a 200 from the live model (202 pending, errors). */
  other: number;
  perSec: number;
  p50: number;
  p99: number;
  runs: number;
  rows: number;
  maxBatch: number;
}

/** Warms every config, then sends each the same inputs in chunks, round-robin. */
async function liveMissesAll(
  client: LiveLoad,
  setups: readonly LiveSetup[],
  warmup: readonly Input[],
  inputs: readonly Input[],
): Promise<LiveResult[]> {
  for (const setup of setups) await client.run(setup.app.url, warmup);
  const before = new Map(
    setups.map((s) => [s, { ...s.stats, batches: s.batchSizes().length }] as const),
  );
  const results = new Map<LiveSetup, LiveClientResult[]>(setups.map((s) => [s, []]));
  const chunk = Math.ceil(inputs.length / LIVE.slices);
  for (let round = 0; round < LIVE.slices; round++) {
    const part = inputs.slice(round * chunk, (round + 1) * chunk);
    for (const setup of rotated(setups, round))
      results.get(setup)?.push(await client.run(setup.app.url, part));
    process.stdout.write(".");
  }
  console.log();
  return setups.map((setup) => {
    const parts = results.get(setup) ?? [];
    const outcomes: LiveClientOutcome[] = parts.flatMap((p) => p.outcomes);
    const seconds = parts.reduce((s, p) => s + p.seconds, 0);
    const completed = outcomes.filter((o) => o.live).length;
    const latencies = outcomes.map((o) => o.ms).sort((a, b) => a - b);
    const start = before.get(setup) ?? { runs: 0, rows: 0, batches: 0 };
    return {
      name: setup.name,
      completed,
      other: outcomes.length - completed,
      perSec: completed / seconds,
      p50: percentile(latencies, 0.5),
      p99: percentile(latencies, 0.99),
      runs: setup.stats.runs - start.runs,
      rows: setup.stats.rows - start.rows,
      maxBatch: Math.max(0, ...setup.batchSizes().slice(start.batches)),
    };
  });
}

// ---------------------------------------------------------------------------- printing

function fmtInt(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

function fmtMs(n: number): string {
  return n.toFixed(1);
}

function verdict(a: number, b: number, target: number): string {
  return `${ratio(a, b)} (target ≥ ${target}×) ${a / b >= target ? "PASS" : "MISS"}`;
}

// ---------------------------------------------------------------------------- main

async function main(): Promise<void> {
  const cpu = cpus()[0]?.model.trim() ?? "unknown CPU";
  console.log(`predcache serving bench — Node ${process.version}, ${platform()}/${arch()}`);
  console.log(`CPUs: ${availableParallelism()} (${cpu})`);
  console.log(
    "Note: figures are from ONE noisy run. The services run in this process, the load generators\n" +
      "(autocannon; a node:http client for live misses) each in a child process, redis-server in its\n" +
      "own: compare the ratios, not the absolute numbers.",
  );
  console.log(
    `HTTP: autocannon, ${LOAD.connections} connections; per scenario ${LOAD.warmupSeconds} s warm-up, then ` +
      `${LOAD.seconds} s measured in ${LOAD.slices} interleaved slices\n`,
  );

  const started = performance.now();
  // Undone in reverse order of setup: servers as soon as they are measured, the rest at the end.
  const cleanup: (() => Promise<void>)[] = [];
  const servers: (() => Promise<void>)[] = [];
  try {
    const redis = await startRedisServer();
    cleanup.unshift(() => redis.stop());
    console.log(`redis-server ${redis.url} (pid ${redis.pid}, no persistence)`);

    // 5 (set up first): the real service, whose reply body the baselines will serve; its
    // live worker in a process of its own, as deployed (it also runs the cache audit's
    // recomputes: the hot key's once, as an entry that agreed is not audited again).
    const config = loadConfig({ LOG_LEVEL: "silent" });
    const registry = await loadRegistry(config);
    cleanup.unshift(() => registry.close());
    const prefix = freshPrefix();
    const worker = await startWorkerProcess(redis.url, { PREDCACHE_PREFIX: prefix });
    servers.unshift(() => worker.close());
    const l1 = await startPredcache(
      redis.url,
      { PREDCACHE_PREFIX: prefix },
      { registry, liveWorker: false },
    );
    servers.unshift(() => l1.close());
    expectSource(await get(`${l1.url}${HOT_PATH}&wait=5000`), "live", "warm-up (L1 service)");
    const sample = await get(`${l1.url}${HOT_PATH}`);
    expectSource(sample, "memory", "sample (L1 service)");
    console.log(`  reply body (${Buffer.byteLength(sample.text)} bytes): ${sample.text}`);

    // 1, 2: the baselines, serving exactly that body.
    const raw = await startRawServer(sample.text);
    servers.unshift(() => raw.close());
    const helloApp = helloWorld(sample.text);
    const hello = await listen(helloApp, HOST, 0);
    servers.unshift(() => hello.close());
    // 3: hello-world with a hit's headers.
    const headedApp = helloWithHitHeaders(sample.text, sample.headers);
    const headed = await listen(headedApp, HOST, 0);
    servers.unshift(() => headed.close());
    // 4: the edge hooks around a hit, with that body and the hit's headers.
    const framedApp = edgeOnly(sample.text, sample.etag);
    const framed = await listen(framedApp, HOST, 0);
    servers.unshift(() => framed.close());

    // 6: same Redis and prefix; a 1-byte L1 holds nothing (0 is refused by lru-cache).
    const l2 = await startPredcache(
      redis.url,
      { PREDCACHE_PREFIX: prefix, PREDCACHE_L1_MAX_BYTES: "1" },
      { registry, liveWorker: false },
    );
    servers.unshift(() => l2.close());
    expectSource(await get(`${l2.url}${HOT_PATH}`), "redis", "sample (Redis service)");
    expectSource(await get(`${l2.url}${HOT_PATH}`), "redis", "again  (Redis service)");
    // 7: the same service, many keys: no two concurrent lookups share a read.
    const distinctPaths = await storeDistinct(l2, DISTINCT_KEYS);
    for (const path of [distinctPaths[0], distinctPaths[DISTINCT_KEYS - 1]])
      expectSource(await get(`${l2.url}${path}`), "redis", "distinct key (Redis service)");

    console.log("\nHTTP scenarios");
    const httpLoad: HttpLoad = new ForkedLoad(
      new URL("./lib/autocannon-client.ts", import.meta.url),
    );
    cleanup.unshift(() => httpLoad.close());
    // The services on a core of their own for the HTTP scenarios (lib/placement.ts).
    // redis-server with the servers: a Redis hit's wait for it is then the service's own
    // (Redis runs when the service waits, its CPU charged to the service's core), not a
    // wait for autocannon, busy on the other core, to yield the CPU.
    const placement = placeApart(
      process.pid,
      [
        { name: "load generator", pid: httpLoad.pid },
        { name: "live worker", pid: worker.pid },
      ],
      [{ name: "redis-server", pid: redis.pid }],
    );
    cleanup.unshift(async () => placement.undo());
    const placementNote = placement.description;
    console.log(`  placement: ${placementNote}`);
    // Only the Redis-hit service reads Redis here: the reads Redis served during a slice are
    // its scenario's. With one hot key concurrent lookups share a read; count them.
    const loads = await hammerAll(
      httpLoad,
      [
        { name: "1 raw node:http", url: `${raw.url}${HOT_PATH}` },
        { name: "2 Hono hello-world", url: `${hello.url}${HOT_PATH}` },
        { name: "3 Hono hello-world + a hit's headers", url: `${headed.url}${HOT_PATH}` },
        { name: "4 predcache edge hooks, constant", url: `${framed.url}${HOT_PATH}` },
        { name: "5 predcache L1 hit", url: `${l1.url}${HOT_PATH}` },
        { name: "6 predcache Redis hit", url: `${l2.url}${HOT_PATH}` },
        {
          name: `7 predcache Redis hit, ${fmtInt(DISTINCT_KEYS)} keys`,
          url: l2.url,
          paths: distinctPaths,
        },
      ],
      () => hgetCalls(l2.service),
    );
    placement.undo();
    expectSource(await get(`${l1.url}${HOT_PATH}`), "memory", "after load (L1 service)");
    expectSource(await get(`${l2.url}${HOT_PATH}`), "redis", "after load (Redis service)");
    // The same scenarios without the network: each server's own CPU per request.
    console.log("\nServer CPU per request, in-memory socket");
    const cpuCosts = await cpuAll([
      { name: "1 raw node:http", server: rawServer(sample.text) },
      { name: "2 Hono hello-world", server: inMemory(helloApp) },
      { name: "3 Hono hello-world + a hit's headers", server: inMemory(headedApp) },
      { name: "4 predcache edge hooks, constant", server: inMemory(framedApp) },
      { name: "5 predcache L1 hit", server: inMemory(l1.service.app) },
      { name: "6 predcache Redis hit", server: inMemory(l2.service.app) },
    ]);
    expectSource(await get(`${l1.url}${HOT_PATH}`), "memory", "after CPU (L1 service)");
    expectSource(await get(`${l2.url}${HOT_PATH}`), "redis", "after CPU (Redis service)");
    // Stop them so they do not share the machine with step 7.
    await runAll(servers.splice(0));

    // 7: live misses, every input new to each config's fresh prefix.
    console.log("\nLive misses");
    const model = registry.defaultVersion(MODEL);
    if (!model) throw new Error(`no ${MODEL} model`);
    const all = distinctInputs(model, LIVE.warmupInputs + LIVE.inputs);
    const client = new LiveLoad();
    cleanup.unshift(() => client.close());
    const setups: LiveSetup[] = [];
    for (const { name, env } of LIVE_CONFIGS) {
      const setup = await startLiveSetup(name, redis.url, env);
      servers.unshift(() => setup.app.close());
      setups.push(setup);
    }
    const lives = await liveMissesAll(
      client,
      setups,
      all.slice(0, LIVE.warmupInputs),
      all.slice(LIVE.warmupInputs),
    );

    // ------------------------------------------------------------------ report
    const [rawLoad, helloLoad, headedLoad, framedLoad, l1Load, l2Load, manyLoad] = loads as [
      Load,
      Load,
      Load,
      Load,
      Load,
      Load,
      Load,
    ];
    const [batched, single] = lives as [LiveResult, LiveResult];
    const reference = [rawLoad, rawLoad, helloLoad, headedLoad, framedLoad, l1Load, l2Load];
    console.log(
      "\nResults: HTTP, one URL and one reply body (7: its own keys), p50/p99 the mean over the slices\n",
    );
    console.log(
      table(
        [
          "scenario",
          "req/s",
          "p50 ms",
          "p99 ms",
          "requests",
          "failed",
          "× raw",
          "× row above",
          "CPU µs/req",
          "HGET/req",
        ],
        loads.map((l, i) => [
          l.name,
          fmtInt(l.reqPerSec),
          fmtMs(l.p50),
          fmtMs(l.p99),
          fmtInt(l.requests),
          String(l.failures),
          ratio(l.reqPerSec, rawLoad.reqPerSec),
          i === 0 ? "" : ratio(l.reqPerSec, reference[i]?.reqPerSec ?? Number.NaN),
          l.cpuMicros.toFixed(1),
          l.readsPerRequest.toFixed(3),
        ]),
      ),
    );
    console.log(
      `  (3: hello-world sending the ${Object.keys(sample.headers).length} headers of a hit, at constant values.)\n` +
        `  (4: predcache's request id/log and CORS hooks, a hit's headers, a constant reply, ahead of\n` +
        `   Hono as a hit is answered: from 4 to 5 is the lookup's own work.)\n` +
        `  (6: one URL; concurrent lookups of its key share a read. 7: ${fmtInt(DISTINCT_KEYS)} URLs in turn\n` +
        `   across the connections, all in Redis; the same service, every lookup a read of its own)\n` +
        `  (CPU µs/req: the servers' process, kernel time included; placement: ${placementNote})`,
    );
    const [rawCpu, helloCpu, , , l1Cpu, l2Cpu] = cpuCosts as [
      CpuCost,
      CpuCost,
      CpuCost,
      CpuCost,
      CpuCost,
      CpuCost,
    ];
    console.log(
      `\nResults: server CPU per request over an in-memory socket (no network, no load generator;\n` +
        `${fmtInt(CPU.requests)} pipelined keep-alive requests per round, ${CPU.rounds} rounds; medians, ratios\n` +
        "taken round by round)\n",
    );
    console.log(
      table(
        ["scenario", "CPU µs/req", "rounds (min–max)", "as req/s × raw", "as req/s × hello"],
        cpuCosts.map((c) => [
          c.name,
          c.micros.toFixed(2),
          `${Math.min(...c.rounds).toFixed(1)}–${Math.max(...c.rounds).toFixed(1)}`,
          `${pairedCpuRatio(c, rawCpu).toFixed(2)}×`,
          `${pairedCpuRatio(c, helloCpu).toFixed(2)}×`,
        ]),
      ),
    );
    console.log(
      "  (Over loopback each request also costs the kernel's read and write, about the same for\n" +
        "   every scenario: the HTTP ratios above are closer to 1.)",
    );
    console.log(
      `\nResults: live misses, ${fmtInt(LIVE.inputs)} distinct inputs per config, ${LIVE.inFlight} in flight, wait=${LIVE.waitMs}\n`,
    );
    console.log(
      table(
        [
          "config",
          "pred/s",
          "p50 ms",
          "p99 ms",
          "live 200",
          "other",
          "onnx runs",
          "rows",
          "rows/run",
          "max batch",
          "× rows 1",
        ],
        lives.map((l) => [
          l.name,
          fmtInt(l.perSec),
          fmtMs(l.p50),
          fmtMs(l.p99),
          fmtInt(l.completed),
          String(l.other),
          fmtInt(l.runs),
          fmtInt(l.rows),
          (l.rows / l.runs).toFixed(1),
          String(l.maxBatch),
          ratio(l.perSec, single.perSec),
        ]),
      ),
    );
    console.log("\nTargets (printed, not asserted)");
    console.log(
      `  L1 hit vs hello-world req/s:   ${httpVerdict(l1Load, helloLoad, TARGETS.l1VsHello)}`,
    );
    console.log(
      `  Redis hit vs L1 hit req/s:     ${httpVerdict(l2Load, l1Load, TARGETS.redisVsL1)}`,
    );
    console.log(
      `  (server CPU alone, no target: L1 hit vs hello-world ${pairedCpuRatio(l1Cpu, helloCpu).toFixed(2)}×, ` +
        `Redis hit vs L1 hit ${pairedCpuRatio(l2Cpu, l1Cpu).toFixed(2)}×, as req/s ratios;\n` +
        `   an L1 hit costs ${pairedCpuExtra(l1Cpu, helloCpu).toFixed(1)} µs more than hello-world)`,
    );
    console.log(
      `  (no target: Redis hit with ${fmtInt(DISTINCT_KEYS)} keys vs L1 hit ${ratio(manyLoad.reqPerSec, l1Load.reqPerSec)}, ` +
        `${manyLoad.readsPerRequest.toFixed(2)} HGET per request, p99 ${fmtMs(manyLoad.p99)} ms)`,
    );
    console.log(
      `  rows 64 vs rows 1 pred/s:      ${verdict(batched.perSec, single.perSec, TARGETS.batchedVsSingle)}`,
    );
    console.log(
      `  (no target: hello-world + a hit's headers vs hello-world ${ratio(headedLoad.reqPerSec, helloLoad.reqPerSec)}, ` +
        `edge hooks vs hello-world ${ratio(framedLoad.reqPerSec, helloLoad.reqPerSec)}, ` +
        `L1 hit vs edge hooks ${ratio(l1Load.reqPerSec, framedLoad.reqPerSec)};\n` +
        `   server CPU µs per request over loopback: hello-world ${helloLoad.cpuMicros.toFixed(1)}, + headers ` +
        `${headedLoad.cpuMicros.toFixed(1)}, + edge ${framedLoad.cpuMicros.toFixed(1)}, ` +
        `L1 hit ${l1Load.cpuMicros.toFixed(1)}, as a req/s ratio ` +
        `L1 vs hello ${ratio(helloLoad.cpuMicros, l1Load.cpuMicros)})`,
    );
  } finally {
    await runAll(servers);
    await runAll(cleanup);
    console.log(`\nDone in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
