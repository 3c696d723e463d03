/**
 * Versions whose next table must be rebuilt from Redis: a table found damaged on disk is
 * set aside, and the next generation would otherwise be built on the one before it,
 * leaving out every entry only the damaged one held (they are still in Redis). Whoever
 * finds the damage (an API process listing tables, a worker choosing its base) marks the
 * version; the next build of it reads all its entries from Redis, then clears the mark.
 */
import type { Keys } from "../cache/keys.ts";
import type { Redis } from "../redis/connection.ts";
import { scanKeys } from "../redis/keyspace.ts";

/** The model version a table generation (`<version>.<suffix>`) is of. */
export function versionOfGeneration(generation: string): string {
  return generation.slice(0, generation.indexOf("."));
}

export async function markRebuild(
  redis: Redis,
  keys: Keys,
  model: string,
  version: string,
): Promise<void> {
  await redis.sadd(keys.tableRebuild(model), version);
}

export async function rebuildMarked(
  redis: Redis,
  keys: Keys,
  model: string,
  version: string,
): Promise<boolean> {
  return (await redis.sismember(keys.tableRebuild(model), version)) === 1;
}

export async function clearRebuild(
  redis: Redis,
  keys: Keys,
  model: string,
  version: string,
): Promise<void> {
  await redis.srem(keys.tableRebuild(model), version);
}

/** Every key the version has in Redis, a bucket at a time. */
export async function* storedKeys(
  redis: Redis,
  keys: Keys,
  model: string,
  version: string,
): AsyncGenerator<string[]> {
  for await (const buckets of scanKeys(redis, keys.bucketPattern(model, version)))
    for (const bucket of buckets) {
      const fields = await redis.hkeys(bucket);
      if (fields.length > 0) yield fields;
    }
}
