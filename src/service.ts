/**
 * The processes' building blocks, wired from config: the API service (Redis connections,
 * registry, active versions, tiers, live queue client, HTTP app) and the live worker.
 * Entry points and tests build them from here.
 */
import { resolve } from "node:path";
import type { Hono } from "hono";
import { Precompute } from "../precompute/job.ts";
import { PrecomputeWorker } from "../precompute/worker.ts";
import { AuditLog } from "./admin/audit.ts";
import { RateLimiter } from "./api/access.ts";
import { createApp } from "./api/app.ts";
import type { ApiDeps } from "./api/deps.ts";
import { pausedWarning } from "./api/routes/health.ts";
import { AUDIT_MAX_IN_FLIGHT, CacheAudit } from "./cache/audit.ts";
import { Keys } from "./cache/keys.ts";
import { MemoryCache } from "./cache/memory.ts";
import { ResidentTables } from "./cache/resident.ts";
import { ServingStats } from "./cache/stats.ts";
import { type CorruptEntry, PredictionStore } from "./cache/store.ts";
import { Tiers } from "./cache/tiers.ts";
import { TrafficRecorder } from "./cache/traffic.ts";
import type { Config } from "./config.ts";
import { RunningExperiments } from "./experiment/running.ts";
import { ShadowComparer } from "./experiment/shadow.ts";
import { ExperimentStore } from "./experiment/store.ts";
import { ArmTally } from "./experiment/tally.ts";
import { LiveClient } from "./live/client.ts";
import { queuePrefix } from "./live/jobs.ts";
import { LiveWorker } from "./live/worker.ts";
import type { Logger } from "./log.ts";
import { ActiveVersions } from "./model/active.ts";
import { ModelRegistry } from "./model/registry.ts";
import { processMetrics } from "./observability/metrics.ts";
import {
  closeRedis,
  closeWithin,
  createRedis,
  type Redis,
  settledWithin,
  subscribe,
  whenReady,
} from "./redis/connection.ts";
import { markRebuild, versionOfGeneration } from "./table/rebuild-marks.ts";
import { DirectoryTableStore, type TableStore } from "./table/store.ts";

export interface Service {
  app: Hono;
  redis: Redis;
  registry: ModelRegistry;
  active: ActiveVersions;
  keys: Keys;
  tiers: Tiers;
  live: LiveClient;
  precompute: Precompute;
  experiments: NonNullable<ApiDeps["experiments"]>;
  close(): Promise<void>;
}

export function loadRegistry(config: Config): Promise<ModelRegistry> {
  return ModelRegistry.fromDirectory(config.modelsDir, { intraOpThreads: config.onnxThreads });
}

export async function createService(
  config: Config,
  redisUrl: string,
  log: Logger,
  registry?: ModelRegistry,
): Promise<Service> {
  const models = registry ?? (await loadRegistry(config));
  const redis = createRedis(redisUrl, { commandTimeoutMs: config.redisTimeoutMs });
  // Pollers and flushers on their own connection: ioredis runs one auto-pipeline at a time
  // per connection, so a poll waiting out a frozen Redis would hold every request's
  // command behind it (503s after twice the command timeout).
  const background = createRedis(redisUrl, { commandTimeoutMs: config.redisTimeoutMs });
  const subscriber = createRedis(redisUrl, { role: "subscriber" });
  const events = createRedis(redisUrl, { role: "blocking" });
  const closeConnections = async () => {
    await Promise.allSettled([redis, background, subscriber, events].map((r) => closeRedis(r)));
  };
  try {
    await Promise.all([whenReady(redis), whenReady(background)]);
    const keys = new Keys(config.prefix);
    // Its polls on the background connection, an admin's switch on the request one: a
    // switch must not wait behind a poll stuck on a frozen Redis.
    const active = new ActiveVersions(background, subscriber, keys, models, {
      writer: redis,
      onRestored: activeRestored(log),
    });
    await active.start();
    // Load each active model now, so the first request does not pay for it.
    for (const name of models.names()) {
      const version = active.get(name);
      const model = version ? models.get(name, version) : undefined;
      if (model) await models.runtime(model);
      log.info({ model: name, version: version ?? null, known: Boolean(model) }, "model ready");
    }
    // The live client (below) repairs what the store finds damaged.
    let live: LiveClient | undefined;
    const store = new PredictionStore(redis, keys, {
      bucketBits: config.bucketBits,
      onCorrupt: corruptEntry(log, (entry) => live?.repair(entry.model, entry.key)),
    });
    const tables = new DirectoryTableStore(config.tablesDir, {
      onDamaged: tableDamaged(log, redis, keys),
    });
    const resident = new ResidentTables(tables, models, active, log, {
      maxBytes: config.residentMaxBytes,
    });
    await resident.start(subscriber, keys);
    const tiers = new Tiers(new MemoryCache({ maxBytes: config.l1MaxBytes }), store, resident);
    live = new LiveClient(redis, events, {
      prefix: queuePrefix(config.prefix),
      maxWaitMs: config.waitMaxMs,
      keepFinishedSeconds: config.jobKeepSeconds,
      maxDepth: config.liveQueueMax,
      batchRows: config.liveBatchRows,
      batchWaitMs: config.liveBatchWaitMs,
    });
    await live.ready();
    const cacheAudit =
      config.auditRate > 0
        ? new CacheAudit(live, log, { rate: config.auditRate, maxInFlight: AUDIT_MAX_IN_FLIGHT })
        : undefined;
    const traffic = new TrafficRecorder(background, keys, {
      maxEntries: config.trafficMaxEntries,
      hitSampleRate: config.trafficHitSample,
    });
    const stats = new ServingStats();
    // Admin changes on the request connection, the running experiments' polls on theirs.
    const experimentStore = new ExperimentStore(redis, keys);
    const tally = new ArmTally(background, keys);
    const running = new RunningExperiments(
      new ExperimentStore(background, keys),
      subscriber,
      keys,
      models,
    );
    const experiments = {
      store: experimentStore,
      running,
      tally,
      shadow: new ShadowComparer(tiers, live, tally, log, {
        maxInFlight: config.shadowMaxInFlight,
        isRunning: (experiment) => running.get(experiment.model)?.id === experiment.id,
      }),
    };
    await experiments.running.start();
    tally.start();
    const precompute = new Precompute(redis, keys, models, {
      queuePrefix: queuePrefix(config.prefix),
    });
    const queues = {
      live: live.queue,
      precompute: precompute.runQueue,
      "precompute-chunks": precompute.chunkQueue,
    };
    // A pause outlives restarts: said at start, not only by /readyz (a restart meant to
    // fix what it causes would not).
    for (const [name, queue] of Object.entries(queues))
      if (await queue.isPaused().catch(() => false)) log.warn({ queue: name }, pausedWarning(name));
    const metrics = processMetrics();
    const unwatch = [
      // Pinged on the background connection: a scrape's PING waiting out a frozen Redis
      // holds up no request's command.
      metrics.watchRedis(background, () => background.ping()),
      ...[redis, subscriber, events].map((r) => metrics.watchRedis(r)),
      ...Object.entries(queues).map(([name, queue]) => metrics.watchQueue(name, queue)),
      metrics.watchServing({
        activeVersions: () => active.entries(),
        memory: () => ({ entries: tiers.memory.size, bytes: tiers.memory.bytes }),
        *residentTables() {
          for (const [model, table] of resident.heldTables())
            yield {
              model,
              version: table.header.modelVersion,
              rows: table.size,
              bytes: table.bytes.byteLength,
            };
        },
      }),
    ];
    const accessOptions = {
      keys: config.apiKeys,
      requestLimit: config.rateLimit,
      missLimit: config.missRateLimit,
      windowSeconds: config.rateWindowSeconds,
    };
    const access =
      config.apiKeys.length > 0
        ? { limiter: new RateLimiter(redis, keys, accessOptions), options: accessOptions }
        : undefined;
    if (access)
      log.info(
        { keys: config.apiKeys.map((k) => k.id) },
        "read API requires API keys, with rate limits",
      );
    if (access && config.metricsTokens.length === 0)
      log.warn("GET /metrics stays open: set PREDCACHE_METRICS_TOKENS=<id>:<secret> to guard it");
    // Written without holding up answers (src/admin/audit.ts): with the pollers, not
    // ahead of the next request's command on a frozen Redis.
    const audit = new AuditLog(background, keys, log);
    if (config.adminTokens.length === 0)
      log.warn("admin API disabled: set PREDCACHE_ADMIN_TOKENS=<id>:<secret> to enable /admin/v1");
    else log.info({ tokens: config.adminTokens.map((t) => t.id) }, "admin API enabled");
    // A reload through any API process reaches every process sharing this Redis.
    subscriber.on("message", (channel: string) => {
      if (channel !== keys.modelsChannel()) return;
      void models.reload().then(
        ({ added }) => {
          if (added.length)
            log.info({ added: added.map((v) => `${v.name}@${v.version}`) }, "models reloaded");
        },
        (error: Error) => log.warn({ err: error.message }, "models reload failed"),
      );
    });
    await subscribe(subscriber, keys.modelsChannel());
    const app = createApp({
      log,
      redis,
      registry: models,
      active,
      tiers,
      live,
      queues,
      traffic,
      stats,
      tables,
      settings: {
        waitDefaultMs: config.waitDefaultMs,
        waitMaxMs: config.waitMaxMs,
        batchMaxItems: config.batchMaxItems,
        bodyMaxBytes: config.bodyMaxBytes,
        hitMaxAgeSeconds: config.hitMaxAgeSeconds,
        cacheScope: access ? "private" : "public",
        corsOrigins: config.corsOrigins,
        clientIdHeader: config.clientIdHeader,
      },
      experiments,
      admin: {
        tokens: config.adminTokens,
        audit,
        precompute,
        keys,
        store,
        resident,
        queues,
        keepVersions: config.keepVersions,
        bodyMaxBytes: config.adminBodyMaxBytes,
        announceModels: async () => {
          await redis.publish(keys.modelsChannel(), "reload");
        },
      },
      metricsTokens: config.metricsTokens,
      seedRoots: [resolve("seeds"), resolve(config.modelsDir), resolve(config.dataDir)],
      ...(access ? { access } : {}),
      ...(cacheAudit ? { audit: cacheAudit } : {}),
    });
    return {
      app,
      redis,
      registry: models,
      active,
      keys,
      tiers,
      live,
      precompute,
      experiments,
      async close() {
        for (const stop of unwatch) stop();
        active.stop();
        experiments.running.stop();
        await closeWithin(experiments.shadow.drain());
        await experiments.tally.close();
        await traffic.flush();
        resident.stop();
        await cacheAudit?.close();
        await live.close();
        await precompute.close();
        await closeConnections();
        if (!registry) await models.close();
      },
    };
  } catch (error) {
    await closeConnections();
    throw error;
  }
}

export interface LiveWorkerProcess {
  worker: LiveWorker;
  /** For a worker process's /readyz. */
  readiness(): Promise<WorkerReadiness>;
  close(): Promise<void>;
}

/** One worker of a worker-only process, as its /readyz tells it. */
export interface WorkerReadiness {
  worker: "live" | "precompute";
  /** Its BullMQ workers run (not closed; a paused queue is `paused`). */
  running: boolean;
  /** Its Redis answered a PING within a second. */
  redis: boolean;
  /** A queue it takes jobs from is paused (the dashboard's button; kept across restarts). */
  paused: boolean;
}

/**
 * Whether `redis` answers a PING within a second (a frozen one must not hold a probe),
 * and whether any of these workers' queues is paused (unknown: not said to be).
 */
async function probe(
  redis: Redis,
  workers: readonly { toKey(type: string): string }[],
): Promise<{ redis: boolean; paused: boolean }> {
  let answered = false;
  let paused = false;
  const asked = Promise.all([
    redis.ping(),
    ...workers.map((w) => redis.hexists(w.toKey("meta"), "paused")),
  ]).then(([, ...flags]) => {
    answered = true;
    paused = flags.some((flag) => flag === 1);
  });
  await settledWithin(asked, 1_000);
  return { redis: answered, paused };
}

export async function createLiveWorker(
  config: Config,
  redisUrl: string,
  log: Logger,
  registry: ModelRegistry,
): Promise<LiveWorkerProcess> {
  const redis = createRedis(redisUrl, { commandTimeoutMs: config.redisTimeoutMs });
  const blocking = createRedis(redisUrl, { role: "blocking" });
  await whenReady(redis);
  const store = new PredictionStore(redis, new Keys(config.prefix), {
    bucketBits: config.bucketBits,
  });
  const worker = new LiveWorker(blocking, redis, registry, store, log, {
    prefix: queuePrefix(config.prefix),
    batch: { maxItems: config.liveBatchRows, maxWaitMs: config.liveWorkerWaitMs },
    concurrency: config.liveConcurrency,
    lockMs: config.lockMs,
    stalledIntervalMs: config.stalledIntervalMs,
    inferenceThreads: config.onnxThreads,
  });
  await worker.worker.waitUntilReady();
  // The active versions' inference threads are warm before the first miss, and so is each
  // version made active later (a promote, a rollback), as soon as this process learns of it.
  const subscriber = createRedis(redisUrl, { role: "subscriber" });
  const active = new ActiveVersions(redis, subscriber, new Keys(config.prefix), registry, {
    onRestored: activeRestored(log),
  });
  const warm = async (name: string, version: string) => {
    const model = await registry.resolve(name, version).catch(() => undefined);
    if (model) await worker.warm([model]);
  };
  let starting: Promise<void>[] | undefined = [];
  const stopWarming = active.onChange((name, version) => {
    const warming = warm(name, version);
    starting?.push(warming);
  });
  try {
    await active.start();
    await Promise.all(starting);
    starting = undefined;
  } catch (error) {
    active.stop();
    await worker.close();
    await Promise.allSettled([redis, blocking, subscriber].map(closeRedis));
    throw error;
  }
  const unwatch = [
    processMetrics().watchRedis(redis, () => redis.ping()),
    processMetrics().watchRedis(blocking),
  ];
  return {
    worker,
    async readiness() {
      const running = worker.worker.isRunning();
      return { worker: "live", running, ...(await probe(redis, [worker.worker])) };
    },
    async close() {
      for (const stop of unwatch) stop();
      stopWarming();
      active.stop();
      await worker.close();
      await Promise.allSettled([closeRedis(redis), closeRedis(blocking), closeRedis(subscriber)]);
    },
  };
}

export interface PrecomputeWorkerProcess {
  worker: PrecomputeWorker;
  /** For a worker process's /readyz. */
  readiness(): Promise<WorkerReadiness>;
  close(): Promise<void>;
}

/** An active version this process put back in Redis, which had lost it, as the log says it. */
function activeRestored(log: Logger) {
  return (model: string, version: string) =>
    log.warn(
      { model, version },
      "the active version was gone from Redis (its data lost?): put back the one served",
    );
}

/** A damaged value in Redis: counted, logged with its key, and (API only) queued for repair. */
function corruptEntry(log: Logger, repair?: (entry: CorruptEntry) => Promise<void> | undefined) {
  return (entry: CorruptEntry) => {
    const { model, key, bucket, reason } = entry;
    processMetrics().corruptEntries.inc({ model: model.name, version: model.version });
    log.warn(
      { model: model.name, version: model.version, key, bucket, err: reason },
      repair
        ? "a cached entry does not decode: read as a miss, and recomputed live to replace it"
        : "a cached entry does not decode: read as missing",
    );
    repair?.(entry)?.catch((error: unknown) =>
      log.warn({ model: model.name, key, err: error }, "could not queue the entry's repair"),
    );
  };
}

/** A table damaged on disk: logged, and its version's next table rebuilt from Redis. */
function tableDamaged(log: Logger, redis: Redis, keys: Keys) {
  return (damage: { model: string; generation: string; reason: string }) => {
    log.error(
      { model: damage.model, table: damage.generation, err: damage.reason },
      "a stored table is damaged: the one before it is served instead, and the version's next table is rebuilt from Redis",
    );
    const version = versionOfGeneration(damage.generation);
    markRebuild(redis, keys, damage.model, version).catch((error: unknown) =>
      log.warn({ model: damage.model, version, err: error }, "could not mark the table rebuild"),
    );
  };
}

export async function createPrecomputeWorker(
  config: Config,
  redisUrl: string,
  log: Logger,
  registry: ModelRegistry,
  /** Where tables go (default: the config's tables folder). */
  given?: TableStore,
): Promise<PrecomputeWorkerProcess> {
  const redis = createRedis(redisUrl, { commandTimeoutMs: config.redisTimeoutMs });
  const blocking = createRedis(redisUrl, { role: "blocking" });
  await whenReady(redis);
  const keys = new Keys(config.prefix);
  const tables =
    given ??
    new DirectoryTableStore(config.tablesDir, { onDamaged: tableDamaged(log, redis, keys) });
  const store = new PredictionStore(redis, keys, {
    bucketBits: config.bucketBits,
    onCorrupt: corruptEntry(log),
  });
  const worker = new PrecomputeWorker(
    redis,
    blocking,
    keys,
    registry,
    store,
    log,
    {
      queuePrefix: queuePrefix(config.prefix),
      inferBatch: config.precomputeBatch,
      concurrency: config.precomputeConcurrency,
      inferenceThreads: config.onnxThreads,
      lockMs: config.lockMs,
      stalledIntervalMs: config.stalledIntervalMs,
    },
    tables,
  );
  await worker.waitUntilReady();
  const unwatch = [
    processMetrics().watchRedis(redis, () => redis.ping()),
    processMetrics().watchRedis(blocking),
  ];
  return {
    worker,
    async readiness() {
      const running = worker.runWorker.isRunning() && worker.chunkWorker.isRunning();
      const probed = await probe(redis, [worker.runWorker, worker.chunkWorker]);
      return { worker: "precompute", running, ...probed };
    },
    async close() {
      for (const stop of unwatch) stop();
      await worker.close();
      await Promise.allSettled([closeRedis(redis), closeRedis(blocking)]);
    },
  };
}
