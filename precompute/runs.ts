/**
 * Precompute runs as records in Redis: spec, state, counters, and the keys each chunk
 * covered (what the table builder reads). Progress, rate and ETA derive from these.
 */
import { readFileSync } from "node:fs";
import type { Result } from "ioredis";
import { Packr } from "msgpackr";
import type { Keys } from "../src/cache/keys.ts";
import { processMetrics } from "../src/observability/metrics.ts";
import type { Redis } from "../src/redis/connection.ts";
import type { SourceSpec } from "./spec.ts";

const chunkDoneLua = readFileSync(new URL("./commands/chunk-done.lua", import.meta.url), "utf8");
const transitionLua = readFileSync(new URL("./commands/transition.lua", import.meta.url), "utf8");
const packr = new Packr({ useRecords: false });

declare module "ioredis" {
  interface RedisCommander<Context> {
    chunkDone(meta: string, done: string, index: number, rows: number): Result<number, Context>;
  }
}

export type RunState = "planning" | "running" | "finishing" | "completed" | "failed" | "cancelled";

export interface RunStatus {
  id: string;
  model: string;
  version: string;
  source: SourceSpec;
  sourceDescription: string;
  promote: boolean;
  state: RunState;
  chunks: { planned: number; total: number | null; done: number };
  /**
   * Rows gone through: those of finished chunks, and for a run cancelled or failed, those
   * its unfinished chunks wrote before they stopped (so written + skipped = rows).
   */
  rows: number;
  written: number;
  skipped: number;
  /** Observed inputs (traffic, warm) left out because this version refuses them. */
  observedRefused: number;
  createdAt: number;
  finishedAt: number | null;
  /** Rows per second since the run started. */
  rate: number;
  /** Seconds left at the current rate (null until the chunk count is known, and once ended). */
  etaSeconds: number | null;
  error: string | null;
  /** The table generation the run published. */
  table: string | null;
  /** Set once a run with promote made its version active: the version it replaced ("" none). */
  promotedFrom: string | null;
  /** Why a run with promote did not promote (another version was made active meanwhile). */
  promoteSkipped: string | null;
}

export interface NewRun {
  id: string;
  model: string;
  version: string;
  source: SourceSpec;
  sourceDescription: string;
  promote: boolean;
}

export class RunStore {
  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
  ) {
    // defineCommand is idempotent per connection; ioredis loads the script by SHA and
    // falls back to sending it again after a Redis restart.
    redis.defineCommand("chunkDone", { numberOfKeys: 2, lua: chunkDoneLua });
  }

  async create(run: NewRun): Promise<void> {
    const now = Date.now();
    await this.redis.hset(this.keys.runMeta(run.id), {
      model: run.model,
      version: run.version,
      // Uploaded inputs live in the run job, not in the status every poll reads.
      source: JSON.stringify(
        run.source.kind === "inline"
          ? { kind: "inline", inputs: [], count: run.source.inputs.length }
          : run.source,
      ),
      sourceDescription: run.sourceDescription,
      promote: run.promote ? "1" : "0",
      state: "planning",
      chunksPlanned: 0,
      rows: 0,
      written: 0,
      skipped: 0,
      createdAt: now,
    });
    await this.redis.zadd(this.keys.runs(), now, run.id);
  }

  async get(id: string): Promise<RunStatus | undefined> {
    const [meta, done] = await Promise.all([
      this.redis.hgetall(this.keys.runMeta(id)),
      this.redis.scard(this.keys.runDone(id)),
    ]);
    if (!meta.model) return undefined;
    const createdAt = Number(meta.createdAt);
    const finishedAt = meta.finishedAt ? Number(meta.finishedAt) : null;
    const rows = Number(meta.rows ?? 0) + this.cutShort(meta);
    const elapsed = ((finishedAt ?? Date.now()) - createdAt) / 1000;
    const rate = elapsed > 0 ? rows / elapsed : 0;
    const total = meta.chunksTotal === undefined ? null : Number(meta.chunksTotal);
    const rowsPerChunk = done > 0 ? rows / done : 0;
    // An ended run has nothing left to wait for, whatever its counts say.
    const etaSeconds =
      total === null || rate === 0 || finishedAt !== null
        ? null
        : Math.max(0, ((total - done) * rowsPerChunk) / rate);
    return {
      id,
      model: meta.model,
      version: meta.version ?? "",
      source: JSON.parse(meta.source ?? "{}") as SourceSpec,
      sourceDescription: meta.sourceDescription ?? "",
      promote: meta.promote === "1",
      state: (meta.state ?? "planning") as RunState,
      chunks: { planned: Number(meta.chunksPlanned ?? 0), total, done },
      rows,
      written: Number(meta.written ?? 0),
      skipped: Number(meta.skipped ?? 0),
      observedRefused: Number(meta.observedRefused ?? 0),
      createdAt,
      finishedAt,
      rate: Math.round(rate),
      etaSeconds: etaSeconds === null ? null : Math.round(etaSeconds),
      error: meta.error ?? null,
      table: meta.table ?? null,
      promotedFrom: meta.promotedFrom ?? null,
      promoteSkipped: meta.promoteSkipped ?? null,
    };
  }

  /**
   * What the chunks of a cancelled or failed run wrote before they stopped: chunks count
   * their rows once finished, their writes as they go ("cw:<index>", which a finished
   * chunk's count removes, commands/chunk-done.lua). 0 for any other run.
   */
  private cutShort(meta: Record<string, string>): number {
    if (meta.state !== "cancelled" && meta.state !== "failed") return 0;
    return Object.entries(meta)
      .filter(([field]) => field.startsWith("cw:"))
      .reduce((sum, [, written]) => sum + Number(written), 0);
  }

  /** Newest first. */
  async list(limit = 50): Promise<RunStatus[]> {
    const ids = await this.redis.zrevrange(this.keys.runs(), 0, limit - 1);
    const runs = await Promise.all(ids.map((id) => this.get(id)));
    return runs.filter((r): r is RunStatus => r !== undefined);
  }

  async set(id: string, fields: Record<string, string | number>): Promise<void> {
    await this.redis.hset(this.keys.runMeta(id), fields);
  }

  /**
   * Sets the state unless the run already ended (a late chunk must not revive a cancelled
   * run), in one step: a cancel and the worker's move to finishing cannot both win. A run
   * that is publishing its table is not cancelled ("finishing").
   */
  async transition(
    id: string,
    state: RunState,
    fields: Record<string, string | number> = {},
  ): Promise<"applied" | "ended" | "finishing"> {
    const ended = state === "completed" || state === "failed" || state === "cancelled";
    const pairs = Object.entries({ ...fields, ...(ended ? { finishedAt: Date.now() } : {}) });
    const outcome = (await this.redis.eval(
      transitionLua,
      1,
      this.keys.runMeta(id),
      state,
      ...pairs.flatMap(([name, value]) => [name, String(value)]),
    )) as "applied" | "ended" | "finishing";
    if (ended && outcome === "applied") {
      // Counted where the run ended, once: the script applies one ending only.
      processMetrics().runsEnded.inc({ outcome: state });
      // Only a build reads them, and an ended run builds nothing more. Best effort: the
      // run has ended either way, and gc deletes what is left.
      await this.dropChunkKeys(id).catch(() => 0);
    }
    return outcome;
  }

  /**
   * Deletes an ended run's lists of chunk keys (a copy of every key it covered: tens of
   * MB for a big run); its status and counters stay. Returns how many were deleted.
   */
  async dropChunkKeys(id: string): Promise<number> {
    const [planned, total, dropped] = await this.redis.hmget(
      this.keys.runMeta(id),
      "chunksPlanned",
      "chunksTotal",
      "keysDropped",
    );
    if (dropped) return 0;
    const count = Math.max(Number(planned ?? 0), Number(total ?? 0));
    let deleted = 0;
    // All in the run's slot ({r:<run>}): one UNLINK per 500, on a cluster too.
    for (let start = 0; start < count; start += 500) {
      const names = Array.from({ length: Math.min(500, count - start) }, (_, i) =>
        this.keys.runChunkKeys(id, start + i),
      );
      deleted += await this.redis.unlink(...names);
    }
    // So gc passes it over next time. A chunk that was running drops its own list, saved
    // after this, when it finds the run ended (worker.ts).
    await this.redis.hset(this.keys.runMeta(id), "keysDropped", 1);
    return deleted;
  }

  /**
   * Ends a run as failed; the first reason recorded is the one kept (the root cause).
   * True when this call ended it (false: it had ended already).
   */
  async fail(id: string, reason: string): Promise<boolean> {
    await this.redis.hsetnx(this.keys.runMeta(id), "error", reason);
    return (await this.transition(id, "failed")) === "applied";
  }

  async state(id: string): Promise<RunState | undefined> {
    return ((await this.redis.hget(this.keys.runMeta(id), "state")) ?? undefined) as
      | RunState
      | undefined;
  }

  async chunkPlanned(id: string, index: number): Promise<void> {
    await this.redis.hset(this.keys.runMeta(id), "chunksPlanned", index + 1);
  }

  /**
   * Where a chunk's writes are counted, with the writes themselves (PredictionStore.put):
   * what an attempt wrote before it died or its run was cancelled is the run's work too,
   * and a retry finds those keys present.
   */
  writtenCounters(id: string, index: number): { key: string; field: string }[] {
    const meta = this.keys.runMeta(id);
    return [
      { key: meta, field: "written" },
      { key: meta, field: `cw:${index}` },
    ];
  }

  /**
   * Counts a finished chunk once (its rows, and as skipped the keys no attempt of it
   * wrote); returns how many are done.
   */
  chunkDone(id: string, index: number, rows: number): Promise<number> {
    return this.redis.chunkDone(this.keys.runMeta(id), this.keys.runDone(id), index, rows);
  }

  async saveChunkKeys(id: string, index: number, keys: readonly string[]): Promise<void> {
    await this.redis.set(this.keys.runChunkKeys(id, index), packr.pack(keys));
  }

  async dropChunkList(id: string, index: number): Promise<void> {
    await this.redis.unlink(this.keys.runChunkKeys(id, index));
  }

  /** A chunk's keys, for its run's table build; throws when the list is gone. */
  async chunkKeys(id: string, index: number): Promise<string[]> {
    const bytes = await this.redis.getBuffer(this.keys.runChunkKeys(id, index));
    // Every chunk saves its list before it is done, and the lists go when the run ends: a
    // build that finds one missing belongs to a run that ended meanwhile (failed as
    // stalled, say). Its table would lack that chunk's keys, silently.
    if (!bytes)
      throw new Error(`run ${id}: chunk ${index}'s keys are gone (the run ended meanwhile?)`);
    return packr.unpack(bytes) as string[];
  }
}
