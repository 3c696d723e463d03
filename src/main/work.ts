/**
 * Worker process (production shape): the live worker and/or the precompute worker,
 * chosen by PREDCACHE_WORKERS (default both). Needs REDIS_URL.
 */
import { loadConfigOrExit } from "../config.ts";
import { createLogger } from "../log.ts";
import { serveMetrics } from "../observability/metrics-server.ts";
import {
  createLiveWorker,
  createPrecomputeWorker,
  type LiveWorkerProcess,
  loadRegistry,
  type PrecomputeWorkerProcess,
} from "../service.ts";
import { liveWorkerWaitNotice } from "./renamed-settings.ts";
import { failedStart, onShutdown, shuttingDown } from "./shutdown.ts";
import { survivingRedisErrors } from "./unhandled.ts";
import { unknownSettingNotices } from "./unknown-settings.ts";

const config = loadConfigOrExit();
const log = createLogger(config.logLevel, "predcache-worker", undefined, config.logFormat);
survivingRedisErrors(log, shuttingDown);
if (!config.redisUrl) {
  log.fatal(
    "REDIS_URL is required for a worker process (npm start runs everything with its own redis-server instead)",
  );
  process.exit(2);
}
const kinds = new Set(config.workers);
const renamed = kinds.has("live") ? liveWorkerWaitNotice(process.env) : undefined;
if (renamed) log.warn(renamed);
for (const notice of unknownSettingNotices(process.env)) log.warn(notice);
const redisUrl = config.redisUrl;
const steps: (() => Promise<void>)[] = [];
onShutdown(log, steps);
try {
  const registry = await loadRegistry(config);
  steps.push(() => registry.close());
  const workers: (LiveWorkerProcess | PrecomputeWorkerProcess)[] = [];
  const started = (worker: LiveWorkerProcess | PrecomputeWorkerProcess) => {
    workers.push(worker);
    steps.unshift(worker.close);
  };
  if (kinds.has("live")) started(await createLiveWorker(config, redisUrl, log, registry));
  if (kinds.has("precompute"))
    started(await createPrecomputeWorker(config, redisUrl, log, registry));
  steps.unshift(
    await serveMetrics(
      config.host,
      config.metricsPort,
      log,
      workers.map((worker) => worker.readiness),
      config.metricsTokens,
    ),
  );
  log.info({ workers: [...kinds] }, "workers ready");
} catch (error) {
  await failedStart(log, error, steps);
}
