/**
 * Optional access control for the read API (off unless PREDCACHE_API_KEYS is set): every
 * /v1/models request names an API key (Authorization: Bearer, or X-API-Key), kept only as a
 * SHA-256 digest and compared in constant time. Each key has a request budget and a
 * smaller miss budget (misses cost model time) per window, counted in Redis so the limits
 * hold across API processes (while Redis cannot count, each process counts on its own).
 * Past a budget: 429 with Retry-After and RateLimit headers.
 */
import type { Context, MiddlewareHandler } from "hono";
import type { AdminToken } from "../admin/tokens.ts";
import { matchToken } from "../admin/tokens.ts";
import type { Keys } from "../cache/keys.ts";
import { PredcacheError } from "../errors.ts";
import { processMetrics } from "../observability/metrics.ts";
import type { Redis } from "../redis/connection.ts";
import { setHeader } from "./headers.ts";
import { annotate } from "./request-log.ts";

export interface AccessOptions {
  keys: readonly AdminToken[];
  /** Requests per key per window. */
  requestLimit: number;
  /** Misses (lookups sent to the live model) per key per window. */
  missLimit: number;
  windowSeconds: number;
}

const clients = new WeakMap<Request, string>();

/** The API key id a request was admitted with (undefined when access control is off). */
export function clientOf(c: Context): string | undefined {
  return clients.get(c.req.raw);
}

// One round trip: count this request in the window and learn how long the window has left.
const COUNT = `
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('TTL', KEYS[1])}`;

/**
 * How long a request waits for Redis to count it. Past that (Redis frozen or failing
 * over), it is counted in this process, and so is every request for a while after.
 */
const REDIS_WAIT_MS = 100;
const LOCAL_FOR_MS = 1_000;

const TIMED_OUT = Symbol("timed out");

function within<T>(promise: Promise<T>, ms: number): Promise<T | typeof TIMED_OUT> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<typeof TIMED_OUT>((done) => {
    timer = setTimeout(() => done(TIMED_OUT), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export class RateLimiter {
  /** Until when budgets are counted here rather than in Redis (ms since the epoch). */
  private localUntil = 0;
  /** This process's own counts: key id and budget → the window counted and its uses. */
  private readonly local = new Map<string, { window: number; used: number }>();

  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    private readonly options: AccessOptions,
  ) {}

  /** Counts in Redis (shared by every API process), or undefined when it cannot now. */
  private async countShared(
    client: string,
    budget: string,
    window: number,
  ): Promise<[number, number] | undefined> {
    if (Date.now() < this.localUntil || this.redis.status !== "ready") return undefined;
    const counted = this.redis.eval(
      COUNT,
      1,
      this.keys.rateWindow(client, budget, window),
      this.options.windowSeconds,
    ) as Promise<[number, number]>;
    const outcome = await within(counted, REDIS_WAIT_MS).catch(() => undefined);
    if (outcome !== undefined && outcome !== TIMED_OUT) return outcome;
    // A late answer or error of the command itself is of no interest any more.
    counted.catch(() => {});
    this.localUntil = Date.now() + LOCAL_FOR_MS;
    return undefined;
  }

  /** Counts in this process alone: each API process then allows the whole budget. */
  private countLocally(client: string, budget: string, window: number): number {
    const id = `${client}|${budget}`;
    let count = this.local.get(id);
    if (!count || count.window !== window) {
      count = { window, used: 0 };
      this.local.set(id, count);
    }
    return ++count.used;
  }

  /** Counts one unit of `budget` for `client`; throws 429 past the limit. */
  async take(c: Context, client: string, budget: "requests" | "misses"): Promise<void> {
    const limit = budget === "requests" ? this.options.requestLimit : this.options.missLimit;
    // No budget at all (PREDCACHE_MISS_RATE_LIMIT=0: keys read cached answers only): not
    // a 429 whose Retry-After would have clients retry what never comes.
    if (limit === 0)
      throw new PredcacheError(
        "forbidden",
        "this API key may not send uncached lookups to the model: only cached answers are served to it",
        { budget, limit },
      );
    const window = Math.floor(Date.now() / 1000 / this.options.windowSeconds);
    // Windows are aligned (floor(now / window)): the budget comes back at the next
    // boundary, not a window after this key's first request (the key's own TTL).
    const boundary = (window + 1) * this.options.windowSeconds;
    const left = Math.ceil(boundary - Date.now() / 1000);
    // Redis away or slow: counted here, so a budget still holds per process and a hit is
    // not held up by a Redis that cannot answer.
    const shared = await this.countShared(client, budget, window);
    if (!shared) processMetrics().rateCountedLocally.inc({ budget });
    const used = shared ? shared[0] : this.countLocally(client, budget, window);
    const reset = Math.max(1, shared ? Math.min(shared[1], left) : left);
    // The headers describe the budget that answered: the request budget on every request,
    // the miss budget instead when it is the one spent.
    if (budget === "requests" || used > limit) {
      setHeader(c, "RateLimit-Limit", String(limit));
      setHeader(c, "RateLimit-Remaining", String(Math.max(0, limit - used)));
      setHeader(c, "RateLimit-Reset", String(reset));
    }
    if (used > limit)
      throw new PredcacheError(
        "rate_limited",
        budget === "requests"
          ? `this API key may make ${limit} requests per ${this.options.windowSeconds} s`
          : `this API key may send ${limit} uncached lookups to the model per ${this.options.windowSeconds} s`,
        { budget, limit, resetSeconds: reset },
        reset,
      );
  }
}

export function requireApiKey(limiter: RateLimiter, options: AccessOptions): MiddlewareHandler {
  return async (c, next) => {
    if (c.req.method === "OPTIONS") return next(); // preflights carry no credentials
    const header = c.req.header("authorization");
    const bearer = header ? /^Bearer\s+(\S+)\s*$/i.exec(header)?.[1] : undefined;
    const apiKey = c.req.header("x-api-key");
    // Two different keys: which one the client meant is not for the server to guess (a
    // valid one must not let a wrong one through unnoticed).
    if (bearer !== undefined && apiKey !== undefined && bearer !== apiKey)
      throw new PredcacheError(
        "bad_request",
        "Authorization and X-API-Key name two different API keys: send one",
      );
    const secret = bearer ?? apiKey;
    if (!secret) {
      c.header("WWW-Authenticate", 'Bearer realm="predcache"');
      throw new PredcacheError(
        "unauthorized",
        "send an API key: Authorization: Bearer <key> or X-API-Key",
      );
    }
    const client = matchToken(options.keys, secret);
    if (!client) {
      // Which key was wrong, as a Bearer challenge says it (RFC 6750 §3.1), as admin's does.
      c.header("WWW-Authenticate", 'Bearer realm="predcache", error="invalid_token"');
      throw new PredcacheError("forbidden", "the API key is not valid");
    }
    clients.set(c.req.raw, client);
    // Its id (never the secret) on the request's log line: whose traffic, whose 429s.
    annotate(c, { apiKey: client });
    await limiter.take(c, client, "requests");
    await next();
  };
}
