/**
 * Starting, watching and cancelling precompute runs. A run is a BullMQ step job on the
 * `precompute` queue: it plans (streams its input source into chunk jobs, its children),
 * waits for them, then finishes (publishes, promotes when asked). See worker.ts.
 */
import { createHash, randomBytes } from "node:crypto";
import { stat } from "node:fs/promises";
import { basename } from "node:path";
import type { Queue } from "bullmq";
import type { Keys } from "../src/cache/keys.ts";
import { PredcacheError } from "../src/errors.ts";
import { switchCount } from "../src/model/active.ts";
import { canonicalJson } from "../src/model/canonical-json.ts";
import { folderGone } from "../src/model/folder-gone.ts";
import type { ModelRegistry } from "../src/model/registry.ts";
import type { Redis } from "../src/redis/connection.ts";
import { isRedisOutage } from "../src/redis/outage.ts";
import { producerQueue } from "../src/redis/queue.ts";
import { planGrid } from "./inputs/grid.ts";
import { describeSource, type RawInput } from "./inputs/index.ts";
import { seedInputs } from "./inputs/seed.ts";
import { checkInputs, describeInvalid, type InputCheck } from "./inputs/validate.ts";
import { type RunStatus, RunStore } from "./runs.ts";
import {
  CHUNK_QUEUE,
  type ChunkJob,
  RUN_QUEUE,
  type RunJob,
  type RunRequest,
  runRequestSchema,
} from "./spec.ts";

export interface PrecomputeOptions {
  /** BullMQ prefix (with its cluster hash tag). */
  queuePrefix: string;
}

/** Rows of a seed file on the server checked when its run is asked for. */
const SEED_CHECKED_ROWS = 1_000;

function refuseInvalid(check: InputCheck): void {
  if (check.total === 0)
    throw new PredcacheError("bad_request", "the source has no inputs (an empty grid axis?)");
  if (check.invalid > 0)
    throw new PredcacheError("invalid_input", describeInvalid(check), {
      invalid: check.invalid,
      total: check.total,
      rows: check.rows,
    });
}

/**
 * A grid's inputs that between them hold every value of every axis: the first input,
 * then each other axis value swapped into it. Each value is checked once, not the whole
 * cross product (up to a million inputs) in the API process.
 */
function* gridProbes(grid: ReturnType<typeof planGrid>): Generator<RawInput> {
  if (grid.size === 0) return;
  const first: RawInput = Object.fromEntries(
    grid.names.map((name, i) => [name, grid.axes[i]?.[0]]),
  );
  yield first;
  for (const [i, name] of grid.names.entries())
    for (const value of (grid.axes[i] ?? []).slice(1)) yield { ...first, [name]: value };
}

export class Precompute {
  readonly runQueue: Queue<RunJob>;
  readonly chunkQueue: Queue<ChunkJob>;
  readonly runs: RunStore;

  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    private readonly registry: ModelRegistry,
    options: PrecomputeOptions,
  ) {
    this.runQueue = producerQueue<RunJob>(RUN_QUEUE, redis, options.queuePrefix);
    this.chunkQueue = producerQueue<ChunkJob>(CHUNK_QUEUE, redis, options.queuePrefix);
    this.runs = new RunStore(redis, keys);
  }

  /**
   * Starts a run; returns its id. Refuses, before anything is queued, an unknown model or
   * version, a missing seed file and an oversized grid.
   *
   * @example
   *   const { runId } = await precompute.enqueue({ model: "flight-delay", source: { kind: "seed", file: "seeds/inputs/flight-delay-common.csv" }, promote: true });
   */
  async enqueue(request: RunRequest): Promise<{ runId: string; version: string }> {
    const parsed = runRequestSchema.safeParse(request);
    if (!parsed.success) {
      const issues = parsed.error.issues.map((i) => ({
        path: i.path.join("."),
        message: i.message,
      }));
      // The message says what is wrong, not only details: a shell user sees the message.
      const said = issues
        .slice(0, 3)
        .map((i) => `${i.path || "request"}: ${i.message}`)
        .join("; ");
      throw new PredcacheError(
        "bad_request",
        `invalid precompute request: ${said}${issues.length > 3 ? `; and ${issues.length - 3} more` : ""}`,
        { issues },
      );
    }
    // Uploaded inputs as given, not zod's copies (a copy drops a "__proto__" field, which
    // the encoder must see to refuse as unknown, as every other path does).
    const spec =
      parsed.data.source.kind === "inline"
        ? {
            ...parsed.data,
            source: {
              ...parsed.data.source,
              inputs: (request.source as { inputs: Record<string, unknown>[] }).inputs,
            },
          }
        : parsed.data;
    if (this.registry.versions(spec.model).length === 0) {
      throw new PredcacheError("model_not_found", `no model named "${spec.model}"`, {
        models: this.registry.names(),
      });
    }
    const active =
      (await this.redis.get(this.keys.active(spec.model))) ??
      this.registry.defaultVersion(spec.model)?.version;
    const version = spec.version ?? active;
    const target = version ? this.registry.get(spec.model, version) : undefined;
    if (!target || !version)
      throw new PredcacheError(
        "version_not_found",
        `model "${spec.model}" has no version "${String(version).slice(0, 64)}"`,
        { versions: this.registry.versions(spec.model).map((v) => v.version) },
      );
    // To be promoted when done, as a promote would be refused (and checked again then).
    if (spec.promote && (await folderGone(target)))
      throw new PredcacheError(
        "conflict",
        `version ${version} of ${spec.model} is loaded, but its folder no longer holds it (${target.directory}): a restart would not load it, so it is not promoted`,
        { version, directory: target.directory },
      );
    if (spec.source.kind === "grid") {
      let grid: ReturnType<typeof planGrid>;
      try {
        grid = planGrid(target.manifest.encoding.features, spec.source);
      } catch (error) {
        throw new PredcacheError("bad_request", (error as Error).message);
      }
      refuseInvalid(await checkInputs(target.encoder, gridProbes(grid)));
    }
    // Uploaded inputs are at hand: checked now, so a bad file is refused, not started.
    if (spec.source.kind === "inline")
      refuseInvalid(await checkInputs(target.encoder, spec.source.inputs));
    if (spec.source.kind === "seed") {
      const found = await stat(spec.source.file).then(
        (s) => s.isFile(),
        () => false,
      );
      if (!found)
        throw new PredcacheError("bad_request", `seed file not found: ${spec.source.file}`);
      if (/\.json$/i.test(spec.source.file))
        throw new PredcacheError(
          "bad_request",
          `${spec.source.file}: seed files are CSV (with a header row) or JSON lines named .jsonl or .ndjson, not .json`,
        );
      // Its first rows now, as uploaded inputs are checked whole: a wrong header, an empty
      // or binary file, a bad row near the top is refused, not started and failed (the run
      // checks the rest; reading all of a large file here would hold the request up).
      const first = Math.min(spec.source.limit ?? SEED_CHECKED_ROWS, SEED_CHECKED_ROWS);
      let check: InputCheck;
      try {
        check = await checkInputs(target.encoder, seedInputs(spec.source.file, first));
      } catch (error) {
        const message = (error as Error).message;
        // The reader's own errors name the file already; a CSV parser's do not.
        throw new PredcacheError(
          "bad_request",
          message.includes(spec.source.file)
            ? message
            : `${basename(spec.source.file)}: ${message}`,
        );
      }
      if (check.total === 0)
        throw new PredcacheError("bad_request", `${basename(spec.source.file)} has no inputs`);
      refuseInvalid(check);
    }
    const activeModel = active ? this.registry.get(spec.model, active) : undefined;
    await this.refuseIfCollecting(spec.model, version);
    const runId = `run-${Date.now().toString(36)}-${randomBytes(3).toString("hex")}`;
    await this.claim({ ...spec, version }, runId);
    await this.runs.create({
      id: runId,
      model: spec.model,
      version,
      source: spec.source,
      sourceDescription: describeSource(spec.source),
      promote: spec.promote,
    });
    // Again, now that the run is recorded: gc, marking the version after the check above,
    // looks for runs after its mark, and either sees this one or is seen here.
    try {
      await this.refuseIfCollecting(spec.model, version);
    } catch (error) {
      await this.runs.fail(runId, (error as Error).message);
      throw error;
    }
    const job: RunJob = {
      runId,
      model: spec.model,
      version,
      source: spec.source,
      chunkSize: spec.chunkSize,
      promote: spec.promote,
      ...(spec.promote
        ? { promoteIfSwitches: await switchCount(this.redis, this.keys, spec.model) }
        : {}),
      step: "plan",
      ...(spec.warmFromTraffic && activeModel
        ? { warm: { top: spec.warmFromTraffic, encodingHash: activeModel.encoder.hash } }
        : {}),
    };
    await this.runQueue.add("run", job, {
      jobId: runId,
      // Planning and finishing talk to Redis throughout: a timeout or a failover in one
      // of them is retried (both steps can run again) before the run counts as failed.
      attempts: 3,
      backoff: { type: "exponential", delay: 1_000 },
      removeOnComplete: { age: 7 * 86_400 },
      removeOnFail: { age: 7 * 86_400 },
    });
    return { runId, version };
  }

  /** 409 while gc is deleting the version: what the run wrote would be deleted under it. */
  private async refuseIfCollecting(model: string, version: string): Promise<void> {
    if (await this.redis.exists(this.keys.collecting(model, version)))
      throw new PredcacheError(
        "conflict",
        `gc is deleting version ${version} (retention does not keep it): precompute it once gc is done, or promote a version retention keeps`,
        { version, reason: "collecting" },
      );
  }

  /**
   * Refuses (409) a request identical to a run still in progress — a retried or
   * double-clicked trigger must not run the same work twice; the same request after that
   * run ended starts a new run.
   */
  private async claim(spec: object, runId: string): Promise<void> {
    const fingerprint = createHash("sha256").update(canonicalJson(spec)).digest("hex");
    const key = this.keys.runFingerprint(fingerprint.slice(0, 32));
    const ttl = 7 * 86_400;
    if (await this.redis.set(key, runId, "EX", ttl, "NX")) return;
    const holder = await this.redis.get(key);
    const state = holder ? await this.runs.state(holder) : undefined;
    if (holder && (state === "planning" || state === "running" || state === "finishing")) {
      throw new PredcacheError("conflict", `an identical run is already ${state}: ${holder}`, {
        runId: holder,
        state,
      });
    }
    await this.redis.set(key, runId, "EX", ttl);
  }

  status(runId: string): Promise<RunStatus | undefined> {
    return this.runs.get(runId);
  }

  /** Resolves with the final status once the run ends (or rejects after timeoutMs). */
  async waitUntilDone(
    runId: string,
    timeoutMs = 600_000,
    onProgress?: (status: RunStatus) => void,
    /** Redis did not answer: the wait goes on (the run does too, its workers retrying). */
    onOutage?: (error: unknown) => void,
  ): Promise<RunStatus> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      let status: RunStatus | undefined;
      try {
        status = await this.runs.get(runId);
      } catch (error) {
        if (!isRedisOutage(error) || Date.now() > deadline) throw error;
        onOutage?.(error);
        await new Promise((r) => setTimeout(r, 500));
        continue;
      }
      if (!status) throw new PredcacheError("not_found", `no run ${runId}`);
      onProgress?.(status);
      if (status.state === "completed" || status.state === "failed" || status.state === "cancelled")
        return status;
      if (Date.now() > deadline)
        throw new Error(`run ${runId} still ${status.state} after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /**
   * Stops a run: no further chunk starts; the one in flight stops at its next batch. A run
   * already publishing its table (finishing) is past cancelling: 409.
   */
  async cancel(runId: string): Promise<RunStatus> {
    const status = await this.runs.get(runId);
    if (!status) throw new PredcacheError("not_found", `no run ${runId}`);
    const outcome = await this.runs.transition(runId, "cancelled", { error: "cancelled" });
    if (outcome === "finishing")
      throw new PredcacheError(
        "conflict",
        `run ${runId} is publishing its table: too late to cancel (roll back or promote after it ends)`,
        { state: "finishing" },
      );
    const job = await this.runQueue.getJob(runId);
    if (job) {
      await job.removeUnprocessedChildren().catch(() => {});
      await job.remove({ removeChildren: true }).catch(() => {});
    }
    return (await this.runs.get(runId)) ?? status;
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.runQueue.close(), this.chunkQueue.close()]);
  }
}
