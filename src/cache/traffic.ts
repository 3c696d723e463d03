/**
 * Observed traffic: how often each canonical input is asked, per model and encoding, in
 * a bounded sorted set. Every miss counts; hits are sampled (weight 1/rate) so the L1
 * hot path rarely touches Redis. Counts gather in process and go to Redis every
 * FLUSH_MS in one batch, not one ZINCRBY per miss (a burst of misses repeats keys).
 * Precompute's traffic source reads the top K back: what users ask becomes precomputed.
 */
import type { Result } from "ioredis";
import type { ModelVersion } from "../model/registry.ts";
import type { Redis } from "../redis/connection.ts";
import type { Keys } from "./keys.ts";

export interface TrafficOptions {
  /** Entries kept per model and encoding (the least asked are trimmed). */
  maxEntries: number;
  /** Share of hits recorded, 0–1. */
  hitSampleRate: number;
}

export interface ObservedInput {
  key: string;
  count: number;
}

/** Trim about once every this many flushes: bounded memory without a trim per write. */
const TRIM_EVERY = 16;
/** How long counts gather in process (ms); also the staleness of what Redis shows. */
const FLUSH_MS = 100;
/** Distinct keys gathered before a flush is forced, whatever the time. */
const FLUSH_KEYS = 5_000;
/** Keys counted per script call. */
const PER_SCRIPT = 1_000;

/**
 * ZINCRBY for many members of one sorted set (ZADD INCR takes one member), then a trim to
 * the most asked ARGV[1] when it is not -1: one command per flush, not one per key, each
 * of which costs the client a command object, its encoding and its reply.
 */
const COUNT_MANY = `for i = 2, #ARGV, 2 do redis.call("ZINCRBY", KEYS[1], ARGV[i], ARGV[i + 1]) end
local keep = tonumber(ARGV[1])
if keep >= 0 then redis.call("ZREMRANGEBYRANK", KEYS[1], 0, -(keep + 1)) end
return 1`;

declare module "ioredis" {
  interface RedisCommander<Context> {
    predcacheCountMany(key: string, ...args: (string | number)[]): Result<number, Context>;
  }
}

export class TrafficRecorder {
  /** Sorted set → canonical key → weight not yet in Redis. */
  private pending = new Map<string, Map<string, number>>();
  private pendingKeys = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    private readonly options: TrafficOptions,
  ) {
    // Defined when set up, not at first use (see defineClaimScripts in ../live/claims.ts);
    // with its key count fixed, the key comes first, so a cluster routes it by that key.
    redis.defineCommand("predcacheCountMany", { lua: COUNT_MANY, numberOfKeys: 1 });
  }

  recordMiss(model: ModelVersion, key: string): void {
    this.add(model, key, 1);
  }

  recordHit(model: ModelVersion, key: string): void {
    const rate = this.options.hitSampleRate;
    if (rate > 0 && Math.random() < rate) this.add(model, key, 1 / rate);
  }

  private add(model: ModelVersion, key: string, weight: number): void {
    const set = this.keys.traffic(model.name, model.encoder.hash);
    let counts = this.pending.get(set);
    if (!counts) {
      counts = new Map();
      this.pending.set(set, counts);
    }
    const before = counts.get(key);
    counts.set(key, (before ?? 0) + weight);
    if (before === undefined && ++this.pendingKeys >= FLUSH_KEYS) void this.flush();
    else if (!this.timer) {
      this.timer = setTimeout(() => void this.flush(), FLUSH_MS);
      this.timer.unref();
    }
  }

  /** Writes the gathered counts now (before a traffic run is planned, and at close). */
  async flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.pending;
    this.pending = new Map();
    this.pendingKeys = 0;
    // Best effort: counts lost during a Redis outage must not fail anything.
    await Promise.all(
      [...batch].map(async ([set, counts]) => {
        const redis = this.redis;
        const trim = Math.random() < 1 / TRIM_EVERY ? this.options.maxEntries : -1;
        let args: (string | number)[] = [];
        const calls: Promise<unknown>[] = [];
        for (const [key, weight] of counts) {
          args.push(weight, key);
          if (args.length >= 2 * PER_SCRIPT) {
            calls.push(redis.predcacheCountMany(set, -1, ...args));
            args = [];
          }
        }
        calls.push(redis.predcacheCountMany(set, trim, ...args));
        await Promise.all(calls).catch(() => {});
      }),
    );
  }
}

/** The K most asked canonical keys of a model's encoding, most asked first. */
export async function topObserved(
  redis: Redis,
  keys: Keys,
  model: string,
  encodingHash: string,
  k: number,
): Promise<ObservedInput[]> {
  const flat = await redis.zrevrange(keys.traffic(model, encodingHash), 0, k - 1, "WITHSCORES");
  const top: ObservedInput[] = [];
  for (let i = 0; i + 1 < flat.length; i += 2)
    top.push({ key: flat[i] as string, count: Number(flat[i + 1]) });
  return top;
}
