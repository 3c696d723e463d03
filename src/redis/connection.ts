/**
 * ioredis connections, to one Redis or to a Redis Cluster. Commands fail fast while Redis
 * is unreachable (no offline queue, one retry), so a request needing Redis answers 503
 * within its bound instead of hanging; the client keeps reconnecting by itself.
 */
import { Cluster, type ClusterOptions, type RedisOptions, Redis as Standalone } from "ioredis";

/** A connection to Redis, whichever the topology; the code uses what both have in common. */
export type Redis = Standalone | Cluster;
export type { Standalone };

/** `redis-cluster://[user:password@]host:port,host:port,...`: seed nodes of a Redis Cluster. */
const CLUSTER_SCHEME = "redis-cluster://";

export interface ConnectionOptions {
  /**
   * BullMQ needs blocking connections that wait for Redis instead of failing; a
   * subscriber is one too, whose channels subscribe() below restores after a reconnect.
   */
  role?: "commands" | "blocking" | "subscriber";
  /** Commands (not blocking ones) that take longer fail, e.g. while Redis is frozen. */
  commandTimeoutMs?: number;
}

export function createRedis(url: string, options: ConnectionOptions = {}): Redis {
  const blocking = options.role === "blocking" || options.role === "subscriber";
  const settings: RedisOptions = {
    lazyConnect: false,
    enableAutoPipelining: !blocking,
    enableOfflineQueue: blocking,
    maxRetriesPerRequest: blocking ? null : 1,
    connectTimeout: 2_000,
    ...(blocking || !options.commandTimeoutMs ? {} : { commandTimeout: options.commandTimeoutMs }),
    // Reconnect quickly so recovery after an outage takes well under 2 s.
    retryStrategy: (attempt) => Math.min(50 * attempt, 500),
    // subscribe() restores the channels instead (see there).
    ...(options.role === "subscriber" ? { autoResubscribe: false } : {}),
  };
  const redis = url.startsWith(CLUSTER_SCHEME)
    ? connectCluster(url, settings)
    : new Standalone(url, settings);
  redis.on("error", () => {
    // Errors surface on the commands that need Redis; the client reconnects by itself.
  });
  return redis;
}

const subscribedChannels = new WeakMap<Redis, Set<string>>();

/**
 * Subscribes a "subscriber" connection to a channel, now and after every reconnect.
 * ioredis's own resubscription (autoResubscribe) sends SUBSCRIBE without a handler: closed
 * before Redis answers it (a shutdown just after Redis came back), it leaves an unhandled
 * rejection, which ends a Node process. Here a failed resubscription is retried on the
 * next reconnect. A cluster's subscriber connection is ioredis's own and resubscribes
 * without that gap.
 */
export async function subscribe(redis: Redis, channel: string): Promise<void> {
  if (!isCluster(redis)) {
    let channels = subscribedChannels.get(redis);
    if (!channels) {
      const known = new Set<string>();
      channels = known;
      subscribedChannels.set(redis, known);
      redis.on("ready", () => {
        if (known.size > 0) redis.subscribe(...known).catch(() => {});
      });
    }
    channels.add(channel);
  }
  await redis.subscribe(channel);
}

export function isCluster(redis: Redis): redis is Cluster {
  return redis instanceof Cluster;
}

/** Parses a cluster URL into seed nodes and credentials, which every node shares. */
export function parseClusterUrl(url: string): {
  nodes: { host: string; port: number }[];
  username?: string;
  password?: string;
} {
  const rest = url.slice(CLUSTER_SCHEME.length).replace(/\/.*$/, "");
  const at = rest.lastIndexOf("@");
  const hosts = at === -1 ? rest : rest.slice(at + 1);
  const nodes = hosts
    .split(",")
    .filter(Boolean)
    .map((node) => {
      const { hostname, port } = new URL(`redis://${node}`);
      return { host: hostname.replace(/^\[|\]$/g, ""), port: Number(port || 6379) };
    });
  if (nodes.length === 0) throw new Error(`no cluster nodes in ${url}`);
  if (at === -1) return { nodes };
  const [user = "", password = ""] = rest.slice(0, at).split(":");
  return {
    nodes,
    ...(user ? { username: decodeURIComponent(user) } : {}),
    ...(password ? { password: decodeURIComponent(password) } : {}),
  };
}

/** Whether `url` names a Redis this module can connect to (config validation). */
export function isRedisUrl(url: string): boolean {
  try {
    if (url.startsWith(CLUSTER_SCHEME)) return parseClusterUrl(url).nodes.length > 0;
    return /^rediss?:$/.test(new URL(url).protocol);
  } catch {
    return false;
  }
}

function connectCluster(url: string, node: RedisOptions): Cluster {
  const { nodes, username, password } = parseClusterUrl(url);
  const { enableAutoPipelining, enableOfflineQueue, retryStrategy, autoResubscribe, ...perNode } =
    node;
  const options: ClusterOptions = {
    // Auto-pipelining in a cluster groups commands per node: a burst of lookups over
    // buckets in many slots is one round trip per node, no cross-slot pipeline needed.
    enableAutoPipelining,
    enableOfflineQueue,
    clusterRetryStrategy: (attempt) => retryStrategy?.(attempt) ?? 500,
    // Slot moves and fail-overs are retried a few times before a command gives up.
    maxRedirections: 8,
    retryDelayOnFailover: 100,
    redisOptions: {
      ...perNode,
      ...(username ? { username } : {}),
      ...(password ? { password } : {}),
    },
  };
  return new Cluster(nodes, options);
}

/** Replies of a Redis that refuses the credentials it was given (or wants some). */
const AUTH_REFUSED = /^(WRONGPASS|NOAUTH|NOPERM)|invalid password/i;

/**
 * Resolves once the connection is ready (commands fail fast before that). Refused
 * credentials fail it at once, saying so; past `timeoutMs` it fails with the last
 * connection error (neither names the URL: it may hold a password).
 */
export function whenReady(redis: Redis, timeoutMs = 10_000): Promise<void> {
  if (redis.status === "ready") return Promise.resolve();
  return new Promise((done, fail) => {
    let last: string | undefined;
    const stop = (error?: Error) => {
      clearTimeout(timer);
      redis.removeListener("ready", onReady);
      redis.removeListener("error", onError);
      if (error) fail(error);
      else done();
    };
    const timer = setTimeout(() => {
      stop(
        new Error(
          `Redis not reachable within ${timeoutMs} ms (check REDIS_URL)${last ? `: ${last}` : ""}`,
        ),
      );
    }, timeoutMs);
    const onReady = () => stop();
    const onError = (error: Error) => {
      last = error.message;
      if (AUTH_REFUSED.test(error.message))
        stop(new Error(`Redis refused the credentials in REDIS_URL: ${error.message}`));
    };
    redis.once("ready", onReady);
    redis.on("error", onError);
  });
}

/**
 * Waits for a close at most `ms`. ioredis never emits "end" for a connection disconnected
 * while it waits to reconnect (its timer is cleared, no socket is left to close), so
 * BullMQ's close of a blocking reader can wait forever right after an outage; nothing is
 * left running by then, so giving up the wait loses nothing.
 */
export async function closeWithin(closing: Promise<unknown>, ms = 2_000): Promise<void> {
  await settledWithin(closing, ms);
}

/** Whether `work` settled (fulfilled or not) within `ms`. */
export async function settledWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<false>((done) => {
    timer = setTimeout(() => done(false), ms);
    timer.unref();
  });
  const settled = await Promise.race([
    work.then(
      () => true as const,
      () => true as const,
    ),
    bound,
  ]);
  clearTimeout(timer);
  return settled;
}

/**
 * Closes a connection: QUIT when Redis answers in time, else dropped (a QUIT sent to a
 * Redis that is down waits for a reconnect that may never come).
 */
export async function closeRedis(redis: Redis, ms = 1_000): Promise<void> {
  if (redis.status === "end") return;
  if (redis.status !== "ready" || !(await settledWithin(redis.quit(), ms))) redis.disconnect();
}

/**
 * Closes BullMQ workers: jobs running get `graceMs` to finish (none when Redis is not
 * connected: nothing could be written); past it the workers stop without them, and their
 * jobs, stalled once their locks lapse, are run again by a worker of this queue (they are
 * made to be). Returns whether every job running had finished.
 */
export async function closeWorkers(
  workers: readonly { pause(): Promise<void>; close(force?: boolean): Promise<void> }[],
  redis: Redis,
  graceMs: number,
): Promise<boolean> {
  const grace = redis.status === "ready" ? graceMs : 0;
  // pause() waits for the jobs running; close() would too, and a close(true) after it
  // would only return that same wait (BullMQ closes once).
  const finished = await settledWithin(
    Promise.allSettled(workers.map((worker) => worker.pause())),
    grace,
  );
  await closeWithin(Promise.allSettled(workers.map((worker) => worker.close(!finished))), 1_000);
  return finished;
}
