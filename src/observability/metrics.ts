/**
 * Prometheus metrics (prom-client), one registry per process: the API, the live worker
 * and the precompute worker record into it wherever they run. The API serves it at
 * /metrics; a worker-only process serves it on PREDCACHE_METRICS_PORT (npm run work).
 * Queue depths are read from Redis at scrape time.
 */
import type { Queue } from "bullmq";
import client from "prom-client";
import type { Prediction } from "../model/decoding.ts";
import { mainOutputOf } from "../model/manifest.ts";
import type { ModelVersion } from "../model/registry.ts";
import {
  HotCounter,
  type HotCounterSeries,
  HotHistogram,
  type HotHistogramSeries,
} from "./hot-series.ts";

export interface AnswerSeries {
  lookups: HotCounterSeries;
  seconds: HotHistogramSeries;
  misses: HotCounterSeries;
  pending: HotCounterSeries;
  predictions: HotHistogramSeries;
  outOfDistribution: HotCounterSeries;
  /** The main output's name. */
  main: string;
}

const QUEUE_STATES = [
  "waiting",
  "active",
  "delayed",
  "prioritized",
  "waiting-children",
  "failed",
] as const;

/**
 * How long a scrape waits for Redis: a frozen Redis costs a scrape this long, not the
 * connections' command timeout (PREDCACHE_REDIS_TIMEOUT_MS, up to 60 s).
 */
export const SCRAPE_REDIS_MS = 1_000;

type Ping = () => Promise<unknown>;

/** A queue's state as a scrape read it. */
interface QueueState {
  counts: Record<string, number>;
  paused: boolean;
}

/** The value of `work` if it is fulfilled within `ms`, else undefined (a rejection too). */
async function within<T>(work: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((done) => {
    timer = setTimeout(() => done(undefined), ms);
    timer.unref();
  });
  const answered = work.catch(() => undefined);
  try {
    return await Promise.race([answered, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** The outcome label values of predcache_shadow_comparisons_total. */
export const SHADOW_OUTCOMES = ["agreed", "disagreed", "dropped", "refused", "failed"] as const;
export type ShadowOutcome = (typeof SHADOW_OUTCOMES)[number];

/** What an API process serves right now, read at scrape time (./metrics.ts watchServing). */
export interface ServingState {
  /** Each model's active version as this process sees it. */
  activeVersions(): Iterable<readonly [model: string, version: string]>;
  /** L1: entries and estimated bytes. */
  memory(): { entries: number; bytes: number };
  /** The resident tables held: their model, version, rows and file bytes. */
  residentTables(): Iterable<{ model: string; version: string; rows: number; bytes: number }>;
}

export class Metrics {
  readonly registry = new client.Registry();
  private readonly queues = new Map<string, Queue>();
  private readonly serving = new Set<ServingState>();

  // The lookup path's series are hot (./hot-series.ts): updated on every answer.
  readonly lookups = new HotCounter(
    "predcache_lookups_total",
    "Lookups answered, by model, version and source (memory, table, redis, live, pending = 202, failed).",
    ["model", "version", "source"],
    this.registry,
  );
  readonly lookupSeconds = new HotHistogram(
    "predcache_lookup_duration_seconds",
    "Time to answer a single lookup, by model and source.",
    ["model", "source"],
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    this.registry,
  );
  readonly misses = new HotCounter(
    "predcache_misses_total",
    "Lookups no cache tier answered (sent to the live model).",
    ["model", "version"],
    this.registry,
  );
  readonly rateCountedLocally = new client.Counter({
    name: "predcache_rate_limit_counted_locally_total",
    help: "API-key budget uses counted in this process alone because Redis did not answer in time (each API process then allows the whole budget).",
    labelNames: ["budget"] as const,
    registers: [this.registry],
  });
  readonly coalesced = new client.Counter({
    name: "predcache_coalesced_waits_total",
    help: "Misses that joined a live computation already in flight in this process.",
    labelNames: ["model"] as const,
    registers: [this.registry],
  });
  readonly pending = new HotCounter(
    "predcache_pending_total",
    "Misses answered 202 (the live answer took longer than the wait).",
    ["model"],
    this.registry,
  );
  readonly outOfDistribution = new HotCounter(
    "predcache_out_of_distribution_total",
    "Answered inputs outside the training distribution (drift signal; divide by lookups).",
    ["model", "version"],
    this.registry,
  );
  readonly predictions = new HotHistogram(
    "predcache_prediction_value",
    "Distribution of the main output of answered predictions, per model version (drift signal).",
    ["model", "version", "output"],
    [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1, 2, 5, 10, 30, 60, 120],
    this.registry,
  );
  readonly liveBatchRows = new client.Histogram({
    name: "predcache_live_batch_rows",
    help: "Rows per live inference batch.",
    labelNames: ["model"] as const,
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
    registers: [this.registry],
  });
  readonly liveBatchSeconds = new client.Histogram({
    name: "predcache_live_batch_duration_seconds",
    help: "Time to run one live inference batch and store its results.",
    labelNames: ["model"] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [this.registry],
  });
  readonly jobOutcomes = new client.Counter({
    name: "predcache_job_outcomes_total",
    help: "Jobs finished by workers in this process, by queue and outcome.",
    labelNames: ["queue", "outcome"] as const,
    registers: [this.registry],
  });
  readonly runsEnded = new client.Counter({
    name: "predcache_precompute_runs_total",
    help: "Precompute runs ended in this process, by outcome (completed and failed in workers, cancelled where the cancel was asked).",
    labelNames: ["outcome"] as const,
    registers: [this.registry],
  });
  readonly rowsWritten = new client.Counter({
    name: "predcache_precompute_rows_written_total",
    help: "Predictions written by precompute chunks, by model and version.",
    labelNames: ["model", "version"] as const,
    registers: [this.registry],
  });
  readonly tableDownloads = new client.Counter({
    name: "predcache_table_downloads_total",
    help: "Table requests served, by model and kind (full, range, delta, not_modified).",
    labelNames: ["model", "kind"] as const,
    registers: [this.registry],
  });
  readonly auditChecks = new client.Counter({
    name: "predcache_audit_checks_total",
    help: "Sampled cache hits recomputed by the live model and compared, by hit source.",
    labelNames: ["model", "version", "source"] as const,
    registers: [this.registry],
  });
  readonly auditMismatches = new client.Counter({
    name: "predcache_audit_mismatches_total",
    help: "Audited cache hits that disagreed with the live model (corrupt entry or skewed encoding).",
    labelNames: ["model", "version", "source"] as const,
    registers: [this.registry],
  });
  readonly corruptEntries = new client.Counter({
    name: "predcache_corrupt_entries_total",
    help: "Values read from Redis that do not decode as a prediction of their version (read as misses, and recomputed live to replace them).",
    labelNames: ["model", "version"] as const,
    registers: [this.registry],
  });
  readonly auditSkipped = new client.Counter({
    name: "predcache_audit_skipped_total",
    help: "Sampled hits not audited: busy (too many audits pending), failed (recompute refused or failed) or verified (the entry already agreed with the model, holding the same value).",
    labelNames: ["model", "reason"] as const,
    registers: [this.registry],
  });
  // Hot (./hot-series.ts): at a shadow rate of 100% every experiment lookup counts one.
  readonly shadowComparisons = new HotCounter(
    "predcache_shadow_comparisons_total",
    "Experiment lookups also answered by the other arm's version: agreed, disagreed, dropped (too many pending) or failed. A stopped experiment's series are removed (its report keeps the totals).",
    ["model", "experiment", "outcome"],
    this.registry,
  );

  /**
   * Removes a stopped experiment's series, so the experiment label does not grow with
   * every experiment ever run; its report in Redis keeps the totals.
   */
  forgetExperiment(model: string, experiment: string): void {
    for (const outcome of SHADOW_OUTCOMES)
      this.shadowComparisons.remove(model, experiment, outcome);
  }

  // Hot (./hot-series.ts) too: every request is counted.
  readonly httpRequests = new HotCounter(
    "predcache_http_requests_total",
    "HTTP requests answered by this process, by route group and status (0: the client left before any answer).",
    ["route", "status"],
    this.registry,
  );
  /** Per route group, the series by status: bound once each. */
  private readonly httpBound = new Map<string, HotCounterSeries[]>();

  /** Counts one answered request. */
  countHttp(route: string, status: number): void {
    let byStatus = this.httpBound.get(route);
    if (!byStatus) {
      byStatus = [];
      this.httpBound.set(route, byStatus);
    }
    let series = byStatus[status];
    if (!series) {
      series = this.httpRequests.labels(route, String(status));
      byStatus[status] = series;
    }
    series.inc();
  }

  /** Each watched connection, and how to ask it for an answer (absent: its status only). */
  private readonly redisConnections = new Map<{ status: string }, Ping | undefined>();

  /**
   * A Redis connection whose state /metrics reports; returns the unregistration. `ping`
   * is asked at scrape time: a frozen Redis (SIGSTOP, a hung host) leaves the sockets open
   * and "ready", only an answer tells. Give it for a commands connection no request waits
   * behind (ioredis runs one auto-pipeline at a time per connection); not for a blocking
   * or subscriber one, whose PING would wait behind its blocking read.
   */
  watchRedis(redis: { status: string }, ping?: Ping): () => void {
    this.redisConnections.set(redis, ping);
    return () => this.redisConnections.delete(redis);
  }

  constructor() {
    client.collectDefaultMetrics({ register: this.registry, prefix: "predcache_" });
    this.servingGauges();
    const connections = this.redisConnections;
    new client.Gauge({
      name: "predcache_redis_connected",
      help: `1 when every Redis connection of this process is ready and Redis answers a PING within ${SCRAPE_REDIS_MS} ms of the scrape, 0 while one is down or reconnecting or Redis does not answer (frozen, overloaded).`,
      registers: [this.registry],
      async collect() {
        const all = [...connections];
        if (all.length === 0 || !all.every(([redis]) => redis.status === "ready")) {
          this.set(0);
          return;
        }
        const pings = all.flatMap(([, ping]) => (ping ? [ping] : []));
        const answers = await Promise.all(
          pings.map((ping) =>
            within(
              Promise.resolve()
                .then(ping)
                .then(() => true),
              SCRAPE_REDIS_MS,
            ),
          ),
        );
        this.set(answers.every((answered) => answered === true) ? 1 : 0);
      },
    });
    this.queueGauges();
  }

  /**
   * One bounded read of every watched queue, shared by the gauges a scrape collects at
   * once (prom-client asks them all before awaiting any): a queue not read within
   * SCRAPE_REDIS_MS is undefined.
   */
  private queueRead: Promise<Map<string, QueueState | undefined>> | undefined;

  private readQueues(): Promise<Map<string, QueueState | undefined>> {
    this.queueRead ??= Promise.all(
      [...this.queues].map(async ([name, queue]) => {
        const state = await within(
          Promise.all([queue.getJobCounts(...QUEUE_STATES), queue.isPaused()]).then(
            ([counts, paused]) => ({ counts, paused }),
          ),
          SCRAPE_REDIS_MS,
        );
        return [name, state] as const;
      }),
    )
      .then((read) => new Map(read))
      .finally(() => {
        this.queueRead = undefined;
      });
    return this.queueRead;
  }

  private queueGauges(): void {
    const registers = [this.registry];
    const read = () => this.readQueues();
    new client.Gauge({
      name: "predcache_queue_jobs",
      help: "Jobs in each queue by state, read from Redis at scrape time; absent for a queue predcache_queue_counts_read says was not read (not a last known value).",
      labelNames: ["queue", "state"] as const,
      registers,
      async collect() {
        const queues = await read();
        this.reset();
        for (const [queue, state] of queues)
          if (state)
            for (const name of QUEUE_STATES)
              this.set({ queue, state: name }, state.counts[name] ?? 0);
      },
    });
    // Missing series alone say nothing (a process that watches no queue has none either).
    // Last known values are not kept: repeated as current, they would hide a queue growing
    // or draining behind the stall; Prometheus keeps the history.
    new client.Gauge({
      name: "predcache_queue_counts_read",
      help: `1 when this scrape read the queue's state from Redis, 0 when it could not within ${SCRAPE_REDIS_MS} ms (Redis down or not answering): its predcache_queue_jobs and predcache_queue_paused series are then left out.`,
      labelNames: ["queue"] as const,
      registers,
      async collect() {
        const queues = await read();
        this.reset();
        for (const [queue, state] of queues) this.set({ queue }, state ? 1 : 0);
      },
    });
    // A pause (BullMQ's, e.g. from the queue dashboard) is kept in Redis, across restarts:
    // jobs keep coming and wait, nothing else says why.
    new client.Gauge({
      name: "predcache_queue_paused",
      help: "1 while the queue is paused (BullMQ pause, e.g. from /admin/queues; kept in Redis across restarts): its workers take no new job. Read at scrape time.",
      labelNames: ["queue"] as const,
      registers,
      async collect() {
        const queues = await read();
        this.reset();
        for (const [queue, state] of queues) if (state) this.set({ queue }, state.paused ? 1 : 0);
      },
    });
  }

  /**
   * An API process's serving state, reported at scrape time; returns the unregistration.
   * Which version each process serves is what a rollout is watched by: during a promote
   * a process still on the old one shows as a second series.
   */
  watchServing(state: ServingState): () => void {
    this.serving.add(state);
    return () => this.serving.delete(state);
  }

  /** Queues whose depths are reported; returns the unregistration. */
  watchQueue(name: string, queue: Queue): () => void {
    this.queues.set(name, queue);
    return () => {
      if (this.queues.get(name) === queue) this.queues.delete(name);
    };
  }

  private servingGauges(): void {
    const serving = this.serving;
    const registers = [this.registry];
    new client.Gauge({
      name: "predcache_active_version",
      help: "1 for the version of each model this process serves (its cached active version).",
      labelNames: ["model", "version"] as const,
      registers,
      collect() {
        this.reset();
        for (const state of serving)
          for (const [model, version] of state.activeVersions()) this.set({ model, version }, 1);
      },
    });
    const memory = (name: string, help: string, field: "entries" | "bytes") =>
      new client.Gauge({
        name,
        help,
        registers,
        collect() {
          let total = 0;
          for (const state of serving) total += state.memory()[field];
          this.set(total);
        },
      });
    memory(
      "predcache_l1_entries",
      "Predictions held in this process's L1 (in-process LRU).",
      "entries",
    );
    memory(
      "predcache_l1_bytes",
      "Estimated heap bytes of this process's L1, bounded by PREDCACHE_L1_MAX_BYTES.",
      "bytes",
    );
    const resident = (name: string, help: string, field: "rows" | "bytes") =>
      new client.Gauge({
        name,
        help,
        labelNames: ["model", "version"] as const,
        registers,
        collect() {
          this.reset();
          for (const state of serving)
            for (const table of state.residentTables())
              this.set({ model: table.model, version: table.version }, table[field]);
        },
      });
    resident(
      "predcache_resident_table_rows",
      "Rows of the lookup table held in memory per model.",
      "rows",
    );
    resident(
      "predcache_resident_table_bytes",
      "File bytes of the lookup table held in memory per model (bounded by PREDCACHE_RESIDENT_MAX_BYTES).",
      "bytes",
    );
  }

  /** Per model version object, its series by outcome (no key string built per answer). */
  private readonly bound = new WeakMap<ModelVersion, Map<string, AnswerSeries>>();

  /**
   * The series one answer updates, bound once per (model version, outcome): prom-client
   * hashes a label object on every update otherwise (~1.5 µs each, several per lookup).
   */
  answerSeries(model: ModelVersion, outcome: string): AnswerSeries {
    let byOutcome = this.bound.get(model);
    if (!byOutcome) {
      byOutcome = new Map();
      this.bound.set(model, byOutcome);
    }
    let series = byOutcome.get(outcome);
    if (!series) {
      const main = mainOutputOf(model.manifest).name;
      series = {
        lookups: this.lookups.labels(model.name, model.version, outcome),
        seconds: this.lookupSeconds.labels(model.name, outcome),
        misses: this.misses.labels(model.name, model.version),
        pending: this.pending.labels(model.name),
        predictions: this.predictions.labels(model.name, model.version, main),
        outOfDistribution: this.outOfDistribution.labels(model.name, model.version),
        main,
      };
      byOutcome.set(outcome, series);
    }
    return series;
  }

  /** One answered prediction: its main output into the version's distribution. */
  observePrediction(
    series: AnswerSeries,
    prediction: Prediction,
    outOfDistribution: boolean,
  ): void {
    const value = prediction[series.main];
    const number =
      typeof value === "number"
        ? value
        : value && typeof value === "object" && "probabilities" in value
          ? Math.max(
              ...Object.values((value as { probabilities: Record<string, number> }).probabilities),
            )
          : undefined;
    if (number !== undefined) series.predictions.observe(number);
    if (outOfDistribution) series.outOfDistribution.inc();
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

let shared: Metrics | undefined;

/** This process's metrics (created on first use). */
export function processMetrics(): Metrics {
  shared ??= new Metrics();
  return shared;
}
