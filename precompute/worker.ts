/**
 * The precompute worker. Run jobs plan and finish; chunk jobs do the work: encode with
 * the shared encoding, skip keys the version already has, run onnxruntime in batches,
 * write with pipelined Redis writes, record the chunk's keys for the table builder.
 * Chunks are idempotent (same keys, same values, counted once), so a retried, duplicated
 * or stalled-and-resumed chunk changes nothing; a run finishes — and promotes — only
 * once every chunk has succeeded.
 */

import { Job, type Queue, UnrecoverableError, WaitingChildrenError, Worker } from "bullmq";
import { AuditLog } from "../src/admin/audit.ts";
import type { Keys } from "../src/cache/keys.ts";
import type { PredictionStore } from "../src/cache/store.ts";
import { type Logger, repeatedErrors } from "../src/log.ts";
import { ActiveMovedError, switchActiveVersion } from "../src/model/active.ts";
import type { Prediction } from "../src/model/decoding.ts";
import { folderGone } from "../src/model/folder-gone.ts";
import { InferenceThread } from "../src/model/inference-thread.ts";
import type { ModelRegistry, ModelVersion } from "../src/model/registry.ts";
import { processMetrics } from "../src/observability/metrics.ts";
import { closeWithin, closeWorkers, type Redis } from "../src/redis/connection.ts";
import { withLock } from "../src/redis/lock.ts";
import { producerQueue } from "../src/redis/queue.ts";
import { buildTable } from "../src/table/builder.ts";
import { parseTable, TableFormatError, type TableView, verifyTable } from "../src/table/format.ts";
import { keyHashInto } from "../src/table/key-hash.ts";
import {
  clearRebuild,
  markRebuild,
  rebuildMarked,
  storedKeys,
} from "../src/table/rebuild-marks.ts";
import type { TableInfo, TableStore } from "../src/table/store.ts";
import { describeSource, openSource, type RawInput, type SourceContext } from "./inputs/index.ts";
import { checkInputs, describeInvalid, type InputCheck } from "./inputs/validate.ts";
import { RunStore } from "./runs.ts";
import {
  CHUNK_QUEUE,
  type ChunkJob,
  chunkJobSchema,
  RUN_QUEUE,
  type RunJob,
  runJobSchema,
} from "./spec.ts";

export interface PrecomputeWorkerOptions {
  queuePrefix: string;
  /** Rows per onnxruntime run inside a chunk. */
  inferBatch: number;
  /** Chunks one worker processes at once. */
  concurrency: number;
  /** Lock held on a job; a worker silent for this long is presumed dead. */
  lockMs: number;
  /** How often stalled jobs (of dead workers) are looked for and handed out again. */
  stalledIntervalMs: number;
  /** onnxruntime intra-op threads of the inference thread (PREDCACHE_ONNX_THREADS). */
  inferenceThreads?: number;
}

const ENDED = new Set(["completed", "failed", "cancelled"]);

/** The table a build started from is no longer the newest: build again on the newest. */
class BaseMovedError extends Error {
  override readonly name = "BaseMovedError";
}
/**
 * A model's table lock: renewed while a build runs, freed 30 s after a holder died; a run
 * waits up to 15 min for builds ahead of it, then its finish step fails and is retried.
 */
const TABLE_LOCK = { ttlMs: 30_000, waitMs: 15 * 60_000 };

/** Batches of a chunk between their keyspace check and their write at any moment. */
const BATCHES_IN_FLIGHT = 3;

/** Runs a batch of feature rows: the inference thread, or the in-process runtime. */
type Inference = Pick<InferenceThread, "run">;

/** At most `size` holders at once; the others wait their turn, first come first served. */
class Gate {
  private readonly waiting: (() => void)[] = [];
  private free: number;
  constructor(size: number) {
    this.free = size;
  }

  async enter(): Promise<void> {
    if (this.free > 0) this.free--;
    else await new Promise<void>((turn) => this.waiting.push(turn));
  }

  leave(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.free++;
  }
}

/** A job's failure that will not be retried. */
function isFinalAttempt(job: Job, error: Error): boolean {
  return error.name === "UnrecoverableError" || job.attemptsMade >= (job.opts.attempts ?? 1);
}

/** A chunk's failure as its run records it: the chunk named, then its cause. */
function chunkFailure(index: number, message: string): string {
  return message.startsWith(`chunk ${index},`) ? message : `chunk ${index} failed: ${message}`;
}

/**
 * Why a run failed, from its job's error. A chunk's final failure fails the run's job too
 * (failParentOnFailure), as "child <chunk job key> failed", which names no cause: the
 * chunk's own reason is read instead. The run's and the chunk's failed handlers race to
 * record the reason (the first is kept), so both must give the cause.
 */
export async function runFailure(chunks: Queue<ChunkJob>, error: Error): Promise<string> {
  const key = /^child (.+) failed$/.exec(error.message)?.[1];
  const prefix = `${chunks.qualifiedName}:`;
  if (!key?.startsWith(prefix)) return error.message;
  const chunk = await Job.fromId<ChunkJob>(chunks, key.slice(prefix.length)).catch(() => undefined);
  return chunk?.failedReason ? chunkFailure(chunk.data.index, chunk.failedReason) : error.message;
}

/** The newest table of `target` (its version and encoding), but those passed over. */
async function newestTable(
  tables: TableStore,
  target: ModelVersion,
  passedOver: ReadonlySet<string>,
): Promise<TableInfo | undefined> {
  return (await tables.list(target.name)).find(
    (t) =>
      t.modelVersion === target.version &&
      t.encodingHash === target.encoder.hash &&
      !passedOver.has(t.generation),
  );
}

export class PrecomputeWorker {
  readonly runWorker: Worker<RunJob>;
  readonly chunkWorker: Worker<ChunkJob>;
  private readonly chunkQueue: Queue<ChunkJob>;
  private readonly runQueue: Queue<RunJob>;
  private readonly runs: RunStore;
  private readonly lanes = new Map<string, Promise<Inference>>();
  /** Chunks sending batches to inference at once (`concurrency`); see processChunk. */
  private readonly inferring: Gate;

  constructor(
    private readonly redis: Redis,
    blocking: Redis,
    private readonly keys: Keys,
    private readonly registry: ModelRegistry,
    private readonly store: PredictionStore,
    private readonly log: Logger,
    private readonly options: PrecomputeWorkerOptions,
    private readonly tables: TableStore | undefined,
  ) {
    this.runs = new RunStore(redis, keys);
    this.inferring = new Gate(options.concurrency);
    const common = {
      connection: blocking,
      prefix: options.queuePrefix,
      lockDuration: options.lockMs,
      stalledInterval: options.stalledIntervalMs,
      maxStalledCount: 10,
    };
    this.chunkQueue = producerQueue<ChunkJob>(CHUNK_QUEUE, redis, options.queuePrefix);
    this.runQueue = producerQueue<RunJob>(RUN_QUEUE, redis, options.queuePrefix);
    this.runWorker = new Worker<RunJob>(RUN_QUEUE, (job, token) => this.processRun(job, token), {
      ...common,
      concurrency: 4,
    });
    // One chunk more than `concurrency` is taken: it is fetched, validated and encoded
    // while the others infer, and queues its batches behind theirs as soon as they have
    // sent their last one, so the inference thread never waits for a chunk's start.
    this.chunkWorker = new Worker<ChunkJob>(CHUNK_QUEUE, (job) => this.processChunk(job), {
      ...common,
      concurrency: options.concurrency + 1,
    });
    this.chunkWorker.on("failed", (job, error) => void this.onChunkFailed(job, error));
    this.runWorker.on("failed", (job, error) => {
      if (job && isFinalAttempt(job, error))
        void runFailure(this.chunkQueue, error).then((reason) =>
          this.failRun(job.data.runId, reason),
        );
    });
    const outcomes = processMetrics().jobOutcomes;
    for (const [queue, worker] of [
      [RUN_QUEUE, this.runWorker],
      [CHUNK_QUEUE, this.chunkWorker],
    ] as const) {
      worker.on("error", repeatedErrors(log, "precompute worker error"));
      worker.on("completed", () => outcomes.inc({ queue, outcome: "completed" }));
      // A job stopped because its run was cancelled did what was asked: no failure to
      // alert on.
      worker.on("failed", (job) =>
        this.runCancelled(job?.data.runId).then((cancelled) =>
          outcomes.inc({ queue, outcome: cancelled ? "cancelled" : "failed" }),
        ),
      );
    }
  }

  /** Ready to take jobs; the inference threads keep loading in the background (warmUp). */
  async waitUntilReady(): Promise<void> {
    void this.warmUp();
    await Promise.all([this.runWorker.waitUntilReady(), this.chunkWorker.waitUntilReady()]);
  }

  /**
   * Starts the inference thread of each model's newest version (the usual target of a
   * run), as the API loads its runtimes at start, so a run does not wait for a session to
   * load; resolves once they are loaded. Other versions' threads start on first use.
   */
  async warmUp(): Promise<void> {
    const newest = this.registry.names().map((name) => this.registry.defaultVersion(name));
    await Promise.allSettled(newest.flatMap((model) => (model ? [this.inference(model)] : [])));
  }

  private async target(model: string, version: string): Promise<ModelVersion> {
    const target = await this.registry.resolve(model, version);
    if (!target)
      throw new UnrecoverableError(
        `model version ${model}@${version} is not loaded by this worker`,
      );
    return target;
  }

  private async processRun(job: Job<RunJob>, token: string | undefined): Promise<unknown> {
    const parsed = runJobSchema.safeParse(job.data);
    if (!parsed.success) throw new UnrecoverableError(`malformed run job: ${parsed.error.message}`);
    const run = parsed.data;
    if (await this.ended(run.runId)) return this.endedRun(run.runId);
    const target = await this.target(run.model, run.version);
    if (run.step === "plan") {
      // The inference thread loads the model while the chunks are being planned.
      this.inference(target).catch(() => {});
      const chunks = await this.plan(job, run, target);
      // Cancelled while planning: stop here (no table, no promotion).
      if (await this.ended(run.runId)) return this.endedRun(run.runId);
      await this.runs.set(run.runId, { chunksTotal: chunks });
      await this.runs.transition(run.runId, "running");
      await job.updateData({ ...run, step: "finish" });
    }
    // Every chunk first, also when this is a retry of the finish step or the step ran
    // again after a crash between the two lines above.
    if (token && (await job.moveToWaitingChildren(token))) throw new WaitingChildrenError();
    const status = await this.runs.get(run.runId);
    const { done, total } = status?.chunks ?? { done: 0, total: null };
    if (total === null || done < total)
      throw new Error(`run ${run.runId}: ${done} of ${total ?? "?"} chunks done, not finishing`);
    return this.finish(run, target);
  }

  /** Streams the input sources into chunk jobs (ids derived from the run, so re-planning after a crash adds nothing twice). */
  private async plan(job: Job<RunJob>, run: RunJob, target: ModelVersion): Promise<number> {
    const sources: (AsyncIterable<RawInput> | Iterable<RawInput>)[] = [];
    const context: SourceContext = {
      redis: this.redis,
      keys: this.keys,
      registry: this.registry,
      target,
      precomputed: this.precomputedIn(target),
    };
    // Observed inputs were asked of another version: those this one refuses (its ranges
    // or vocabulary differ) are left out and counted, not a reason to fail the run.
    let refused = 0;
    async function* acceptedBy(observed: AsyncIterable<RawInput> | Iterable<RawInput>) {
      for await (const input of observed) {
        if (target.encoder.encode(input).ok) yield input;
        else refused++;
      }
    }
    if (run.warm)
      sources.push(
        acceptedBy(
          openSource(
            { kind: "traffic", top: run.warm.top, encodingHash: run.warm.encodingHash },
            context,
          ),
        ),
      );
    if (run.source.kind === "seed") await this.checkSeed(run, context);
    const main = openSource(run.source, context);
    sources.push(run.source.kind === "traffic" ? acceptedBy(main) : main);
    let index = 0;
    let buffer: RawInput[] = [];
    const emit = async () => {
      await this.chunkQueue.add(
        "chunk",
        { runId: run.runId, index, model: run.model, version: run.version, inputs: buffer },
        {
          jobId: `${run.runId}.c${index}`,
          parent: { id: job.id as string, queue: job.queueQualifiedName },
          failParentOnFailure: true,
          attempts: 3,
          backoff: { type: "exponential", delay: 500 },
          removeOnComplete: { age: 3_600 },
          removeOnFail: { age: 86_400 },
        },
      );
      await this.runs.chunkPlanned(run.runId, index);
      index++;
      buffer = [];
    };
    for (const source of sources) {
      for await (const input of source) {
        buffer.push(input);
        if (buffer.length >= run.chunkSize) {
          await emit();
          if (ENDED.has((await this.runs.state(run.runId)) ?? "")) return index;
        }
      }
    }
    if (buffer.length > 0) await emit();
    if (refused > 0) {
      await this.runs.set(run.runId, { observedRefused: refused });
      this.log.info(
        { run: run.runId, refused },
        "observed inputs this version refuses were left out",
      );
    }
    return index;
  }

  /**
   * Which keys `target` has precomputed: those its newest intact table holds (Redis holds
   * the live model's answers too, which no run has put in a table); without tables, those
   * Redis holds. The table is read once per plan, when first asked.
   */
  private precomputedIn(target: ModelVersion): (keys: readonly string[]) => Promise<boolean[]> {
    if (!this.tables) return (keys) => this.store.has(target, keys);
    const tables = this.tables;
    let table: Promise<TableView | undefined> | undefined;
    const hash = new Uint32Array(2);
    const passedOver = new Set<string>();
    const newest = () => newestTable(tables, target, passedOver);
    return async (keys) => {
      table ??= this.intactBase(target, newest, passedOver).then(({ base }) => base);
      const view = await table;
      if (!view) return keys.map(() => false);
      return keys.map((key) => {
        keyHashInto(key, hash);
        return view.find(hash[0] as number, hash[1] as number) >= 0;
      });
    };
  }

  /**
   * A seed file is read once through before any chunk is queued: one that cannot be
   * parsed, holds nothing or has bad rows fails the run at once, with every bad row
   * counted, and nothing is written. Not retried: the file will say the same again.
   */
  private async checkSeed(run: RunJob, context: SourceContext): Promise<void> {
    let check: InputCheck;
    try {
      check = await checkInputs(context.target.encoder, openSource(run.source, context));
    } catch (error) {
      throw new UnrecoverableError(`the seed file cannot be read: ${(error as Error).message}`);
    }
    if (check.total === 0) throw new UnrecoverableError("the seed file has no inputs");
    if (check.invalid > 0) throw new UnrecoverableError(describeInvalid(check));
  }

  private async ended(runId: string): Promise<boolean> {
    return ENDED.has((await this.runs.state(runId)) ?? "");
  }

  /**
   * The end of a run's job once its run has ended. A cancelled run's job is failed, not
   * completed: chunks the cancel could not remove (running ones) are still its children,
   * and BullMQ refuses to complete a parent with children pending (an error-level line
   * each time the job came up again). The run's own state says it was cancelled.
   */
  private async endedRun(runId: string): Promise<{ ended: true }> {
    if ((await this.runs.state(runId)) === "cancelled")
      throw new UnrecoverableError(`run ${runId} was cancelled`);
    return { ended: true };
  }

  private async finish(run: RunJob, target: ModelVersion): Promise<unknown> {
    // A cancel can land between the last chunk and here: a cancelled run publishes nothing.
    // Past this step it cannot be cancelled, so a table it builds is never a cancelled one.
    if ((await this.runs.transition(run.runId, "finishing")) !== "applied") return { ended: true };
    const meta: Record<string, string | number> = { lastRun: run.runId, lastRunAt: Date.now() };
    // A retried finish reuses what an earlier attempt recorded: one table, one promotion.
    const [built, promotedFrom] = await this.redis.hmget(
      this.keys.runMeta(run.runId),
      "table",
      "promotedFrom",
    );
    const versionMeta = this.keys.versionMeta(target.name, target.version);
    // A run that planned no chunk (traffic:K with nothing new) adds nothing to publish.
    const planned = (await this.runs.get(run.runId))?.chunks.total ?? 0;
    if (this.tables && !built && planned > 0) {
      // One build per model at a time, each on the newest table: runs finishing together
      // would each publish the same base plus their own keys, the later without the other's.
      // The lock can pass on (a holder stalled past its time to live) and workers of an
      // older release take none: a build publishes only while its base is still the newest.
      for (let attempt = 1; ; attempt++) {
        try {
          await withLock(
            this.redis,
            this.keys.tableLock(target.name),
            { ...TABLE_LOCK, label: run.runId },
            async (held) => {
              const { generation } = await this.buildRunTable(run, target, held);
              await this.runs.set(run.runId, { table: generation });
              await this.redis.hset(versionMeta, { ...meta, table: generation });
            },
          );
          break;
        } catch (error) {
          if (!(error instanceof BaseMovedError) || attempt >= 3) throw error;
          this.log.info({ run: run.runId, model: target.name }, (error as Error).message);
        }
      }
    } else await this.redis.hset(versionMeta, built ? { ...meta, table: built } : meta);
    if (this.tables) await this.redis.publish(this.keys.tablesChannel(), target.name);
    // Last, and only here: every chunk succeeded and the table is published.
    let previous = promotedFrom ?? null;
    if (await this.ended(run.runId)) return { ended: true };
    // As a promote refuses it: a version whose folder is gone would not load at the next
    // restart. The run completes, not promoted, and says why.
    if (run.promote && previous === null && (await folderGone(target))) {
      const reason = `not promoted: the folder of ${target.version} no longer holds it (${target.directory}): a restart would not load it`;
      await this.runs.set(run.runId, { promoteSkipped: reason });
      this.log.warn({ run: run.runId, model: target.name, version: target.version }, reason);
      await this.runs.transition(run.runId, "completed");
      return { promoted: false };
    }
    if (run.promote && previous === null) {
      try {
        previous =
          (await switchActiveVersion(
            this.redis,
            this.keys,
            target.name,
            target.version,
            run.promoteIfSwitches,
          )) ?? "";
      } catch (error) {
        if (!(error instanceof ActiveMovedError)) throw error;
        // Promoted or rolled back by someone while the run went: theirs stands.
        const reason = `not promoted: the active version was switched while the run went (now ${error.active || "none"}), and that switch stands`;
        await this.runs.set(run.runId, { promoteSkipped: reason });
        this.log.warn({ run: run.runId, model: target.name, version: target.version }, reason);
        await this.runs.transition(run.runId, "completed");
        return { promoted: false };
      }
      await this.runs.set(run.runId, { promotedFrom: previous });
      // A switch like an operator's promote: audited, under the run that made it.
      await new AuditLog(this.redis, this.keys, this.log).record({
        actor: `run:${run.runId}`,
        action: "POST /models/:model/versions/:version/promote",
        target: `/admin/v1/models/${target.name}/versions/${target.version}/promote`,
        status: 200,
        detail: `${previous || "none"} → ${target.version} (precompute run ${run.runId}, promote when done)`,
      });
    }
    await this.runs.transition(run.runId, "completed");
    this.log.info(
      { run: run.runId, model: target.name, version: target.version, promoted: run.promote },
      "precompute run completed",
    );
    return { promoted: run.promote };
  }

  /**
   * The version's next table generation: its previous table plus every key this run's
   * chunks covered, read back from Redis (the previous one again when nothing changed).
   */
  private async buildRunTable(
    run: RunJob,
    target: ModelVersion,
    held: () => boolean,
  ): Promise<TableInfo> {
    const runs = this.runs;
    const tables = this.tables as TableStore;
    // Tables found damaged (or gone) while choosing the base: passed over here, whether
    // or not they could be set aside.
    const passedOver = new Set<string>();
    const newest = () => newestTable(tables, target, passedOver);
    const { previous, base } = await this.intactBase(target, newest, passedOver);
    // A damaged table set aside (here or by whoever listed it): what only it held is in
    // Redis alone, so this generation takes every entry the version has there.
    const { redis, keys } = this;
    const rebuild = await rebuildMarked(redis, keys, target.name, target.version);
    if (rebuild)
      this.log.warn(
        { run: run.runId, model: target.name, version: target.version },
        "a table of this version was damaged: this one is rebuilt from every entry in Redis",
      );
    async function* chunkKeys(): AsyncGenerator<string[]> {
      const status = await runs.get(run.runId);
      const total = status?.chunks.total ?? 0;
      for (let index = 0; index < total; index++) yield await runs.chunkKeys(run.runId, index);
      if (rebuild) yield* storedKeys(redis, keys, target.name, target.version);
    }
    const built = await buildTable({
      model: target,
      generation: `${target.version}.${Date.now().toString(36)}`,
      source: `precompute ${run.runId}: ${describeSource(run.source)}${run.warm ? ` + top ${run.warm.top} observed` : ""}`,
      keys: chunkKeys(),
      store: this.store,
      tables,
      ...(base ? { base } : {}),
      beforePublish: async () => {
        if (!held()) throw new Error(`run ${run.runId}: the table lock was lost while building`);
        if ((await newest())?.generation !== previous?.generation)
          throw new BaseMovedError(
            `run ${run.runId}: another table was published meanwhile; building again on it`,
          );
      },
    });
    if (rebuild) await clearRebuild(redis, keys, target.name, target.version);
    return built;
  }

  /**
   * The newest table to build on, checked against its checksum first: a table damaged on
   * disk would otherwise be carried into every later generation under a new, valid
   * checksum. A damaged one is set aside and the one before it used; what only the
   * damaged one held is still in Redis: the version is marked, so this build (and any
   * retried one) takes every entry it has there.
   */
  private async intactBase(
    target: ModelVersion,
    newest: () => Promise<TableInfo | undefined>,
    passedOver: Set<string>,
  ): Promise<{ previous: TableInfo | undefined; base: TableView | undefined }> {
    const tables = this.tables as TableStore;
    for (;;) {
      const previous = await newest();
      if (!previous) return { previous: undefined, base: undefined };
      const { generation } = previous;
      let bytes: Uint8Array;
      try {
        bytes = await tables.read(target.name, generation);
      } catch (error) {
        // Set aside (or removed) by another worker since it was listed.
        if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
        passedOver.add(generation);
        continue;
      }
      try {
        await verifyTable(bytes);
        return { previous, base: parseTable(bytes) };
      } catch (error) {
        if (!(error instanceof TableFormatError)) throw error;
        passedOver.add(generation);
        await markRebuild(this.redis, this.keys, target.name, target.version);
        const setAside = await tables.setAside(target.name, generation).then(
          () => "set aside (as .damaged)",
          (failure: Error) => `could not be set aside (${failure.message})`,
        );
        this.log.error(
          { model: target.name, table: generation, err: error.message },
          `a stored table is damaged: ${setAside}; building on the one before it, with every entry of the version in Redis`,
        );
      }
    }
  }

  private async cancelled(runId: string): Promise<boolean> {
    return ENDED.has((await this.runs.state(runId)) ?? "");
  }

  /**
   * The version's inference: a thread of its own (inference-thread.ts), started on first
   * use and again after it died; the registry's in-process runtime when the thread cannot
   * have the same model bytes.
   */
  private async inference(model: ModelVersion): Promise<Inference> {
    const id = `${model.name}@${model.version}`;
    const current = this.lanes.get(id);
    if (current) {
      const lane = await current.catch(() => undefined);
      if (lane && !(lane instanceof InferenceThread && lane.failed)) return lane;
      if (this.lanes.get(id) === current) this.lanes.delete(id);
    }
    let started = this.lanes.get(id);
    if (!started) {
      started = InferenceThread.start(model, {
        intraOpThreads: this.options.inferenceThreads ?? 1,
      }).then(
        (thread): Inference | Promise<Inference> => thread ?? this.registry.runtime(model),
        (error: Error) => {
          this.log.warn(
            { model: model.name, version: model.version, err: error.message },
            "precompute inference thread did not start; inferring in-process",
          );
          return this.registry.runtime(model);
        },
      );
      this.lanes.set(id, started);
    }
    return started;
  }

  private async processChunk(job: Job<ChunkJob>): Promise<{ written: number; skipped: number }> {
    const parsed = chunkJobSchema.safeParse(job.data);
    if (!parsed.success)
      throw new UnrecoverableError(`malformed chunk job: ${parsed.error.message}`);
    const chunk = parsed.data;
    if (await this.cancelled(chunk.runId))
      throw new UnrecoverableError(`run ${chunk.runId} has ended`);
    const model = await this.target(chunk.model, chunk.version);

    const keys: string[] = [];
    const rows = new Map<string, number[]>();
    for (const [i, input] of chunk.inputs.entries()) {
      const encoded = model.encoder.encode(input);
      if (!encoded.ok) {
        const problems = encoded.issues.map((issue) => issue.message).join("; ");
        const reason = `chunk ${chunk.index}, input ${i}: ${problems}`;
        throw new UnrecoverableError(reason);
      }
      if (!rows.has(encoded.value.key)) {
        keys.push(encoded.value.key);
        rows.set(encoded.value.key, encoded.value.row);
      }
    }
    // Written before the chunk counts as done (the table builder reads it then); sent
    // now so it travels alongside the batches.
    const savedKeys = this.runs.saveChunkKeys(chunk.runId, chunk.index, keys);
    savedKeys.catch(() => {});
    const lane = await this.inference(model);
    // Batches flow through in a window: while the inference thread runs one batch, the
    // next waits in its queue (already checked against the keyspace and packed), and the
    // one before is decoded, encoded and written. Every batch checks for a cancel first;
    // everything is awaited before the chunk counts as done.
    let written = 0;
    let failure: { error: unknown } | undefined;
    const step = async (batch: string[]) => {
      const [present, ended] = await Promise.all([
        this.store.has(model, batch),
        this.cancelled(chunk.runId),
      ]);
      if (ended) throw new UnrecoverableError(`run ${chunk.runId} has ended`);
      const todo = batch.filter((_, i) => !present[i]);
      if (todo.length === 0) return;
      const predictions = await lane.run(todo.map((key) => rows.get(key) as number[]));
      // Counted as Redis added them, in the same step (the version's entries, the run's
      // and this chunk's writes): a key another chunk wrote since the check above is not
      // counted twice, nor a write this chunk made before it was retried, and a write is
      // counted even if this process dies right after it.
      const added = await this.store.put(
        model,
        todo.map((key, i) => ({ key, prediction: predictions[i] as Prediction })),
        [
          { key: this.keys.versionMeta(model.name, model.version), field: "entries" },
          ...this.runs.writtenCounters(chunk.runId, chunk.index),
        ],
      );
      // Added after the await: `written += await …` would add to the value read before it,
      // losing what batches in flight meanwhile added.
      written += added;
      if (added > 0)
        processMetrics().rowsWritten.inc({ model: model.name, version: model.version }, added);
    };
    const inFlight = new Set<Promise<void>>();
    // The gate: chunks of this worker send their batches one chunk after another.
    await this.inferring.enter();
    let entered = true;
    const leave = () => {
      if (entered) this.inferring.leave();
      entered = false;
    };
    try {
      for (let start = 0; start < keys.length && !failure; start += this.options.inferBatch) {
        while (inFlight.size >= BATCHES_IN_FLIGHT) await Promise.race(inFlight);
        if (failure) break;
        const batch = keys.slice(start, start + this.options.inferBatch);
        const task: Promise<void> = step(batch)
          .catch((error: unknown) => {
            failure ??= { error };
          })
          .finally(() => inFlight.delete(task));
        inFlight.add(task);
      }
      // Every batch is on its way: the next chunk may queue its batches behind these.
      leave();
      await Promise.all(inFlight);
    } finally {
      leave();
    }
    if (failure) {
      // Its run has ended (cancelled, failed): the list this chunk saved is nobody's now;
      // the run dropped the lists already, perhaps before this one landed.
      if (await this.cancelled(chunk.runId).catch(() => false))
        await savedKeys
          .catch(() => {})
          .then(() => this.runs.dropChunkList(chunk.runId, chunk.index))
          .catch(() => {});
      throw failure.error;
    }
    await savedKeys;
    // The version's entries and the run's writes were counted with each write.
    await this.runs.chunkDone(chunk.runId, chunk.index, keys.length);
    const status = await this.runs.get(chunk.runId);
    if (status) {
      const { chunks, rows: done, written: w, rate, etaSeconds } = status;
      await this.runQueue
        .updateJobProgress(chunk.runId, { chunks, rows: done, written: w, rate, etaSeconds })
        .catch(() => {});
    }
    return { written, skipped: keys.length - written };
  }

  /** Ends a run as failed, logged once (by whichever process ended it) at error level. */
  private async failRun(runId: string, reason: string): Promise<void> {
    const ended = await this.runs.fail(runId, reason).catch(() => false);
    if (ended) this.log.error({ run: runId, err: reason }, "precompute run failed");
  }

  private async runCancelled(runId: string | undefined): Promise<boolean> {
    if (!runId) return false;
    return (await this.runs.state(runId).catch(() => undefined)) === "cancelled";
  }

  private async onChunkFailed(job: Job<ChunkJob> | undefined, error: Error): Promise<void> {
    if (!job || !isFinalAttempt(job, error)) return;
    if (await this.runCancelled(job.data.runId)) return;
    const reason = chunkFailure(job.data.index, error.message);
    this.log.warn(
      { run: job.data.runId, chunk: job.data.index, err: error.message },
      "precompute chunk failed",
    );
    await this.failRun(job.data.runId, reason);
  }

  /**
   * Stops taking jobs; those running get `graceMs` (a table build can take longer than a
   * shutdown may: it is built again when its run's job is taken up again).
   */
  async close(graceMs = 5_000): Promise<void> {
    const finished = await closeWorkers([this.runWorker, this.chunkWorker], this.redis, graceMs);
    await closeWithin(Promise.allSettled([this.chunkQueue.close(), this.runQueue.close()]), 1_000);
    // Jobs left running keep their inference threads: closed under them, they would fail
    // and use up an attempt, where they are meant to stall and run again. The process is
    // ending.
    if (!finished) return;
    const lanes = await Promise.allSettled(this.lanes.values());
    this.lanes.clear();
    for (const lane of lanes)
      if (lane.status === "fulfilled" && lane.value instanceof InferenceThread)
        await lane.value.close();
  }
}
