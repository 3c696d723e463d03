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
import { LIVE_QUEUE, type LiveJob, liveJobId } from "./jobs.ts";

export interface LiveClientOptions {
  prefix: string;
  /** Longest any request may wait for a live answer (ms). */
  maxWaitMs: number;
  /** Seconds a finished job (and its result) stays pollable. */
  keepFinishedSeconds: number;
}

export interface LiveSubmission {
  jobId: string;
  /** Settles with the prediction, or rejects when the job fails or maxWaitMs passes. */
  result: Promise<Prediction>;
}

export class LiveClient {
  readonly queue: Queue<LiveJob, Prediction>;
  private readonly events: QueueEvents;
  private readonly inFlight = new Map<string, Promise<Prediction>>();
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
    let result = this.inFlight.get(jobId);
    if (result) processMetrics().coalesced.inc({ model: model.name });
    else {
      result = this.enqueueAndWait(jobId, { model: model.name, version: model.version, key });
      this.inFlight.set(jobId, result);
      const forget = () => this.inFlight.delete(jobId);
      result.then(forget, forget);
    }
    return { jobId, result };
  }

  private async enqueueAndWait(jobId: string, data: LiveJob): Promise<Prediction> {
    // Listen before adding, so a job finishing right away is not missed.
    const finished = this.waitFor(jobId);
    let job: Job<LiveJob, Prediction>;
    try {
      job = await this.queue.add("predict", data, {
        jobId,
        attempts: 3,
        backoff: { type: "exponential", delay: 100 },
        removeOnComplete: { age: this.options.keepFinishedSeconds },
        removeOnFail: { age: this.options.keepFinishedSeconds },
      });
    } catch (error) {
      this.settle(jobId, {
        error: new PredcacheError(
          "redis_unavailable",
          `cannot queue the live inference: ${(error as Error).message}`,
          undefined,
          1,
        ),
      });
      return finished;
    }
    // An identical job that already finished is returned as it is, with no new event.
    if (job.finishedOn) {
      if (job.failedReason) this.settle(jobId, { error: new Error(job.failedReason) });
      else this.settle(jobId, { value: job.returnvalue });
    }
    return finished;
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
