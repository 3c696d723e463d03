/**
 * The API's side of the live queue: turns a miss into a BullMQ job whose id is derived
 * from the key, so concurrent identical misses — in this process or any other — share
 * one job and one inference. Within this process they also share one wait.
 */
import { type Job, type Queue, QueueEvents } from "bullmq";
import { PredcacheError } from "../errors.ts";
import type { Prediction } from "../model/decoding.ts";
import type { ModelVersion } from "../model/registry.ts";
import { processMetrics } from "../observability/metrics.ts";
import { closeWithin, type Redis } from "../redis/connection.ts";
import { producerQueue } from "../redis/queue.ts";
import { auditJobId, LIVE_QUEUE, type LiveJob, type LiveJobName, liveJobId } from "./jobs.ts";

export interface LiveClientOptions {
  prefix: string;
  /** Longest any request may wait for a live answer (ms). */
  maxWaitMs: number;
  /** Seconds a finished job (and its result) stays pollable. */
  keepFinishedSeconds: number;
  /** Misses the queue may hold before new ones are refused with 503 (0: no bound). */
  maxDepth?: number;
}

/** How long a read queue depth is trusted: one Redis count per 100 ms, not per miss. */
const DEPTH_TTL_MS = 100;

export interface LiveSubmission {
  jobId: string;
  /** Resolves once the job is in the queue; rejects (503) when it could not be queued. */
  queued: Promise<void>;
  /** Settles with the prediction, or rejects when the job fails or maxWaitMs passes. */
  result: Promise<Prediction>;
}

export class LiveClient {
  readonly queue: Queue<LiveJob, Prediction>;
  private readonly events: QueueEvents;
  private readonly inFlight = new Map<
    string,
    { queued: Promise<void>; result: Promise<Prediction> }
  >();
  private readonly waiters = new Map<
    string,
    { resolve: (p: Prediction) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }
  >();

  constructor(
    commands: Redis,
    blocking: Redis,
    private readonly options: LiveClientOptions,
  ) {
    // Producer commands fail fast when Redis is away (no offline queue), as BullMQ advises for HTTP handlers.
    this.queue = producerQueue<LiveJob, Prediction>(LIVE_QUEUE, commands, options.prefix);
    this.events = new QueueEvents(LIVE_QUEUE, { connection: blocking, prefix: options.prefix });
    this.events.on("error", () => {
      // Connection errors surface as 503s on the requests that need Redis; it reconnects by itself.
    });
    // Two listeners for all waits (not one per miss): completed/failed events settle them.
    this.events.on("completed", ({ jobId, returnvalue }) => {
      const value =
        typeof returnvalue === "string"
          ? (JSON.parse(returnvalue) as Prediction)
          : (returnvalue as unknown as Prediction);
      this.settle(jobId, { value });
    });
    this.events.on("failed", ({ jobId, failedReason }) => {
      // A failed attempt that will be retried is not the end: wait for the next outcome.
      void this.queue.getJob(jobId).then(
        async (job) => {
          if (!job || (await job.isFailed()))
            this.settle(jobId, { error: new Error(failedReason) });
        },
        () => {},
      );
    });
  }

  async ready(): Promise<void> {
    await this.events.waitUntilReady();
  }

  submit(model: ModelVersion, key: string): LiveSubmission {
    const jobId = liveJobId(model.name, model.version, key);
    const running = this.inFlight.get(jobId);
    if (running) {
      processMetrics().coalesced.inc({ model: model.name });
      return { jobId, ...running };
    }
    return { jobId, ...this.start("predict", jobId, model, key) };
  }

  /**
   * Recomputes a key with the live model for the cache audit: an "audit" job, which the
   * worker runs like a miss but does not store. Rejects when refused (queue bound, Redis
   * away), failed or not done within maxWaitMs.
   */
  recompute(model: ModelVersion, key: string): Promise<Prediction> {
    const jobId = auditJobId(model.name, model.version, key);
    const { queued, result } = this.inFlight.get(jobId) ?? this.start("audit", jobId, model, key);
    return queued.then(() => result);
  }

  private start(
    name: LiveJobName,
    jobId: string,
    model: ModelVersion,
    key: string,
  ): { queued: Promise<void>; result: Promise<Prediction> } {
    // Listen before adding, so a job finishing right away is not missed.
    const result = this.waitFor(jobId);
    const queued = this.enqueue(name, jobId, {
      model: model.name,
      version: model.version,
      key,
    });
    queued.catch((error: Error) => this.settle(jobId, { error }));
    const submission = { queued, result };
    this.inFlight.set(jobId, submission);
    const forget = () => this.inFlight.delete(jobId);
    result.then(forget, forget);
    return submission;
  }

  private depthRead: { at: number; depth: Promise<number> } | undefined;

  /** Jobs waiting for a live worker (cached for DEPTH_TTL_MS). */
  private depth(): Promise<number> {
    const now = Date.now();
    if (!this.depthRead || now - this.depthRead.at > DEPTH_TTL_MS) {
      const depth = this.queue
        .getJobCounts("waiting", "prioritized", "delayed")
        .then((c) => (c.waiting ?? 0) + (c.prioritized ?? 0) + (c.delayed ?? 0));
      this.depthRead = { at: now, depth };
      depth.catch(() => {
        this.depthRead = undefined;
      });
    }
    return this.depthRead.depth;
  }

  /** Adds the job (refusing it past maxDepth); rejects with a PredcacheError (503). */
  private async enqueue(name: LiveJobName, jobId: string, data: LiveJob): Promise<void> {
    const max = this.options.maxDepth ?? 0;
    if (max > 0) {
      // A bounded queue: past the bound, misses are refused instead of piling up.
      const depth = await this.depth().catch(() => 0);
      if (depth >= max)
        throw new PredcacheError(
          "overloaded",
          `the live model has ${depth} misses waiting: retry shortly`,
          { depth, max },
          1,
        );
    }
    let job: Job<LiveJob, Prediction>;
    try {
      job = await this.queue.add(name, data, {
        jobId,
        // Audits wait behind every miss (BullMQ takes unprioritized jobs first), are not
        // retried, and are not kept: a kept one would be returned, not rerun, by the next
        // audit of the key (add() of an existing id reports no finishedOn).
        ...(name === "audit"
          ? { priority: 1, attempts: 1, removeOnComplete: true, removeOnFail: true }
          : {
              attempts: 3,
              backoff: { type: "exponential", delay: 100 },
              removeOnComplete: { age: this.options.keepFinishedSeconds },
              removeOnFail: { age: this.options.keepFinishedSeconds },
            }),
      });
    } catch (error) {
      throw new PredcacheError(
        "redis_unavailable",
        `cannot queue the live inference: ${(error as Error).message}`,
        undefined,
        1,
      );
    }
    // An identical job that already finished is returned as it is, with no new event.
    if (job.finishedOn) {
      if (job.failedReason) this.settle(jobId, { error: new Error(job.failedReason) });
      else this.settle(jobId, { value: job.returnvalue });
    }
  }

  /** One promise per job, settled from the shared QueueEvents listeners (or after maxWaitMs). */
  private waitFor(jobId: string): Promise<Prediction> {
    return new Promise<Prediction>((resolve, reject) => {
      const timer = setTimeout(
        () => this.settle(jobId, { error: new Error(`job ${jobId} timed out before finishing`) }),
        this.options.maxWaitMs,
      );
      this.waiters.set(jobId, { resolve, reject, timer });
    });
  }

  private settle(jobId: string, outcome: { value: Prediction } | { error: Error }): void {
    const waiter = this.waiters.get(jobId);
    if (!waiter) return;
    this.waiters.delete(jobId);
    clearTimeout(waiter.timer);
    if ("value" in outcome) waiter.resolve(outcome.value);
    else waiter.reject(outcome.error);
  }

  getJob(id: string): Promise<Job<LiveJob, Prediction> | undefined> {
    return this.queue.getJob(id);
  }

  async close(): Promise<void> {
    await Promise.allSettled([closeWithin(this.events.close()), this.queue.close()]);
  }
}
