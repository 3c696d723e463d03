/**
 * The API's side of the live queue. Misses of one model version that arrive within a few
 * milliseconds are gathered into one job (up to batchRows keys), so the queue's per-job
 * work — scripts, events, the worker's fetch and completion — is paid once per batch.
 * Before a batch is queued its keys are claimed in Redis: a key another process (or an
 * earlier batch) is already computing is not computed again, its miss waits for that
 * batch. Within this process, concurrent identical misses share one wait.
 */
import { type Job, type Queue, QueueEvents } from "bullmq";
import { PredcacheError, redisUnavailable } from "../errors.ts";
import type { Prediction } from "../model/decoding.ts";
import type { ModelVersion } from "../model/registry.ts";
import { processMetrics } from "../observability/metrics.ts";
import { closeWithin, type Redis } from "../redis/connection.ts";
import { producerQueue } from "../redis/queue.ts";
import { claim, defineClaimScripts, failClaims, holderOf, release } from "./claims.ts";
import {
  auditJobId,
  batchJobId,
  claimKey,
  failedKey,
  LIVE_QUEUE,
  type LiveJob,
  type LiveJobName,
  type LiveResult,
  liveJobId,
  repairJobId,
} from "./jobs.ts";

export interface LiveClientOptions {
  prefix: string;
  /** Longest any request may wait for a live answer (ms). */
  maxWaitMs: number;
  /** Seconds a finished job (and its result) stays pollable. */
  keepFinishedSeconds: number;
  /** Jobs the queue may hold before new misses are refused with 503 (0: no bound). */
  maxDepth?: number;
  /** Most keys per job, and how long (ms) a batch gathers misses before it is queued. */
  batchRows?: number;
  batchWaitMs?: number;
}

/** How long a read queue depth is trusted: one Redis count per 100 ms, not per miss. */
const DEPTH_TTL_MS = 100;

export interface LiveSubmission {
  /** The key's id: what a client polls at /v1/jobs/:id. */
  jobId: string;
  /** Resolves once the key's batch is in the queue; rejects (503) when it could not be queued. */
  queued: Promise<void>;
  /** Settles with the prediction, or rejects when the job fails or maxWaitMs passes. */
  result: Promise<Prediction>;
}

/** A key's state as a poll sees it (no key while its batch is claimed but not yet queued). */
export interface KeyPoll {
  key?: string;
  state: string;
  prediction?: Prediction;
  failedReason?: string;
}

interface Waiter {
  resolve: (p: Prediction) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

interface Gathered {
  key: string;
  keyId: string;
  queued: { resolve: () => void; reject: (e: Error) => void };
}

interface Gathering {
  model: ModelVersion;
  items: Gathered[];
  timer: NodeJS.Timeout | undefined;
  /** Its wait is over, but it is held until one of the version's batches in flight lands. */
  held: boolean;
  /** When the hold began (performance.now()). */
  heldSince: number;
  /** The shortest wait of its misses' requests (ms): a hold takes at most half of it. */
  patience: number;
}

/**
 * Batches of one version this process keeps in flight at once. While they are, new misses
 * keep gathering (up to batchRows, or HOLD_FACTOR × batchWaitMs past their wait): under
 * load, batches then grow to what arrives during one inference cycle instead of splitting
 * into many small ones, each paying the queue's per-job work. With none in flight, a batch
 * leaves after its wait as before, so light traffic waits no longer.
 */
const MAX_IN_FLIGHT = 1;
/** The longest hold, in gather waits (5 ms by default: 100 ms), e.g. when no worker takes jobs. */
const HOLD_FACTOR = 20;

/**
 * How long a claim may name a batch that is not in the queue (ms). A process claims a
 * batch's keys and queues it in the next round trip, so another process can find the claim
 * before the job; past this, the holder gave up (or was stopped) before queuing it.
 */
const UNQUEUED_CLAIM_MS = 2_000;
/** How long a key stays claimed by a batch that is not done (ms): a day. */
const QUEUED_CLAIM_MS = 86_400_000;
/** Pauses between looks for a claimed batch that is not in the queue yet (ms, the last repeats). */
const LOOK_AGAIN_MS = [10, 25, 50, 100, 250];

const sleep = (ms: number) => new Promise<void>((done) => setTimeout(done, ms));

export class LiveClient {
  readonly queue: Queue<LiveJob, LiveResult>;
  private readonly events: QueueEvents;
  private readonly inFlight = new Map<
    string,
    { queued: Promise<void>; result: Promise<Prediction> }
  >();
  /** One per key (or audit) being waited for, by its id. */
  private readonly waiters = new Map<string, Waiter>();
  /** The keys each BullMQ job settles here: job id → key id → key. */
  private readonly watching = new Map<string, Map<string, string>>();
  private readonly watchedBy = new Map<string, string>();
  private readonly gathering = new Map<string, Gathering>();
  /** Batches this process queued and waits for: job id → version id, and counts by version. */
  private readonly flying = new Map<string, { version: string; timer: NodeJS.Timeout }>();
  private readonly flyingByVersion = new Map<string, number>();

  constructor(
    private readonly commands: Redis,
    blocking: Redis,
    private readonly options: LiveClientOptions,
  ) {
    // Producer commands fail fast when Redis is away (no offline queue), as BullMQ advises for HTTP handlers.
    defineClaimScripts(commands);
    this.queue = producerQueue<LiveJob, LiveResult>(LIVE_QUEUE, commands, options.prefix);
    this.events = new QueueEvents(LIVE_QUEUE, { connection: blocking, prefix: options.prefix });
    this.events.on("error", () => {
      // Connection errors surface as 503s on the requests that need Redis; it reconnects by itself.
    });
    // Two listeners for all waits (not one per miss): completed/failed events settle them.
    this.events.on("completed", ({ jobId, returnvalue }) => {
      if (!this.watching.has(jobId)) return;
      const value =
        typeof returnvalue === "string"
          ? (JSON.parse(returnvalue) as LiveResult)
          : (returnvalue as unknown as LiveResult);
      this.completed(jobId, value);
    });
    this.events.on("failed", ({ jobId, failedReason }) => {
      if (!this.watching.has(jobId)) return;
      // A failed attempt that will be retried is not the end: wait for the next outcome.
      void this.queue.getJob(jobId).then(
        async (job) => {
          if (!job || (await job.isFailed())) this.failed(jobId, failedReason);
        },
        () => {},
      );
    });
  }

  async ready(): Promise<void> {
    await this.events.waitUntilReady();
  }

  /** `waitMs`: how long the asking request waits for the answer (a held batch leaves in time). */
  submit(model: ModelVersion, key: string, waitMs = this.options.maxWaitMs): LiveSubmission {
    const keyId = liveJobId(model.name, model.version, key);
    const running = this.inFlight.get(keyId);
    if (running) {
      processMetrics().coalesced.inc({ model: model.name });
      // Its key may be in a batch still gathering: that batch must not outwait this request.
      this.hurry(`${model.name}@${model.version}`, waitMs);
      // Nor may the shared wait end on the first asker's clock: this one waits its own.
      this.prolong(keyId);
      return { jobId: keyId, ...running };
    }
    // Listen before queuing, so a batch finishing right away is not missed.
    const result = this.waitFor(keyId);
    const queued = this.gather(model, key, keyId, waitMs);
    return { jobId: keyId, ...this.track(keyId, queued, result) };
  }

  /**
   * Recomputes a key with the live model for the cache audit: an "audit" job of its own,
   * which the worker runs like a miss but does not store, behind every miss (priority),
   * not retried and not kept. Rejects when refused, failed or not done within maxWaitMs.
   */
  recompute(model: ModelVersion, key: string): Promise<Prediction> {
    const jobId = auditJobId(model.name, model.version, key);
    const running = this.inFlight.get(jobId);
    if (running) return running.queued.then(() => running.result);
    const result = this.waitFor(jobId);
    this.watch(jobId, [{ keyId: jobId, key }]);
    const queued = this.add("audit", jobId, model, [key], {
      priority: 1,
      attempts: 1,
      removeOnComplete: true,
      removeOnFail: true,
    });
    const { queued: q, result: r } = this.track(jobId, queued, result);
    return q.then(() => r);
  }

  /**
   * Queues a "repair" job for a key whose stored value did not decode: the worker computes
   * it and stores the answer over the damaged value. Not waited for and not retried; while
   * one is queued for the key, another is not (its id is the key's). Failures are the
   * caller's to log: a lookup goes on as a miss either way.
   */
  repair(model: ModelVersion, key: string): Promise<void> {
    return this.add("repair", repairJobId(model.name, model.version, key), model, [key], {
      priority: 1,
      attempts: 1,
      removeOnComplete: true,
      removeOnFail: true,
    });
  }

  /**
   * The key id's batch and its state, for polls: the batch claiming it, else the last one
   * that failed it (while that is kept); undefined when there is neither.
   */
  async poll(keyId: string): Promise<KeyPoll | undefined> {
    const claimed = await holderOf(
      this.commands,
      claimKey(this.options.prefix, keyId),
      this.olderClaimTtlMs(),
    );
    const holder =
      claimed?.holder ?? (await this.commands.get(failedKey(this.options.prefix, keyId)));
    if (!holder) return undefined;
    let job = await this.queue.getJob(holder);
    // Claimed a moment ago and about to be queued (another process may have answered 202).
    if (!job)
      return claimed && claimed.ageMs < UNQUEUED_CLAIM_MS ? { state: "waiting" } : undefined;
    const { model, version, keys } = job.data;
    const key = keys.find((k) => liveJobId(model, version, k) === keyId);
    if (key === undefined) return undefined;
    const state = await job.getState();
    // The job was read before its state: one that finished in between is read again.
    if ((state === "completed" || state === "failed") && job.finishedOn === undefined)
      job = (await this.queue.getJob(holder)) ?? job;
    const prediction = state === "completed" ? job.returnvalue?.[key] : undefined;
    return {
      key,
      state,
      ...(prediction ? { prediction } : {}),
      ...(job.failedReason ? { failedReason: job.failedReason } : {}),
    };
  }

  private track(
    id: string,
    queued: Promise<void>,
    result: Promise<Prediction>,
  ): { queued: Promise<void>; result: Promise<Prediction> } {
    queued.catch((error: Error) => this.settle(id, { error }));
    const submission = { queued, result };
    this.inFlight.set(id, submission);
    const forget = () => this.inFlight.delete(id);
    result.then(forget, forget);
    return submission;
  }

  /** Adds a miss to its version's batch; resolves once that batch is queued. */
  private gather(model: ModelVersion, key: string, keyId: string, waitMs: number): Promise<void> {
    const id = `${model.name}@${model.version}`;
    let batch = this.gathering.get(id);
    if (!batch) {
      batch = { model, items: [], timer: undefined, held: false, heldSince: 0, patience: waitMs };
      this.gathering.set(id, batch);
    }
    const gathering = batch;
    const queued = new Promise<void>((resolve, reject) => {
      gathering.items.push({ key, keyId, queued: { resolve, reject } });
    });
    if (gathering.items.length >= (this.options.batchRows ?? 1)) this.flush(id);
    else if (!gathering.timer)
      gathering.timer = setTimeout(() => this.waited(id), this.options.batchWaitMs ?? 0);
    else this.hurry(id, waitMs);
    return queued;
  }

  /** How long a batch may be held: half the shortest wait of its requests, at most the cap. */
  private holdFor(batch: Gathering): number {
    return Math.min(HOLD_FACTOR * (this.options.batchWaitMs ?? 0), batch.patience / 2);
  }

  /**
   * A request waiting `waitMs` joined the version's gathering batch: a held batch leaves
   * when what is left of its hold is used up (at once for wait=0, which asks for its 202 now).
   */
  private hurry(id: string, waitMs: number): void {
    const batch = this.gathering.get(id);
    if (!batch || waitMs >= batch.patience) return;
    batch.patience = waitMs;
    if (!batch.held) return;
    const left = this.holdFor(batch) - (performance.now() - batch.heldSince);
    if (batch.timer) clearTimeout(batch.timer);
    if (left < 1) this.flush(id);
    else batch.timer = setTimeout(() => this.flush(id), left);
  }

  /** A batch's wait is over: it leaves now, or is held while the version has one in flight. */
  private waited(id: string): void {
    const batch = this.gathering.get(id);
    if (!batch) return;
    const hold = this.holdFor(batch);
    if ((this.flyingByVersion.get(id) ?? 0) < MAX_IN_FLIGHT || hold < 1) {
      this.flush(id);
    } else {
      batch.held = true;
      batch.heldSince = performance.now();
      batch.timer = setTimeout(() => this.flush(id), hold);
    }
  }

  private takeOff(version: string, jobId: string): void {
    // Its waits end by maxWaitMs whatever happens: so does its place in flight.
    const timer = setTimeout(() => this.landed(jobId), this.options.maxWaitMs);
    timer.unref();
    this.flying.set(jobId, { version, timer });
    this.flyingByVersion.set(version, (this.flyingByVersion.get(version) ?? 0) + 1);
  }

  /** One of our batches finished (or failed, or was given up on): a held batch may leave. */
  private landed(jobId: string): void {
    const flight = this.flying.get(jobId);
    if (!flight) return;
    this.flying.delete(jobId);
    clearTimeout(flight.timer);
    const left = (this.flyingByVersion.get(flight.version) ?? 1) - 1;
    if (left > 0) this.flyingByVersion.set(flight.version, left);
    else this.flyingByVersion.delete(flight.version);
    if (this.gathering.get(flight.version)?.held) this.flush(flight.version);
  }

  private flush(id: string): void {
    const batch = this.gathering.get(id);
    if (!batch) return;
    this.gathering.delete(id);
    if (batch.timer) clearTimeout(batch.timer);
    void this.dispatch(batch.model, batch.items);
  }

  /**
   * Claims the batch's keys, waits on others' batches for the keys they hold, and queues
   * the ones it holds now, unless the queue is past its bound: then those alone are
   * refused (a key already queued is followed, however full the queue, as asking again
   * adds nothing to it).
   */
  private async dispatch(model: ModelVersion, items: Gathered[]): Promise<void> {
    let pending = items;
    try {
      const batchId = batchJobId(model.name, model.version, this.claimTtlMs());
      let holders: (string | undefined)[];
      try {
        holders = await claim(
          this.commands,
          batchId,
          items.map((item) => claimKey(this.options.prefix, item.keyId)),
          this.claimTtlMs(),
        );
      } catch (error) {
        throw unavailable(error);
      }
      const ours = items.filter((_, i) => holders[i] === undefined);
      const elsewhere = new Map<string, Gathered[]>();
      items.forEach((item, i) => {
        const holder = holders[i];
        if (holder === undefined) return;
        elsewhere.set(holder, [...(elsewhere.get(holder) ?? []), item]);
      });
      for (const [holder, group] of elsewhere) {
        processMetrics().coalesced.inc({ model: model.name }, group.length);
        this.watch(holder, group);
        void this.follow(holder, model);
        for (const item of group) item.queued.resolve();
      }
      pending = ours;
      if (ours.length === 0) return;
      try {
        await this.checkDepth();
      } catch (error) {
        await this.releaseClaims(batchId, ours).catch(() => {});
        throw error;
      }
      this.watch(batchId, ours);
      this.takeOff(`${model.name}@${model.version}`, batchId);
      await this.add(
        "predict",
        batchId,
        model,
        ours.map((item) => item.key),
        {
          attempts: 3,
          backoff: { type: "exponential", delay: 100 },
          removeOnComplete: { age: this.options.keepFinishedSeconds },
          removeOnFail: { age: this.options.keepFinishedSeconds },
        },
      ).catch(async (error: Error) => {
        this.landed(batchId);
        await this.releaseClaims(batchId, ours).catch(() => {});
        throw error;
      });
      for (const item of ours) item.queued.resolve();
    } catch (error) {
      for (const item of pending) item.queued.reject(error as Error);
    }
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

  /** A bounded queue: past the bound, misses are refused (503) instead of piling up. */
  private async checkDepth(): Promise<void> {
    const max = this.options.maxDepth ?? 0;
    if (max <= 0) return;
    const depth = await this.depth().catch(() => 0);
    if (depth >= max)
      throw new PredcacheError(
        "overloaded",
        `the live model has ${depth} batches of misses waiting: retry shortly`,
        { depth, max },
        1,
      );
  }

  private async add(
    name: LiveJobName,
    jobId: string,
    model: ModelVersion,
    keys: string[],
    options: Parameters<Queue["add"]>[2],
  ): Promise<void> {
    try {
      await this.queue.add(
        name,
        { model: model.name, version: model.version, keys },
        { ...options, jobId },
      );
    } catch (error) {
      this.unwatch(jobId);
      throw unavailable(error);
    }
  }

  private watch(jobId: string, items: readonly { keyId: string; key: string }[]): void {
    let keys = this.watching.get(jobId);
    if (!keys) {
      keys = new Map();
      this.watching.set(jobId, keys);
    }
    for (const { keyId, key } of items) {
      keys.set(keyId, key);
      this.watchedBy.set(keyId, jobId);
    }
  }

  /** Stops watching a job; returns what it was watched for. */
  private unwatch(jobId: string): Map<string, string> {
    const keys = this.watching.get(jobId) ?? new Map<string, string>();
    this.watching.delete(jobId);
    for (const keyId of keys.keys())
      if (this.watchedBy.get(keyId) === jobId) this.watchedBy.delete(keyId);
    return keys;
  }

  private completed(jobId: string, result: LiveResult | undefined): void {
    this.landed(jobId);
    for (const [keyId, key] of this.unwatch(jobId)) {
      const prediction = result?.[key];
      if (prediction) this.settle(keyId, { value: prediction });
      // The worker answered the job's other keys: the model failed on this one alone.
      else this.settle(keyId, { error: new Error(`job ${jobId} failed this key alone`) });
    }
  }

  private failed(jobId: string, reason: string): void {
    this.landed(jobId);
    const keys = this.unwatch(jobId);
    // The live worker marked the keys failed and gave up the claims before it failed the
    // job (worker.ts); done again here (the same step) for workers of an older release.
    // An audit job watches its own id: no claim, no mark.
    const keyIds = [...keys.keys()].filter((keyId) => keyId !== jobId);
    void failClaims(
      this.commands,
      jobId,
      keyIds.map((keyId) => claimKey(this.options.prefix, keyId)),
      keyIds.map((keyId) => failedKey(this.options.prefix, keyId)),
      this.options.keepFinishedSeconds * 1000,
    ).catch(() => {});
    for (const keyId of keys.keys()) this.settle(keyId, { error: new Error(reason) });
  }

  private claimTtlMs(): number {
    return claimTtlMs(this.options);
  }

  /**
   * The time to live a claim whose batch id names none was set with: a process of an older
   * release, which claimed a key for as long as its answer would be pollable.
   */
  private olderClaimTtlMs(): number {
    return this.options.keepFinishedSeconds * 1000 + this.options.maxWaitMs;
  }

  /** Batches of other processes being looked for (one loop each, whatever waits on it). */
  private readonly following = new Set<string>();

  /**
   * Waits on another batch for the keys watched under it. One that finished before this
   * process watched it sends no event, so it is settled from the queue. One not queued yet
   * is looked for again; once its claims are gone or too old to be queued still, this
   * process computes the keys itself.
   */
  private async follow(holder: string, model: ModelVersion) {
    if (this.following.has(holder)) return;
    this.following.add(holder);
    try {
      for (let look = 0; ; look++) {
        const job: Job<LiveJob, LiveResult> | undefined = await this.queue.getJob(holder);
        if (job) return await this.settleIfFinished(holder, job);
        const waiting = [...(this.watching.get(holder) ?? [])].map(([keyId, key]) => ({
          keyId,
          key,
        }));
        if (waiting.length === 0) return;
        const first = waiting[0] as { keyId: string; key: string };
        const claimed = await holderOf(
          this.commands,
          claimKey(this.options.prefix, first.keyId),
          this.olderClaimTtlMs(),
        );
        if (claimed?.holder !== holder || claimed.ageMs >= UNQUEUED_CLAIM_MS)
          return await this.takeOver(holder, model, waiting);
        await sleep(LOOK_AGAIN_MS[Math.min(look, LOOK_AGAIN_MS.length - 1)] as number);
      }
    } catch {
      // Redis away: the waits time out by themselves.
    } finally {
      this.following.delete(holder);
    }
  }

  private async settleIfFinished(jobId: string, job: Job<LiveJob, LiveResult>): Promise<void> {
    if (job.finishedOn === undefined) return;
    if (job.failedReason && (await job.isFailed())) this.failed(jobId, job.failedReason);
    else if (job.returnvalue) this.completed(jobId, job.returnvalue);
  }

  /**
   * `holder` was never queued: its claims on `items` are released (those it still holds)
   * and the keys gathered again, into a batch of this process or behind a newer claim.
   */
  private async takeOver(
    holder: string,
    model: ModelVersion,
    items: readonly { keyId: string; key: string }[],
  ) {
    const keys = this.watching.get(holder);
    for (const item of items) {
      keys?.delete(item.keyId);
      this.watchedBy.delete(item.keyId);
    }
    if (keys?.size === 0) this.watching.delete(holder);
    await this.releaseClaims(holder, items);
    for (const item of items) {
      if (!this.waiters.has(item.keyId)) continue;
      // Wait 0: its request has waited already, so its batch is not held for others.
      this.gather(model, item.key, item.keyId, 0).catch((error: Error) =>
        this.settle(item.keyId, { error }),
      );
    }
  }

  private releaseClaims(batchId: string, items: readonly { keyId: string }[]): Promise<number> {
    return release(
      this.commands,
      batchId,
      items.map((item) => claimKey(this.options.prefix, item.keyId)),
    );
  }

  /**
   * One promise per key, settled from the shared QueueEvents listeners, or maxWaitMs after
   * the last request that joined it (each request bounds its own wait within that).
   */
  private waitFor(id: string): Promise<Prediction> {
    return new Promise<Prediction>((resolve, reject) => {
      this.waiters.set(id, { resolve, reject, timer: this.timeout(id) });
    });
  }

  private timeout(id: string): NodeJS.Timeout {
    return setTimeout(
      () => this.settle(id, { error: timedOut(id) }),
      this.released ? 0 : this.options.maxWaitMs,
    );
  }

  /** A request joined the key's wait: it lasts up to maxWaitMs from now. */
  private prolong(id: string): void {
    const waiter = this.waiters.get(id);
    if (!waiter) return;
    clearTimeout(waiter.timer);
    waiter.timer = this.timeout(id);
  }

  private released = false;

  /**
   * At shutdown: lookups waiting for a live answer stop waiting now, and later ones do not
   * wait; each answers as a wait that ran out does (202 with its job, which goes on in
   * Redis without this process). Waits of up to PREDCACHE_WAIT_MAX_MS would otherwise hold
   * the drain past its bound, and their clients would get no answer at all.
   */
  release(): void {
    this.released = true;
    for (const id of [...this.waiters.keys()]) this.settle(id, { error: timedOut(id) });
  }

  private settle(id: string, outcome: { value: Prediction } | { error: Error }): void {
    const waiter = this.waiters.get(id);
    if (!waiter) return;
    this.waiters.delete(id);
    clearTimeout(waiter.timer);
    const jobId = this.watchedBy.get(id);
    if (jobId) {
      this.watchedBy.delete(id);
      const keys = this.watching.get(jobId);
      keys?.delete(id);
      if (keys?.size === 0) this.watching.delete(jobId);
    }
    if ("value" in outcome) waiter.resolve(outcome.value);
    else waiter.reject(outcome.error);
  }

  async close(): Promise<void> {
    for (const id of [...this.gathering.keys()]) this.flush(id);
    for (const jobId of [...this.flying.keys()]) this.landed(jobId);
    await Promise.allSettled([closeWithin(this.events.close()), this.queue.close()]);
  }
}

function timedOut(id: string): Error {
  return new Error(`job ${id} timed out before finishing`);
}

/**
 * Time to live a claim is set with (ms): long enough for its batch to wait in the queue
 * (paused, or behind a backlog) and run; the worker shortens it to the keep time once the
 * batch is done (claims.ts). A batch gone meanwhile is taken over (follow), not waited on.
 */
export function claimTtlMs(options: Pick<LiveClientOptions, "keepFinishedSeconds" | "maxWaitMs">) {
  return Math.max(QUEUED_CLAIM_MS, options.keepFinishedSeconds * 1000 + options.maxWaitMs);
}

const unavailable = (error: unknown) =>
  redisUnavailable(error, "cannot queue the live inference: retry shortly");
