/**
 * Environment → typed, validated config. The only reader of process.env; every setting
 * is listed here with its default, and a bad value stops the start with a message that
 * names the variable.
 */
import { z } from "zod";
import { type AdminToken, parseAdminTokens } from "./admin/tokens.ts";
import { isRedisUrl } from "./redis/connection.ts";

/**
 * Numbers as written in decimal: Number() would also take "0x1F", "1e3" and, worse, " " (as
 * 0, which turns a bound like PREDCACHE_LIVE_QUEUE_MAX off).
 */
const decimal = (pattern: RegExp, what: string) =>
  z.string().trim().regex(pattern, `expected ${what}`).transform(Number);
const int = (fallback: number, min = 0, max = Number.MAX_SAFE_INTEGER) =>
  decimal(/^-?\d+$/, "a whole number in decimal digits")
    .pipe(z.number().int().min(min).max(max))
    .default(fallback);
/** A share from 0 to 1, written as a decimal (0.001, not 1e-3). */
const share = (fallback: number) =>
  decimal(/^(?:\d+(?:\.\d*)?|\.\d+)$/, "a decimal number from 0 to 1")
    .pipe(z.number().min(0).max(1))
    .default(fallback);

export const settingsSchema = z.object({
  PORT: int(8787, 0, 65535),
  HOST: z.string().min(1).default("127.0.0.1"),
  // redis://, rediss://, or redis-cluster://host:port,host:port for a Redis Cluster.
  REDIS_URL: z
    .string()
    .refine(isRedisUrl, "expected redis://host:port or redis-cluster://host:port,host:port")
    .optional(),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  // auto: pretty on a terminal, JSON lines otherwise.
  LOG_FORMAT: z.enum(["auto", "json", "pretty"]).default("auto"),
  PREDCACHE_MODELS_DIR: z.string().min(1).default("seeds/models"),
  PREDCACHE_DATA_DIR: z.string().min(1).default(".predcache"),
  PREDCACHE_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_-]{1,32}$/)
    .default("pc"),
  PREDCACHE_ONNX_THREADS: int(1, 1, 64),
  PREDCACHE_REDIS_SERVER: z.string().min(1).default("redis-server"),
  PREDCACHE_REDIS_TIMEOUT_MS: int(1_000, 50, 60_000),
  PREDCACHE_L1_MAX_BYTES: int(64 * 1024 * 1024, 0),
  PREDCACHE_BUCKET_BITS: int(16, 1, 26),
  PREDCACHE_WAIT_DEFAULT_MS: int(250, 0, 60_000),
  PREDCACHE_WAIT_MAX_MS: int(5_000, 0, 60_000),
  PREDCACHE_BATCH_MAX_ITEMS: int(1_000, 1, 100_000),
  PREDCACHE_BODY_MAX_BYTES: int(1024 * 1024, 1_024),
  PREDCACHE_HIT_MAX_AGE: int(30, 0),
  PREDCACHE_LIVE_BATCH_ROWS: int(64, 1, 100_000),
  PREDCACHE_LIVE_BATCH_WAIT_MS: int(5, 0, 10_000),
  PREDCACHE_LIVE_WORKER_WAIT_MS: int(1, 0, 10_000),
  PREDCACHE_LIVE_CONCURRENCY: int(0, 0, 100_000),
  PREDCACHE_JOB_KEEP_SECONDS: int(300, 1),
  PREDCACHE_LIVE_QUEUE_MAX: int(10_000, 0),
  PREDCACHE_TRAFFIC_MAX_ENTRIES: int(100_000, 1),
  PREDCACHE_TRAFFIC_HIT_SAMPLE: share(0.01),
  // Share of redis and table hits recomputed live and compared (0: the audit is off).
  PREDCACHE_AUDIT_RATE: share(0.001),
  PREDCACHE_PRECOMPUTE_BATCH: int(512, 1, 100_000),
  PREDCACHE_PRECOMPUTE_CONCURRENCY: int(1, 1, 64),
  PREDCACHE_LOCK_MS: int(30_000, 500),
  PREDCACHE_STALLED_INTERVAL_MS: int(30_000, 200),
  PREDCACHE_SEED_ON_START: z.enum(["true", "false"]).default("true"),
  PREDCACHE_TABLES_DIR: z.string().min(1).optional(),
  PREDCACHE_RESIDENT_MAX_BYTES: int(256 * 1024 * 1024, 0),
  // Browser apps on other origins read predictions and tables; "none" turns CORS off (an
  // empty value is no value: the default).
  PREDCACHE_CORS_ORIGINS: z.string().default("*"),
  // Experiments assign clients to arms by this header (else by API key).
  PREDCACHE_CLIENT_ID_HEADER: z
    .string()
    .regex(/^[A-Za-z0-9-]{1,64}$/)
    .default("x-client-id"),
  PREDCACHE_SHADOW_MAX_IN_FLIGHT: int(64, 1, 100_000),
  // Admin bearer tokens, `id:secret` or `id:sha256:<hex>`, comma-separated; unset: admin API off.
  PREDCACHE_ADMIN_TOKENS: z.string().optional(),
  PREDCACHE_ADMIN_BODY_MAX_BYTES: int(16 * 1024 * 1024, 1_024),
  // Read-API keys (same forms as admin tokens); unset: the read API is open.
  PREDCACHE_API_KEYS: z.string().optional(),
  PREDCACHE_RATE_LIMIT: int(600, 1),
  PREDCACHE_MISS_RATE_LIMIT: int(60, 0),
  PREDCACHE_RATE_WINDOW_SECONDS: int(60, 1, 86_400),
  PREDCACHE_KEEP_VERSIONS: int(3, 1, 1_000),
  // Worker-only processes (npm run work) serve /metrics here; 0: not at all.
  PREDCACHE_METRICS_PORT: int(9464, 0, 65535),
  // Bearer tokens a /metrics scrape must send (same forms as admin tokens); unset: open.
  PREDCACHE_METRICS_TOKENS: z.string().optional(),
  PREDCACHE_WORKERS: z
    .string()
    .regex(/^(live|precompute)(,(live|precompute))*$/, "a comma-separated list of live, precompute")
    .default("live,precompute"),
});

export interface Config {
  port: number;
  host: string;
  /** Unset: `npm start` runs its own redis-server. */
  redisUrl: string | undefined;
  logFormat: "auto" | "json" | "pretty";
  logLevel: z.infer<typeof settingsSchema>["LOG_LEVEL"];
  modelsDir: string;
  dataDir: string;
  /** Prefix of every Redis key and BullMQ queue, so several deployments can share a Redis. */
  prefix: string;
  onnxThreads: number;
  /** The redis-server binary `npm start` runs when REDIS_URL is unset. */
  redisServer: string;
  /** A Redis command that takes longer fails (503) instead of holding the request. */
  redisTimeoutMs: number;
  l1MaxBytes: number;
  bucketBits: number;
  waitDefaultMs: number;
  waitMaxMs: number;
  batchMaxItems: number;
  bodyMaxBytes: number;
  hitMaxAgeSeconds: number;
  liveBatchRows: number;
  liveBatchWaitMs: number;
  /**
   * How long the live worker waits for an inference run to fill with the rows of other
   * jobs. Short: each job already is a batch gathered by an API process.
   */
  liveWorkerWaitMs: number;
  /** Live jobs one worker holds at once (0: four batches' worth, so the next batch fills while one runs). */
  liveConcurrency: number;
  jobKeepSeconds: number;
  /** Misses the live queue may hold before new ones get 503 (0: no bound). */
  liveQueueMax: number;
  /** Observed inputs kept per model and encoding, for traffic-driven precompute. */
  trafficMaxEntries: number;
  /** Share of cache hits recorded as traffic (misses always are). */
  trafficHitSample: number;
  /** Share of redis and table hits the cache audit recomputes and compares (0: off). */
  auditRate: number;
  /** Rows per onnxruntime run in a precompute chunk. */
  precomputeBatch: number;
  precomputeConcurrency: number;
  /** Job lock; a worker silent this long is presumed dead and its jobs handed out again. */
  lockMs: number;
  stalledIntervalMs: number;
  /** npm start: precompute a model's common inputs on first start. */
  seedOnStart: boolean;
  /** Where lookup tables are published (default: <data dir>/tables). */
  tablesDir: string;
  /** Largest table an API process keeps resident in memory (0: none). */
  residentMaxBytes: number;
  /** Admin bearer tokens (digests only); empty: the admin API is off. */
  adminTokens: AdminToken[];
  adminBodyMaxBytes: number;
  /** Read-API keys (digests only); empty: the read API needs no key and has no limits. */
  apiKeys: AdminToken[];
  rateLimit: number;
  missRateLimit: number;
  rateWindowSeconds: number;
  /** Versions per model that gc keeps (besides the active one and its rollback target). */
  keepVersions: number;
  /** Port of a worker process's /metrics (0: none). */
  metricsPort: number;
  /** Tokens a /metrics scrape must send (digests only); empty: /metrics is open. */
  metricsTokens: AdminToken[];
  /** Origins allowed to read the model routes from a browser ("*": any; empty: none). */
  corsOrigins: string[];
  /** Header naming the client for experiment arms (lower case). */
  clientIdHeader: string;
  /** Shadow comparisons pending at once per API process; more samples are dropped. */
  shadowMaxInFlight: number;
  /** Which workers a worker process runs. */
  workers: ("live" | "precompute")[];
}

export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

/** Tokens of one setting; the error never quotes the value (it holds secrets). */
function tokensOf(setting: string, text: string | undefined, what: string): AdminToken[] {
  try {
    return parseAdminTokens(text, what);
  } catch (error) {
    throw new ConfigError(`invalid configuration:\n  ${setting}: ${(error as Error).message}`);
  }
}

export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  // Empty (or blank) variables count as unset, as in most twelve-factor tooling.
  const present = Object.fromEntries(
    Object.entries(env).filter(([, v]) => v !== undefined && v.trim() !== ""),
  );
  const parsed = settingsSchema.safeParse(present);
  if (!parsed.success) {
    const lines = parsed.error.issues.map(
      (i) => `${i.path.join(".")}: ${i.message} (got ${JSON.stringify(env[String(i.path[0])])})`,
    );
    throw new ConfigError(`invalid configuration:\n  ${lines.join("\n  ")}`);
  }
  const e = parsed.data;
  // A default set above the max is a contradiction; the default default (250 ms) under a
  // lower max is just that max.
  if (
    "PREDCACHE_WAIT_DEFAULT_MS" in present &&
    e.PREDCACHE_WAIT_DEFAULT_MS > e.PREDCACHE_WAIT_MAX_MS
  )
    throw new ConfigError(
      `invalid configuration:\n  PREDCACHE_WAIT_DEFAULT_MS (${e.PREDCACHE_WAIT_DEFAULT_MS}) is more than PREDCACHE_WAIT_MAX_MS (${e.PREDCACHE_WAIT_MAX_MS}), which caps every wait`,
    );
  const adminTokens = tokensOf("PREDCACHE_ADMIN_TOKENS", e.PREDCACHE_ADMIN_TOKENS, "admin token");
  const apiKeys = tokensOf("PREDCACHE_API_KEYS", e.PREDCACHE_API_KEYS, "API key");
  const metricsTokens = tokensOf(
    "PREDCACHE_METRICS_TOKENS",
    e.PREDCACHE_METRICS_TOKENS,
    "metrics token",
  );
  return {
    port: e.PORT,
    host: e.HOST,
    redisUrl: e.REDIS_URL,
    logLevel: e.LOG_LEVEL,
    logFormat: e.LOG_FORMAT,
    modelsDir: e.PREDCACHE_MODELS_DIR,
    dataDir: e.PREDCACHE_DATA_DIR,
    prefix: e.PREDCACHE_PREFIX,
    onnxThreads: e.PREDCACHE_ONNX_THREADS,
    redisServer: e.PREDCACHE_REDIS_SERVER,
    redisTimeoutMs: e.PREDCACHE_REDIS_TIMEOUT_MS,
    l1MaxBytes: e.PREDCACHE_L1_MAX_BYTES,
    bucketBits: e.PREDCACHE_BUCKET_BITS,
    waitDefaultMs: Math.min(e.PREDCACHE_WAIT_DEFAULT_MS, e.PREDCACHE_WAIT_MAX_MS),
    waitMaxMs: e.PREDCACHE_WAIT_MAX_MS,
    batchMaxItems: e.PREDCACHE_BATCH_MAX_ITEMS,
    bodyMaxBytes: e.PREDCACHE_BODY_MAX_BYTES,
    hitMaxAgeSeconds: e.PREDCACHE_HIT_MAX_AGE,
    liveBatchRows: e.PREDCACHE_LIVE_BATCH_ROWS,
    liveBatchWaitMs: e.PREDCACHE_LIVE_BATCH_WAIT_MS,
    liveWorkerWaitMs: e.PREDCACHE_LIVE_WORKER_WAIT_MS,
    liveConcurrency: e.PREDCACHE_LIVE_CONCURRENCY || 4 * e.PREDCACHE_LIVE_BATCH_ROWS,
    jobKeepSeconds: e.PREDCACHE_JOB_KEEP_SECONDS,
    liveQueueMax: e.PREDCACHE_LIVE_QUEUE_MAX,
    trafficMaxEntries: e.PREDCACHE_TRAFFIC_MAX_ENTRIES,
    trafficHitSample: e.PREDCACHE_TRAFFIC_HIT_SAMPLE,
    auditRate: e.PREDCACHE_AUDIT_RATE,
    precomputeBatch: e.PREDCACHE_PRECOMPUTE_BATCH,
    precomputeConcurrency: e.PREDCACHE_PRECOMPUTE_CONCURRENCY,
    lockMs: e.PREDCACHE_LOCK_MS,
    stalledIntervalMs: e.PREDCACHE_STALLED_INTERVAL_MS,
    seedOnStart: e.PREDCACHE_SEED_ON_START === "true",
    tablesDir: e.PREDCACHE_TABLES_DIR ?? `${e.PREDCACHE_DATA_DIR}/tables`,
    residentMaxBytes: e.PREDCACHE_RESIDENT_MAX_BYTES,
    adminTokens,
    adminBodyMaxBytes: e.PREDCACHE_ADMIN_BODY_MAX_BYTES,
    apiKeys,
    rateLimit: e.PREDCACHE_RATE_LIMIT,
    missRateLimit: e.PREDCACHE_MISS_RATE_LIMIT,
    rateWindowSeconds: e.PREDCACHE_RATE_WINDOW_SECONDS,
    keepVersions: e.PREDCACHE_KEEP_VERSIONS,
    metricsPort: e.PREDCACHE_METRICS_PORT,
    metricsTokens,
    corsOrigins: e.PREDCACHE_CORS_ORIGINS.split(",")
      .map((o) => o.trim())
      .filter((o) => o && o !== "none"),
    clientIdHeader: e.PREDCACHE_CLIENT_ID_HEADER.toLowerCase(),
    shadowMaxInFlight: e.PREDCACHE_SHADOW_MAX_IN_FLIGHT,
    workers: e.PREDCACHE_WORKERS.split(",") as ("live" | "precompute")[],
  };
}

/**
 * loadConfig for an entry point: a bad setting is one clear line on stderr and exit 2
 * (not a stack trace), before anything starts.
 */
export function loadConfigOrExit(env: Record<string, string | undefined> = process.env): Config {
  try {
    return loadConfig(env);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`predcache: ${error.message}\n`);
    process.exit(2);
  }
}
