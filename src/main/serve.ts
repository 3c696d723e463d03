/** The API process alone (production shape): needs REDIS_URL. */
import { listen } from "../api/listen.ts";
import { loadConfigOrExit } from "../config.ts";
import { createLogger } from "../log.ts";
import { createService } from "../service.ts";
import { failedStart, onShutdown, shuttingDown } from "./shutdown.ts";
import { survivingRedisErrors } from "./unhandled.ts";
import { unknownSettingNotices } from "./unknown-settings.ts";

const config = loadConfigOrExit();
const log = createLogger(config.logLevel, "predcache", undefined, config.logFormat);
survivingRedisErrors(log, shuttingDown);
for (const notice of unknownSettingNotices(process.env)) log.warn(notice);
if (!config.redisUrl) {
  log.fatal(
    "REDIS_URL is required for the API process (npm start runs its own redis-server instead)",
  );
  process.exit(2);
}
const redisUrl = config.redisUrl;
// Whatever stops the start (Redis not reachable in time, the port taken): one fatal line,
// what was started stopped again, exit 1.
const steps: (() => Promise<void>)[] = [];
onShutdown(log, steps);
try {
  const service = await createService(config, redisUrl, log);
  steps.unshift(() => service.close());
  const server = await listen(service.app, config.host, config.port, log);
  steps.unshift(() => server.close());
  // First: lookups waiting on the live model answer 202 now, so the drain is not held up.
  steps.unshift(async () => service.live.release());
  log.info({ url: server.url }, `predcache API listening on ${server.url}`);
} catch (error) {
  await failedStart(log, error, steps);
}
