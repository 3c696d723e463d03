/**
 * The precompute worker. Run jobs plan and finish; chunk jobs do the work: encode with
 * the shared encoding, skip keys the version already has, run onnxruntime in batches,
 * write with pipelined Redis writes, record the chunk's keys for the table builder.
 * Chunks are idempotent (same keys, same values, counted once), so a retried, duplicated
 * or stalled-and-resumed chunk changes nothing; a run finishes — and promotes — only
 * once every chunk has succeeded.
 */

import { type Job, type Queue, UnrecoverableError, WaitingChildrenError, Worker } from "bullmq";
import type { Keys } from "../src/cache/keys.ts";
import type { PredictionStore } from "../src/cache/store.ts";
import type { Logger } from "../src/log.ts";
import { switchActiveVersion } from "../src/model/active.ts";
import type { Prediction } from "../src/model/decoding.ts";
import type { ModelRegistry, ModelVersion } from "../src/model/registry.ts";
import { processMetrics } from "../src/observability/metrics.ts";
import type { Redis } from "../src/redis/connection.ts";
import { producerQueue } from "../src/redis/queue.ts";
import { buildTable } from "../src/table/builder.ts";
import { parseTable } from "../src/table/format.ts";
import type { TableInfo, TableStore } from "../src/table/store.ts";
import { describeSource, openSource, type RawInput } from "./inputs/index.ts";
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
}

const ENDED = new Set(["completed", "failed", "cancelled"]);

export class PrecomputeWorker {
  readonly runWorker: Worker<RunJob>;
  readonly chunkWorker: Worker<ChunkJob>;
  private readonly chunkQueue: Queue<ChunkJob>;
  private readonly runQueue: Queue<RunJob>;
  private readonly runs: RunStore;

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
    this.chunkWorker = new Worker<ChunkJob>(CHUNK_QUEUE, (job) => this.processChunk(job), {
      ...common,
      concurrency: options.concurrency,
    });
    this.chunkWorker.on("failed", (job, error) => void this.onChunkFailed(job, error));
    this.runWorker.on("failed", (job, error) => {
      if (job) void this.runs.fail(job.data.runId, error.message).catch(() => {});
    });
    const outcomes = processMetrics().jobOutcomes;
    for (const [queue, worker] of [
      [RUN_QUEUE, this.runWorker],
      [CHUNK_QUEUE, this.chunkWorker],
    ] as const) {
      worker.on("error", (error) => log.error({ err: error.message }, "precompute worker error"));
      worker.on("completed", () => outcomes.inc({ queue, outcome: "completed" }));
      worker.on("failed", () => outcomes.inc({ queue, outcome: "failed" }));
    }
  }

  async waitUntilReady(): Promise<void> {
    await Promise.all([this.runWorker.waitUntilReady(), this.chunkWorker.waitUntilReady()]);
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
    if (ENDED.has((await this.runs.state(run.runId)) ?? "")) return { ended: true };
    const target = await this.target(run.model, run.version);
    if (run.step === "plan") {
      const chunks = await this.plan(job, run, target);
      // Cancelled while planning: stop here (no table, no promotion).
      if (await this.ended(run.runId)) return { ended: true };
      await this.runs.set(run.runId, { chunksTotal: chunks });
      await this.runs.transition(run.runId, "running");
      await job.updateData({ ...run, step: "finish" });
      if (token && (await job.moveToWaitingChildren(token))) throw new WaitingChildrenError();
    }
    return this.finish(run, target);
  }

  /** Streams the input sources into chunk jobs (ids derived from the run, so re-planning after a crash adds nothing twice). */
  private async plan(job: Job<RunJob>, run: RunJob, target: ModelVersion): Promise<number> {
    const sources: (AsyncIterable<RawInput> | Iterable<RawInput>)[] = [];
    const context = { redis: this.redis, keys: this.keys, registry: this.registry, target };
    if (run.warm)
      sources.push(
        openSource(
          { kind: "traffic", top: run.warm.top, encodingHash: run.warm.encodingHash },
          context,
        ),
      );
    sources.push(openSource(run.source, context));
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
    return index;
  }

  private async ended(runId: string): Promise<boolean> {
    return ENDED.has((await this.runs.state(runId)) ?? "");
  }

  private async finish(run: RunJob, target: ModelVersion): Promise<unknown> {
    // A cancel can land between the last chunk and here: a cancelled run publishes nothing.
    if (await this.ended(run.runId)) return { ended: true };
    await this.runs.transition(run.runId, "finishing");
    const meta: Record<string, string | number> = { lastRun: run.runId, lastRunAt: Date.now() };
    if (this.tables) {
      const table = await this.buildRunTable(run, target);
      await this.runs.set(run.runId, { table: table.generation });
      meta.table = table.generation;
    }
    await this.redis.hset(this.keys.versionMeta(target.name, target.version), meta);
    if (this.tables) await this.redis.publish(this.keys.tablesChannel(), target.name);
    // Last, and only here: every chunk succeeded and the table is published.
    let previous: string | undefined;
    if (await this.ended(run.runId)) return { ended: true };
    if (run.promote)
      previous = await switchActiveVersion(this.redis, this.keys, target.name, target.version);
    await this.runs.transition(
      run.runId,
      "completed",
      run.promote ? { promotedFrom: previous ?? "" } : {},
    );
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
  private async buildRunTable(run: RunJob, target: ModelVersion): Promise<TableInfo> {
    const runs = this.runs;
    const tables = this.tables as TableStore;
    const previous = (await tables.list(target.name)).find(
      (t) => t.modelVersion === target.version && t.encodingHash === target.encoder.hash,
    );
    const base = previous
      ? parseTable(await tables.read(target.name, previous.generation))
      : undefined;
    async function* chunkKeys(): AsyncGenerator<string[]> {
      const status = await runs.get(run.runId);
      const total = status?.chunks.total ?? 0;
      for (let index = 0; index < total; index++) yield await runs.chunkKeys(run.runId, index);
    }
    return buildTable({
      model: target,
      generation: `${target.version}.${Date.now().toString(36)}`,
      source: `precompute ${run.runId}: ${describeSource(run.source)}${run.warm ? ` + top ${run.warm.top} observed` : ""}`,
      keys: chunkKeys(),
      store: this.store,
      tables,
      ...(base ? { base } : {}),
    });
  }

  private async cancelled(runId: string): Promise<boolean> {
    return ENDED.has((await this.runs.state(runId)) ?? "");
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
    const runtime = await this.registry.runtime(model);
    // A pipeline per batch: which keys the version already has is asked one batch
    // ahead, and a batch's writes overlap the next batch's inference (onnxruntime runs
    // off the event loop). Everything is awaited before the chunk counts as done.
    const batches: string[][] = [];
    for (let start = 0; start < keys.length; start += this.options.inferBatch) {
      batches.push(keys.slice(start, start + this.options.inferBatch));
    }
    const presence = batches.map(() => undefined as Promise<boolean[]> | undefined);
    const lookAhead = (b: number) => {
      const batch = batches[b];
      if (batch && !presence[b]) presence[b] = this.store.has(model, batch);
    };
    const writes: Promise<void>[] = [];
    let written = 0;
    try {
      lookAhead(0);
      for (const [b, batch] of batches.entries()) {
        if (await this.cancelled(chunk.runId))
          throw new UnrecoverableError(`run ${chunk.runId} has ended`);
        const present = (await presence[b]) ?? [];
        lookAhead(b + 1);
        const todo = batch.filter((_, i) => !present[i]);
        if (todo.length === 0) continue;
        const predictions = await runtime.run(todo.map((key) => rows.get(key) as number[]));
        writes.push(
          this.store.put(
            model,
            todo.map((key, i) => ({ key, prediction: predictions[i] as Prediction })),
          ),
        );
        written += todo.length;
      }
      await Promise.all(writes);
    } finally {
      await Promise.allSettled([...writes, ...presence.filter((p) => p !== undefined)]);
    }
    await this.runs.saveChunkKeys(chunk.runId, chunk.index, keys);
    const skipped = keys.length - written;
    await this.runs.chunkDone(chunk.runId, chunk.index, keys.length, written, skipped);
    if (written > 0)
      processMetrics().rowsWritten.inc({ model: model.name, version: model.version }, written);
    if (written > 0)
      await this.redis.hincrby(
        this.keys.versionMeta(model.name, model.version),
        "entries",
        written,
      );
    const status = await this.runs.get(chunk.runId);
    if (status) {
      const { chunks, rows: done, written: w, rate, etaSeconds } = status;
      await this.runQueue
        .updateJobProgress(chunk.runId, { chunks, rows: done, written: w, rate, etaSeconds })
        .catch(() => {});
    }
    return { written, skipped };
  }

  private async onChunkFailed(job: Job<ChunkJob> | undefined, error: Error): Promise<void> {
    if (!job) return;
    const final =
      error.name === "UnrecoverableError" || job.attemptsMade >= (job.opts.attempts ?? 1);
    if (!final) return;
    const reason = error.message.startsWith(`chunk ${job.data.index},`)
      ? error.message
      : `chunk ${job.data.index} failed: ${error.message}`;
    this.log.warn(
      { run: job.data.runId, chunk: job.data.index, err: error.message },
      "precompute chunk failed",
    );
    await this.runs.fail(job.data.runId, reason).catch(() => {});
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.runWorker.close(), this.chunkWorker.close()]);
    await Promise.allSettled([this.chunkQueue.close(), this.runQueue.close()]);
  }
}
