/**
 * L2: predictions in Redis, per model version. Entries live in bucketed hashes (many
 * small hashes that Redis keeps as compact listpacks) rather than one string per key.
 * The first read of an event-loop turn is written at once, so Redis answers it while the
 * turn's other requests are parsed; reads after it in the turn ride ioredis
 * auto-pipelining, so the rest of a burst of lookups is one more write.
 */

import { Command, type Result } from "ioredis";
import type { Prediction } from "../model/decoding.ts";
import type { ModelVersion } from "../model/registry.ts";
import { isCluster, type Redis, type Standalone } from "../redis/connection.ts";
import { CorruptEntryError, decodePrediction, encodePrediction } from "./codec.ts";
import type { Keys } from "./keys.ts";

/**
 * Many entries per command on one Redis: precompute checks and writes hundreds of keys a
 * batch, which as one HEXISTS or HSET each cost the client far more than Redis (a command
 * object, its encoding and its reply per key). Still one HEXISTS / HSET per entry inside.
 */
const HAS_MANY_LUA = `local found = {}
for i = 1, #KEYS do found[i] = redis.call("HEXISTS", KEYS[i], ARGV[i]) end
return found`;
// KEYS: n buckets, then the hashes of the counters; ARGV: n, n key/value pairs, then the
// counters' fields. Returns how many entries were new, and adds as many to each counter in
// the same step: a key written meanwhile by another is not counted, and a writer that dies
// after the write cannot leave it uncounted.
const PUT_MANY_LUA = `local n = tonumber(ARGV[1])
local added = 0
for i = 1, n do added = added + redis.call("HSET", KEYS[i], ARGV[2 * i], ARGV[2 * i + 1]) end
if added > 0 then
  for j = 1, #KEYS - n do redis.call("HINCRBY", KEYS[n + j], ARGV[2 * n + 1 + j], added) end
end
return added`;
/** Entries per script call, so one call keeps Redis busy for well under a millisecond. */
const PER_SCRIPT = 512;

declare module "ioredis" {
  interface RedisCommander<Context> {
    predcacheHasMany(numKeys: number, ...keysThenFields: string[]): Result<number[], Context>;
    predcachePutMany(
      numKeys: number,
      ...keysThenArgs: (string | Buffer | number)[]
    ): Result<number, Context>;
  }
}

export interface StoreOptions {
  /** log2 of the bucket count per model version; aim for ≲ 128 entries per bucket. */
  bucketBits: number;
  /** Told of a stored value that does not decode for its manifest (read as absent). */
  onCorrupt?: (entry: CorruptEntry) => void;
}

/** A stored value that is not a prediction of its version: where it is and why. */
export interface CorruptEntry {
  model: ModelVersion;
  key: string;
  bucket: string;
  reason: string;
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
  ) {
    if (!isCluster(redis)) {
      // Idempotent per connection; ioredis sends the script again after a Redis restart.
      redis.defineCommand("predcacheHasMany", { lua: HAS_MANY_LUA });
      redis.defineCommand("predcachePutMany", { lua: PUT_MANY_LUA });
    }
  }

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
    const bucket = this.bucketOf(model, key);
    const bytes = this.sentThisTurn
      ? await this.redis.hgetBuffer(bucket, key)
      : await this.readNow(bucket, key);
    return bytes ? this.decoded(model, key, bucket, bytes) : undefined;
  }

  /**
   * A value that does not decode is read as absent: the lookup becomes a miss, whose live
   * answer then overwrites it, rather than failing every time it is asked.
   */
  private decoded(
    model: ModelVersion,
    key: string,
    bucket: string,
    bytes: Buffer,
  ): Prediction | undefined {
    try {
      return decodePrediction(model.manifest, bytes);
    } catch (error) {
      if (!(error instanceof CorruptEntryError)) throw error;
      this.options.onCorrupt?.({ model, key, bucket, reason: error.message });
      return undefined;
    }
  }

  /** A read was written at once in this event-loop turn (cleared when the turn ends). */
  private sentThisTurn = false;
  private readonly turnEnded = () => {
    this.sentThisTurn = false;
  };

  /**
   * HGET written now, not at the end of the turn as auto-pipelining would. On a hot key
   * served from Redis every waiting request shares one read: Redis idling until the turn's
   * end cost 1–6% of req/s (paired runs, bench:serving's load). Same connection, same
   * timeout (sendCommand applies it).
   */
  private readNow(bucket: string, key: string): Promise<Buffer | null> {
    this.sentThisTurn = true;
    setImmediate(this.turnEnded);
    const command = new Command("hget", [bucket, key], { replyEncoding: null });
    this.redis.sendCommand(command);
    return command.promise as Promise<Buffer | null>;
  }

  /** Reads many keys in one round trip; undefined where absent. */
  async getMany(model: ModelVersion, keys: readonly string[]): Promise<(Prediction | undefined)[]> {
    const replies = await this.each(keys, (redis, key) =>
      redis.hgetBuffer(this.bucketOf(model, key), key),
    );
    return replies.map((bytes, i) => {
      const key = keys[i] as string;
      return bytes
        ? this.decoded(model, key, this.bucketOf(model, key), bytes as Buffer)
        : undefined;
    });
  }

  /** Which of `keys` are already stored (for precompute's skip-existing). */
  async has(model: ModelVersion, keys: readonly string[]): Promise<boolean[]> {
    if (isCluster(this.redis)) {
      const replies = await this.each(keys, (redis, key) =>
        redis.hexists(this.bucketOf(model, key), key),
      );
      return replies.map((exists) => exists === 1);
    }
    const redis = this.redis;
    const replies = await Promise.all(
      slices(keys).map((slice) =>
        redis.predcacheHasMany(
          slice.length,
          ...slice.map((key) => this.bucketOf(model, key)),
          ...slice,
        ),
      ),
    );
    return replies.flat().map((exists) => exists === 1);
  }

  /**
   * Writes entries: on one Redis a few script calls (one HSET per entry inside), on a
   * cluster one auto-pipelined HSET per bucket. Values are immutable facts: rewriting is
   * harmless. Returns how many were not stored before (whoever wrote them first), and
   * adds that to each of `countInto` (hash fields) with the write where Redis allows (one
   * Redis: in the same script; a cluster: the counters live in other slots, so after).
   */
  async put(
    model: ModelVersion,
    entries: readonly StoredEntry[],
    countInto: readonly { key: string; field: string }[] = [],
  ): Promise<number> {
    if (entries.length === 0) return 0;
    if (isCluster(this.redis)) {
      const byBucket = new Map<string, (string | Buffer)[]>();
      for (const { key, prediction } of entries) {
        const bucket = this.bucketOf(model, key);
        const args = byBucket.get(bucket) ?? [];
        byBucket.set(bucket, args);
        args.push(key, encodePrediction(model.manifest, prediction));
      }
      const added = (
        await this.each([...byBucket], (redis, [bucket, args]) => redis.hset(bucket, ...args))
      ).reduce((sum, n) => sum + n, 0);
      if (added > 0)
        await Promise.all(countInto.map((c) => this.redis.hincrby(c.key, c.field, added)));
      return added;
    }
    const redis = this.redis;
    const c = countInto.length;
    const added = await Promise.all(
      slices(entries).map((slice) => {
        const n = slice.length;
        const keyCount = n + c;
        const args: (string | Buffer | number)[] = new Array(keyCount + 1 + 2 * n + c);
        args[keyCount] = n;
        slice.forEach(({ key, prediction }, i) => {
          args[i] = this.bucketOf(model, key);
          args[keyCount + 1 + 2 * i] = key;
          args[keyCount + 2 + 2 * i] = encodePrediction(model.manifest, prediction);
        });
        countInto.forEach(({ key, field }, j) => {
          args[n + j] = key;
          args[keyCount + 1 + 2 * n + j] = field;
        });
        return redis.predcachePutMany(keyCount, ...args);
      }),
    );
    return added.reduce((sum, n) => sum + n, 0);
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

function slices<T>(items: readonly T[]): (readonly T[])[] {
  const out: (readonly T[])[] = [];
  for (let start = 0; start < items.length; start += PER_SCRIPT)
    out.push(items.slice(start, start + PER_SCRIPT));
  return out;
}
