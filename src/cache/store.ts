/**
 * L2: predictions in Redis, per model version. Entries live in bucketed hashes (many
 * small hashes that Redis keeps as compact listpacks) rather than one string per key;
 * concurrent reads ride ioredis auto-pipelining, so a burst of lookups is one round trip.
 */

import type { Prediction } from "../model/decoding.ts";
import type { ModelVersion } from "../model/registry.ts";
import { isCluster, type Redis, type Standalone } from "../redis/connection.ts";
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

  /** Reads many keys in one round trip; undefined where absent. */
  async getMany(model: ModelVersion, keys: readonly string[]): Promise<(Prediction | undefined)[]> {
    const replies = await this.each(keys, (redis, key) =>
      redis.hgetBuffer(this.bucketOf(model, key), key),
    );
    return replies.map((bytes) =>
      bytes ? decodePrediction(model.manifest, bytes as Buffer) : undefined,
    );
  }

  /** Which of `keys` are already stored (for precompute's skip-existing). */
  async has(model: ModelVersion, keys: readonly string[]): Promise<boolean[]> {
    const replies = await this.each(keys, (redis, key) =>
      redis.hexists(this.bucketOf(model, key), key),
    );
    return replies.map((exists) => exists === 1);
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
    await this.each([...byBucket], (redis, [bucket, args]) => redis.hset(bucket, ...args));
  }

  /**
   * One command per item in one round trip. On one Redis an explicit pipeline; on a
   * cluster, where a pipeline must stay within one node, auto-pipelining groups the
   * commands per node instead.
   */
  private async each<T, R>(
    items: readonly T[],
    command: (redis: Standalone, item: T) => Promise<R>,
  ): Promise<R[]> {
    if (items.length === 0) return [];
    if (isCluster(this.redis)) {
      // A cluster has the same commands; only its pipelines are narrower.
      const cluster = this.redis as unknown as Standalone;
      return Promise.all(items.map((item) => command(cluster, item)));
    }
    const pipeline = this.redis.pipeline();
    for (const item of items) void command(pipeline as unknown as Standalone, item);
    const replies = (await pipeline.exec()) ?? [];
    return replies.map(([error, reply]) => {
      if (error) throw error;
      return reply as R;
    });
  }
}
