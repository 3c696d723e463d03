/**
 * Read-through over the tiers: L1 (in-process LRU) → L2 (Redis). Concurrent lookups of
 * one key in this process share one Redis read (no thundering herd). A Redis failure
 * becomes `redis_unavailable`; L1 hits never touch Redis, so they keep working in an
 * outage.
 */
import { redisUnavailable } from "../errors.ts";
import type { Prediction } from "../model/decoding.ts";
import type { ModelVersion } from "../model/registry.ts";
import { MemoryCache } from "./memory.ts";
import type { ResidentTables } from "./resident.ts";
import type { PredictionStore } from "./store.ts";

export type Source = "memory" | "table" | "redis" | "live";

export interface Hit {
  prediction: Prediction;
  source: Source;
}

export class Tiers {
  private readonly inFlight = new Map<string, Promise<Prediction | undefined>>();

  constructor(
    readonly memory: MemoryCache,
    readonly store: PredictionStore,
    readonly resident?: ResidentTables,
  ) {}

  /** L1 and the resident table: no I/O. */
  withoutRedis(
    model: ModelVersion,
    key: string,
    /** MemoryCache.id(…) of model and key, when the caller keeps it made. */
    id = MemoryCache.id(model.name, model.version, key),
  ): Hit | undefined {
    const cached = this.memory.get(id);
    if (cached) return { prediction: cached, source: "memory" };
    const fromTable = this.resident?.get(model, key);
    if (fromTable) {
      this.remember(model, key, fromTable);
      return { prediction: fromTable, source: "table" };
    }
    return undefined;
  }

  async lookup(model: ModelVersion, key: string): Promise<Hit | undefined> {
    return this.withoutRedis(model, key) ?? this.fromRedis(model, key);
  }

  /** L2 only (the caller has found nothing in L1 or the resident table). */
  async fromRedis(model: ModelVersion, key: string): Promise<Hit | undefined> {
    const id = MemoryCache.id(model.name, model.version, key);
    let read = this.inFlight.get(id);
    if (!read) {
      read = this.store.get(model, key).then(
        (prediction) => {
          // Into L1 once per read, not once per lookup that shared it (sizing one costs).
          if (prediction) this.memory.set(id, prediction);
          return prediction;
        },
        // Only the read's own failure is Redis's (an L1 error is not an outage).
        (error: unknown) => {
          throw redisUnavailable(error);
        },
      );
      this.inFlight.set(id, read);
      // Shared until the end of the event-loop turn it completes in: lookups that arrive in
      // that same turn are as concurrent as those that arrived while it was in flight.
      // (Inline arrows: tsx names a closure kept in a const, a defineProperty per read.)
      read.then(
        () => this.forgetSoon(id),
        () => this.forgetSoon(id),
      );
    }
    const prediction = await read;
    if (!prediction) return undefined;
    return { prediction, source: "redis" };
  }

  private forgetSoon(id: string): void {
    setImmediate(() => this.inFlight.delete(id));
  }

  /** Many keys: L1 first, then one Redis pipeline for all L1 misses. */
  async lookupMany(model: ModelVersion, keys: readonly string[]): Promise<(Hit | undefined)[]> {
    const hits: (Hit | undefined)[] = keys.map((key) => this.withoutRedis(model, key));
    const missing = keys.flatMap((_, i) => (hits[i] ? [] : [i]));
    if (missing.length === 0) return hits;
    let found: (Prediction | undefined)[];
    try {
      found = await this.store.getMany(
        model,
        missing.map((i) => keys[i] as string),
      );
    } catch (error) {
      throw redisUnavailable(error);
    }
    missing.forEach((index, j) => {
      const prediction = found[j];
      if (!prediction) return;
      this.remember(model, keys[index] as string, prediction);
      hits[index] = { prediction, source: "redis" };
    });
    return hits;
  }

  remember(model: ModelVersion, key: string, prediction: Prediction): void {
    this.memory.set(MemoryCache.id(model.name, model.version, key), prediction);
  }
}
