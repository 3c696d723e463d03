/**
 * `npm start`: the whole service in one process tree. Without REDIS_URL it runs its own
 * redis-server (loopback, free port, data under PREDCACHE_DATA_DIR/redis), and starts it
 * again if it dies (the service reconnects by itself meanwhile, answering 503s).
 */
import { join } from "node:path";
import { seedOnFirstStart } from "../../precompute/first-start.ts";
import { listen } from "../api/listen.ts";
import { loadConfigOrExit } from "../config.ts";
import { createLogger } from "../log.ts";
import { startRedisServer } from "../redis/embedded.ts";
import {
  createLiveWorker,
  createPrecomputeWorker,
  createService,
  loadRegistry,
} from "../service.ts";
import { failedStart, onShutdown, shuttingDown } from "./shutdown.ts";
import { survivingRedisErrors } from "./unhandled.ts";
import { unknownSettingNotices } from "./unknown-settings.ts";

const config = loadConfigOrExit();
const log = createLogger(config.logLevel, "predcache", undefined, config.logFormat);
const steps: (() => Promise<void>)[] = [];
onShutdown(log, steps);
survivingRedisErrors(log, shuttingDown);
for (const notice of unknownSettingNotices(process.env)) log.warn(notice);

try {
  let redisUrl = config.redisUrl;
  if (!redisUrl) {
    const redis = await startRedisServer({
      dataDir: join(config.dataDir, "redis"),
      binary: config.redisServer,
      restart: {
        onExit: ({ code, signal, restartInMs }) =>
          log.error(
            { code, signal, restartInMs },
            "embedded redis-server exited; starting it again",
          ),
        onRestart: (pid) =>
          log.info({ redisPid: pid }, "embedded redis-server started again (its data kept)"),
        onFailedRestart: (error) =>
          log.error({ err: error.message }, "embedded redis-server did not start again"),
      },
    });
    redisUrl = redis.url;
    log.info(
      { redis: redis.url, redisPid: redis.pid },
      "started embedded redis-server (set REDIS_URL to use your own)",
    );
    steps.unshift(() => redis.stop());
  }
  const registry = await loadRegistry(config);
  steps.push(() => registry.close());
  const service = await createService(config, redisUrl, log, registry);
  steps.unshift(() => service.close());
  const live = await createLiveWorker(config, redisUrl, log, registry);
  steps.unshift(() => live.close());
  const precompute = await createPrecomputeWorker(config, redisUrl, log, registry);
  steps.unshift(() => precompute.close());
  const server = await listen(service.app, config.host, config.port, log);
  steps.unshift(() => server.close());
  // First: lookups waiting on the live model answer 202 now, so the drain is not held up.
  steps.unshift(async () => service.live.release());
  log.info({ url: server.url }, `predcache listening on ${server.url}`);
  if (config.seedOnStart) await seedOnFirstStart({ ...service, log });
} catch (error) {
  await failedStart(log, error, steps);
}
