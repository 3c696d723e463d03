/**
 * The live worker: takes batches of misses off the live queue, micro-batches the rows of
 * the jobs it holds at once into one onnxruntime run per model version, writes the answers to L2 under that version's
 * keyspace, then completes the jobs (so whoever waits finds the answer in Redis too).
 * Audit jobs run the same way but are not written: the audit compares, it never repairs.
 */
import { type Job, UnrecoverableError, Worker } from "bullmq";
import type { PredictionStore } from "../cache/store.ts";
import { type Logger, repeatedErrors } from "../log.ts";
import type { Prediction } from "../model/decoding.ts";
import { UNKNOWN_CATEGORY } from "../model/encoding.ts";
import { InferenceThread } from "../model/inference-thread.ts";
import type { ModelRegistry, ModelVersion } from "../model/registry.ts";
import { processMetrics } from "../observability/metrics.ts";
import { closeWorkers, type Redis } from "../redis/connection.ts";
import { ItemFailed, MicroBatcher, type MicroBatcherOptions } from "./batcher.ts";
import { defineClaimScripts, failClaims, settleClaims } from "./claims.ts";
import {
  claimKey,
  failedKey,
  LIVE_QUEUE,
  type LiveJob,
  type LiveResult,
  liveJobId,
  liveJobNameSchema,
  liveJobSchema,
} from "./jobs.ts";

/** How long a failure mark or a done batch's claims last when the job names no time it is kept (s). */
const DEFAULT_KEEP_SECONDS = 300;

/** The time (s) a job is kept once it is done (`kept`: its removeOnComplete or removeOnFail). */
function keptSeconds(kept: Job["opts"]["removeOnComplete"]): number {
  return typeof kept === "object" && "age" in kept && kept.age ? kept.age : DEFAULT_KEEP_SECONDS;
}

export interface LiveWorkerOptions {
  prefix: string;
  batch: MicroBatcherOptions;
  /** Jobs held at once; at least batch.maxItems so a batch can fill. */
  concurrency: number;
  /** A job a dead worker held is taken up again once its lock (ms) lapses… */
  lockMs?: number;
  /** …at the next stalled-jobs check (ms). */
  stalledIntervalMs?: number;
  /** Intra-op threads of each version's inference thread. */
  inferenceThreads?: number;
}

interface Row {
  key: string;
  row: number[];
  /** False for audit jobs. */
  store: boolean;
}

/**
 * A key an API process of an older release sends during a rolling deploy, from before
 * flagged values were keyed as the model sees them: an unknown category as asked (now
 * "*"), or a number past a bound as asked (now the bound ± 1). Its row is the canonical
 * key's, so it is computed, and answered under the key it was asked by.
 */
function keyedByOlderApi(
  key: string,
  canonical: { key: string; outOfDistribution: readonly string[] },
  featureNames: readonly string[],
): boolean {
  const asked = JSON.parse(key) as unknown[];
  const values = JSON.parse(canonical.key) as unknown[];
  return (
    asked.length === values.length &&
    values.every(
      (v, i) =>
        v === asked[i] ||
        v === UNKNOWN_CATEGORY ||
        (typeof v === "number" &&
          typeof asked[i] === "number" &&
          canonical.outOfDistribution.includes(featureNames[i] as string)),
    )
  );
}

const idOf = (model: ModelVersion) => `${model.name}@${model.version}`;

export class LiveWorker {
  readonly worker: Worker<LiveJob, LiveResult>;
  private readonly batchers = new Map<string, MicroBatcher<Row, Prediction>>();

  constructor(
    blocking: Redis,
    /** For the claims of done and failed batches. */
    private readonly commands: Redis,
    private readonly registry: ModelRegistry,
    private readonly store: PredictionStore,
    private readonly log: Logger,
    private readonly options: LiveWorkerOptions,
  ) {
    defineClaimScripts(commands);
    this.worker = new Worker<LiveJob, LiveResult>(LIVE_QUEUE, (job) => this.process(job), {
      connection: blocking,
      prefix: options.prefix,
      concurrency: options.concurrency,
      ...(options.lockMs ? { lockDuration: options.lockMs } : {}),
      ...(options.stalledIntervalMs ? { stalledInterval: options.stalledIntervalMs } : {}),
    });
    this.worker.on("failed", (job, error) =>
      log.warn({ job: job?.id, err: error.message }, "live job failed"),
    );
    this.worker.on("error", repeatedErrors(log, "live worker error"));
    const outcomes = processMetrics().jobOutcomes;
    this.worker.on("completed", () => outcomes.inc({ queue: LIVE_QUEUE, outcome: "completed" }));
    this.worker.on("failed", () => outcomes.inc({ queue: LIVE_QUEUE, outcome: "failed" }));
  }

  /** Sizes of the inference batches run so far, per model version. */
  batchSizes(): Record<string, number[]> {
    return Object.fromEntries([...this.batchers].map(([id, b]) => [id, b.batchSizes]));
  }

  private async process(job: Job<LiveJob, LiveResult>): Promise<LiveResult> {
    try {
      const { result, failed } = await this.compute(job);
      if (job.name === "predict" && job.id) {
        // Keys the model failed on alone: marked failed and unclaimed before the job
        // completes without them, so their polls and waits tell of it and asking again
        // tries again; the job's other keys are answered.
        if (failed.length > 0) await this.failClaims(job, job.id, failed);
        await this.settleClaims(job, job.id);
      }
      return result;
    } catch (error) {
      const final =
        (error as Error).name === "UnrecoverableError" ||
        job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      // Before the job is failed (and its waiters told): polls of its keys then tell of
      // the failure, and the next miss of a key tries again instead of joining it.
      if (final && job.name === "predict" && job.id) await this.failClaims(job, job.id);
      throw error;
    }
  }

  /**
   * A done batch's claims last as long as the job is kept from now (claims.ts), best
   * effort: a claim left as it was set still expires, or is taken over once its job is gone.
   */
  private async settleClaims(job: Job<LiveJob, LiveResult>, batchId: string): Promise<void> {
    const { model, version, keys } = job.data;
    const claims = keys.map((key) => claimKey(this.options.prefix, liveJobId(model, version, key)));
    const keepMs = keptSeconds(job.opts.removeOnComplete) * 1000;
    await settleClaims(this.commands, batchId, claims, keepMs).catch(() => {});
  }

  /**
   * Marks a failed batch's keys (`only` those, when given) and gives up their claims
   * (claims.ts), best effort.
   */
  private async failClaims(
    job: Job<LiveJob, LiveResult>,
    batchId: string,
    only?: readonly string[],
  ): Promise<void> {
    const { model, version, keys } = job.data ?? {};
    if (!Array.isArray(keys) || typeof model !== "string" || typeof version !== "string") return;
    const keyIds = (only ?? keys).map((key) => liveJobId(model, version, key));
    await failClaims(
      this.commands,
      batchId,
      keyIds.map((keyId) => claimKey(this.options.prefix, keyId)),
      keyIds.map((keyId) => failedKey(this.options.prefix, keyId)),
      keptSeconds(job.opts.removeOnFail) * 1000,
    ).catch(() => {});
  }

  /**
   * The job's answers, and the keys that failed on their own: a key the worker cannot
   * decode, or a row the model fails on when run alone. They fail alone, not the job's
   * other keys (other clients' misses, gathered with them). When no key is answered the
   * job fails (and is tried again unless the failures can only repeat).
   */
  private async compute(
    job: Job<LiveJob, LiveResult>,
  ): Promise<{ result: LiveResult; failed: string[] }> {
    const name = liveJobNameSchema.safeParse(job.name);
    if (!name.success) throw new UnrecoverableError(`unknown live job name ${job.name}`);
    const parsed = liveJobSchema.safeParse(job.data);
    if (!parsed.success)
      throw new UnrecoverableError(`malformed live job: ${parsed.error.message}`);
    const { model: modelName, version, keys } = parsed.data;
    const model = await this.registry.resolve(modelName, version);
    if (!model) throw new UnrecoverableError(`unknown model version ${modelName}@${version}`);
    // The batcher joins this job's rows with other jobs' held at the same time.
    const batcher = this.batcherFor(model);
    const answers = await Promise.allSettled(
      keys.map((key) => {
        const row = this.rowOf(model, key, name.data !== "audit");
        return row instanceof UnrecoverableError ? Promise.reject(row) : batcher.submit(row);
      }),
    );
    const result: LiveResult = {};
    const failed: string[] = [];
    const errors: unknown[] = [];
    keys.forEach((key, i) => {
      const answer = answers[i] as PromiseSettledResult<Prediction>;
      if (answer.status === "fulfilled") result[key] = answer.value;
      else {
        failed.push(key);
        errors.push(answer.reason);
      }
    });
    // Nothing answered: the job fails, tried again if any failure may not repeat.
    if (failed.length === keys.length)
      throw errors.find((e) => !(e instanceof UnrecoverableError)) ?? errors[0];
    if (failed.length > 0)
      this.log.warn(
        {
          job: job.id,
          model: modelName,
          version,
          failedKeys: failed.length,
          of: keys.length,
          err: (errors[0] as Error).message,
        },
        "live job answered without the keys that failed alone",
      );
    return { result, failed };
  }

  /**
   * A key's row, re-derived with the shared encoding (the worker trusts no row it is
   * sent); an UnrecoverableError for a key it cannot take.
   */
  private rowOf(model: ModelVersion, key: string, store: boolean): Row | UnrecoverableError {
    let input: Record<string, unknown>;
    try {
      input = model.encoder.decodeKey(key);
    } catch (error) {
      return new UnrecoverableError((error as Error).message);
    }
    const encoded = model.encoder.encode(input);
    const canonical =
      encoded.ok &&
      (encoded.value.key === key ||
        keyedByOlderApi(key, encoded.value, model.encoder.featureNames));
    if (!canonical || !encoded.ok)
      return new UnrecoverableError(`key is not canonical for ${model.name}@${model.version}`);
    return { key, row: encoded.value.row, store };
  }

  private batcherFor(model: ModelVersion): MicroBatcher<Row, Prediction> {
    const id = idOf(model);
    let batcher = this.batchers.get(id);
    if (!batcher) {
      batcher = new MicroBatcher<Row, Prediction>(async (rows) => {
        const started = performance.now();
        const answers = await this.inferApart(
          model,
          rows.map((r) => r.row),
        );
        await this.store.put(
          model,
          rows.flatMap((r, i) => {
            const answer = answers[i];
            return r.store && !(answer instanceof ItemFailed)
              ? [{ key: r.key, prediction: answer as Prediction }]
              : [];
          }),
        );
        const metrics = processMetrics();
        metrics.liveBatchRows.observe({ model: model.name }, rows.length);
        metrics.liveBatchSeconds.observe(
          { model: model.name },
          (performance.now() - started) / 1000,
        );
        return answers;
      }, this.options.batch);
      this.batchers.set(id, batcher);
    }
    return batcher;
  }

  private readonly threads = new Map<string, Promise<InferenceThread | undefined>>();

  /**
   * Runs rows as one batch; if the run fails, each half again, down to single rows, so a
   * row the model fails on fails alone (an ItemFailed), not the rows of other misses run
   * with it. A run that fails whatever it is given fails every row (2n − 1 runs).
   */
  private async inferApart(
    model: ModelVersion,
    rows: number[][],
  ): Promise<(Prediction | ItemFailed)[]> {
    try {
      return await this.infer(model, rows);
    } catch (error) {
      if (rows.length === 1) return [new ItemFailed(error)];
      const half = Math.ceil(rows.length / 2);
      const [first, second] = await Promise.all([
        this.inferApart(model, rows.slice(0, half)),
        this.inferApart(model, rows.slice(half)),
      ]);
      return [...first, ...second];
    }
  }

  /**
   * Runs rows in the version's inference thread, off the event loop (onnxruntime-node runs
   * a session on the calling thread), so the jobs' Redis work and, under npm start, the
   * API's requests go on while the model runs. In process when no thread can be had.
   * Counted on the registry's runtime either way: its stats are the version's inferences.
   */
  private async infer(model: ModelVersion, rows: number[][]): Promise<Prediction[]> {
    const thread = await this.threadOf(model);
    const runtime = await this.registry.runtime(model);
    if (!thread || thread.failed) {
      // A dead thread is replaced on the next batch; this one runs in process.
      if (thread?.failed) this.threads.delete(idOf(model));
      return runtime.run(rows);
    }
    const predictions = await thread.run(rows);
    runtime.stats.runs++;
    runtime.stats.rows += rows.length;
    return predictions;
  }

  /** The version's inference thread, started on first use (undefined: infer in process). */
  private threadOf(model: ModelVersion): Promise<InferenceThread | undefined> {
    const id = idOf(model);
    let starting = this.threads.get(id);
    if (!starting) {
      starting = InferenceThread.start(model, {
        intraOpThreads: this.options.inferenceThreads ?? 1,
      }).catch(() => undefined);
      this.threads.set(id, starting);
    }
    return starting;
  }

  /**
   * Starts the versions' inference threads and runs one row through each, before any miss
   * needs them: otherwise the first miss of a version waits for the thread, its session
   * and onnxruntime's first run (~0.2 s for the demo model, most of the default wait) and
   * gets a 202. Not counted as inferences; a version that fails here is left to its misses.
   */
  async warm(models: readonly ModelVersion[]): Promise<void> {
    await Promise.all(
      models.map(async (model) => {
        const thread = await this.threadOf(model);
        if (!thread) return;
        try {
          await thread.run([model.manifest.encoding.features.map(() => 0)]);
          this.warmed.add(idOf(model));
        } catch {
          // Left to its misses, which start a thread again or infer in process.
        }
      }),
    );
  }

  private readonly warmed = new Set<string>();

  /** The versions ("model@version") whose threads have been warmed. */
  warmedVersions(): string[] {
    return [...this.warmed];
  }

  /** Stops taking jobs; batches running get `graceMs` (then they are left to be retried). */
  async close(graceMs = 2_000): Promise<void> {
    // Batches left running keep their threads (closed under them they would fail, not
    // stall and run again): the process is ending.
    if (!(await closeWorkers([this.worker], this.commands, graceMs))) return;
    const threads = await Promise.all(this.threads.values());
    await Promise.all(threads.map((thread) => thread?.close()));
  }
}
