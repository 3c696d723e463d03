/** The API process alone (production shape): needs REDIS_URL. */
import { listen } from "../api/listen.ts";
import { loadConfigOrExit } from "../config.ts";
import { createLogger } from "../log.ts";
import { createService } from "../service.ts";
import { onShutdown, shuttingDown } from "./shutdown.ts";
import { survivingRedisErrors } from "./unhandled.ts";

const config = loadConfigOrExit();
const log = createLogger(config.logLevel, "predcache", undefined, config.logFormat);
survivingRedisErrors(log, shuttingDown);
if (!config.redisUrl) {
  log.fatal(
    "REDIS_URL is required for the API process (npm start runs its own redis-server instead)",
  );
  process.exit(2);
}
const service = await createService(config, config.redisUrl, log);
const server = await listen(service.app, config.host, config.port);
onShutdown(log, [() => server.close(), () => service.close()]);
log.info({ url: server.url }, `predcache API listening on ${server.url}`);
