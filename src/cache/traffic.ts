/**
 * Observed traffic: how often each canonical input is asked, per model and encoding, in
 * a bounded sorted set. Every miss counts; hits are sampled (weight 1/rate) so the L1
 * hot path rarely touches Redis. Precompute's traffic source reads the top K back:
 * what users actually ask becomes precomputed.
 */
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

/** Trim about once every this many writes: bounded memory without a trim per request. */
const TRIM_EVERY = 64;

export class TrafficRecorder {
  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    private readonly options: TrafficOptions,
  ) {}

  recordMiss(model: ModelVersion, key: string): void {
    this.add(model, key, 1);
  }

  recordHit(model: ModelVersion, key: string): void {
    const rate = this.options.hitSampleRate;
    if (rate > 0 && Math.random() < rate) this.add(model, key, 1 / rate);
  }

  private add(model: ModelVersion, key: string, weight: number): void {
    const set = this.keys.traffic(model.name, model.encoder.hash);
    // Best effort: losing a count during a Redis outage must not fail the request.
    this.redis.zincrby(set, weight, key).catch(() => {});
    if (Math.random() < 1 / TRIM_EVERY) {
      this.redis.zremrangebyrank(set, 0, -(this.options.maxEntries + 1)).catch(() => {});
    }
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
