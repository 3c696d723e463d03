/**
 * The API's side of the live queue: turns a miss into a BullMQ job whose id is derived
 * from the key, so concurrent identical misses — in this process or any other — share
 * one job and one inference. Within this process they also share one wait.
 */
import { type Job, Queue, QueueEvents } from "bullmq";
import { PredcacheError } from "../errors.ts";
import type { Prediction } from "../model/decoding.ts";
import type { ModelVersion } from "../model/registry.ts";
import type { Redis } from "../redis/connection.ts";
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

  constructor(
    commands: Redis,
    blocking: Redis,
    private readonly options: LiveClientOptions,
  ) {
    // Producer commands fail fast when Redis is away (no offline queue), as BullMQ advises for HTTP handlers.
    this.queue = new Queue<LiveJob, Prediction>(LIVE_QUEUE, {
      connection: commands,
      prefix: options.prefix,
    });
    this.events = new QueueEvents(LIVE_QUEUE, { connection: blocking, prefix: options.prefix });
  }

  async ready(): Promise<void> {
    await this.events.waitUntilReady();
  }

  submit(model: ModelVersion, key: string): LiveSubmission {
    const jobId = liveJobId(model.name, model.version, key);
    let result = this.inFlight.get(jobId);
    if (!result) {
      result = this.enqueueAndWait(jobId, { model: model.name, version: model.version, key });
      this.inFlight.set(jobId, result);
      const forget = () => this.inFlight.delete(jobId);
      result.then(forget, forget);
    }
    return { jobId, result };
  }

  private async enqueueAndWait(jobId: string, data: LiveJob): Promise<Prediction> {
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
      throw new PredcacheError(
        "redis_unavailable",
        `cannot queue the live inference: ${(error as Error).message}`,
        undefined,
        1,
      );
    }
    return (await job.waitUntilFinished(this.events, this.options.maxWaitMs)) as Prediction;
  }

  getJob(id: string): Promise<Job<LiveJob, Prediction> | undefined> {
    return this.queue.getJob(id);
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.events.close(), this.queue.close()]);
  }
}
