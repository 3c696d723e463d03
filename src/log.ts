/** Structured JSON logs (pino). Inputs and tokens are never logged at info. */
import { pino } from "pino";

export type Logger = pino.Logger;

export function createLogger(
  level: string,
  name = "predcache",
  destination?: pino.DestinationStream,
): Logger {
  const options = {
    name,
    level,
    base: { pid: process.pid },
    redact: ["req.headers.authorization", "headers.authorization", "authorization", "token"],
  };
  return destination ? pino(options, destination) : pino(options);
}
