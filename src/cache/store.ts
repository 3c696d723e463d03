/**
 * L2: predictions in Redis, per model version. Entries live in bucketed hashes (many
 * small hashes that Redis keeps as compact listpacks) rather than one string per key;
 * concurrent reads ride ioredis auto-pipelining, so a burst of lookups is one round trip.
 */

import type { Prediction } from "../model/decoding.ts";
import type { ModelVersion } from "../model/registry.ts";
import type { Redis } from "../redis/connection.ts";
import { decodePrediction, encodePrediction } from "./codec.ts";
import type { Keys } from "./keys.ts";

export interface StoreOptions {
  /** log2 of the bucket count per model version; aim for ≲ 128 entries per bucket. */
  bucketBits: number;
}

export interface StoredEntry {
  key: string;
  prediction: Prediction;
}

export class PredictionStore {
  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    private readonly options: StoreOptions,
  ) {}

  bucketOf(model: ModelVersion, key: string): string {
    return this.keys.bucket(
      model.name,
      model.version,
      model.encoder.hash,
      key,
      this.options.bucketBits,
    );
  }

  async get(model: ModelVersion, key: string): Promise<Prediction | undefined> {
    const bytes = await this.redis.hgetBuffer(this.bucketOf(model, key), key);
    return bytes ? decodePrediction(model.manifest, bytes) : undefined;
  }

  /** Reads many keys in one pipeline; undefined where absent. */
  async getMany(model: ModelVersion, keys: readonly string[]): Promise<(Prediction | undefined)[]> {
    if (keys.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const key of keys) pipeline.hgetBuffer(this.bucketOf(model, key), key);
    const replies = (await pipeline.exec()) ?? [];
    return replies.map(([error, bytes]) => {
      if (error) throw error;
      return bytes ? decodePrediction(model.manifest, bytes as Buffer) : undefined;
    });
  }

  /** Which of `keys` are already stored (for precompute's skip-existing). */
  async has(model: ModelVersion, keys: readonly string[]): Promise<boolean[]> {
    if (keys.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const key of keys) pipeline.hexists(this.bucketOf(model, key), key);
    const replies = (await pipeline.exec()) ?? [];
    return replies.map(([error, exists]) => {
      if (error) throw error;
      return exists === 1;
    });
  }

  /** Writes entries in one pipeline, one HSET per bucket. Values are immutable facts: rewriting is harmless. */
  async put(model: ModelVersion, entries: readonly StoredEntry[]): Promise<void> {
    if (entries.length === 0) return;
    const byBucket = new Map<string, (string | Buffer)[]>();
    for (const { key, prediction } of entries) {
      const bucket = this.bucketOf(model, key);
      const args = byBucket.get(bucket) ?? [];
      byBucket.set(bucket, args);
      args.push(key, encodePrediction(model.manifest, prediction));
    }
    const pipeline = this.redis.pipeline();
    for (const [bucket, args] of byBucket) pipeline.hset(bucket, ...args);
    const replies = (await pipeline.exec()) ?? [];
    for (const [error] of replies) if (error) throw error;
  }
}
