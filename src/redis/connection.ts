/**
 * ioredis connections. Commands fail fast while Redis is unreachable (no offline
 * queue, one retry), so a request needing Redis answers 503 within its bound instead
 * of hanging; the client keeps reconnecting in the background by itself.
 */
import { Redis, type RedisOptions } from "ioredis";

export type { Redis } from "ioredis";

export interface ConnectionOptions {
  /** BullMQ needs blocking connections that wait for Redis instead of failing. */
  role?: "commands" | "blocking";
  /** Commands (not blocking ones) that take longer fail, e.g. while Redis is frozen. */
  commandTimeoutMs?: number;
}

export function createRedis(url: string, options: ConnectionOptions = {}): Redis {
  const blocking = options.role === "blocking";
  const settings: RedisOptions = {
    lazyConnect: false,
    enableAutoPipelining: !blocking,
    enableOfflineQueue: blocking,
    maxRetriesPerRequest: blocking ? null : 1,
    connectTimeout: 2_000,
    ...(blocking || !options.commandTimeoutMs ? {} : { commandTimeout: options.commandTimeoutMs }),
    // Reconnect quickly so recovery after an outage takes well under 2 s.
    retryStrategy: (attempt) => Math.min(50 * attempt, 500),
  };
  const redis = new Redis(url, settings);
  redis.on("error", () => {
    // Errors surface on the commands that need Redis; the client reconnects by itself.
  });
  return redis;
}

/** Resolves once the connection is ready (commands fail fast before that). */
export function whenReady(redis: Redis, timeoutMs = 10_000): Promise<void> {
  if (redis.status === "ready") return Promise.resolve();
  return new Promise((done, fail) => {
    const timer = setTimeout(() => {
      redis.removeListener("ready", onReady);
      fail(new Error(`Redis not reachable within ${timeoutMs} ms (check REDIS_URL)`));
    }, timeoutMs);
    const onReady = () => {
      clearTimeout(timer);
      done();
    };
    redis.once("ready", onReady);
  });
}

/**
 * Waits for a close at most `ms`. ioredis never emits "end" for a connection disconnected
 * while it waits to reconnect (its timer is cleared, no socket is left to close), so
 * BullMQ's close of a blocking reader can wait forever right after an outage; nothing is
 * left running by then, so giving up the wait loses nothing.
 */
export async function closeWithin(closing: Promise<unknown>, ms = 2_000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<void>((done) => {
    timer = setTimeout(done, ms);
    timer.unref();
  });
  await Promise.race([
    closing.then(
      () => undefined,
      () => undefined,
    ),
    bound,
  ]);
  clearTimeout(timer);
}
