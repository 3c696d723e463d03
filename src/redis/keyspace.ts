/**
 * Whole-keyspace walks that hold on a Redis Cluster too: SCAN sees only the node it is
 * sent to, and a multi-key UNLINK must not span slots.
 */
import { isCluster, type Redis } from "./connection.ts";

/** Batches of keys matching `pattern`, from every master of a cluster or the one Redis. */
export async function* scanKeys(
  redis: Redis,
  pattern: string,
  count = 1000,
): AsyncGenerator<string[]> {
  const nodes = isCluster(redis) ? redis.nodes("master") : [redis];
  for (const node of nodes) {
    let cursor = "0";
    do {
      const [next, keys] = await node.scan(cursor, "MATCH", pattern, "COUNT", count);
      cursor = next;
      if (keys.length > 0) yield keys;
    } while (cursor !== "0");
  }
}

/** Unlinks keys: one command on one Redis, one per key (auto-pipelined per node) on a cluster. */
export async function unlinkKeys(redis: Redis, keys: readonly string[]): Promise<number> {
  if (keys.length === 0) return 0;
  if (!isCluster(redis)) return redis.unlink(...keys);
  const removed = await Promise.all(keys.map((key) => redis.unlink(key)));
  return removed.reduce((sum, n) => sum + n, 0);
}
