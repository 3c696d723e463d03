/**
 * Structured JSON logs (pino); pretty on a TTY (LOG_FORMAT=json keeps JSON there too).
 * Tokens are never logged, and request lines carry no inputs: the path without the query,
 * no headers, and the authorization header and token fields are redacted anyway. The one
 * exception is the cache audit's mismatch warning, which names the key it found wrong.
 */
import { pino } from "pino";
import { isRedisOutage } from "./redis/outage.ts";

export type Logger = pino.Logger;

export type LogFormat = "auto" | "json" | "pretty";

export function createLogger(
  level: string,
  name = "predcache",
  destination?: pino.DestinationStream,
  format: LogFormat = "auto",
): Logger {
  const options = {
    name,
    level,
    base: { pid: process.pid },
    redact: ["req.headers.authorization", "headers.authorization", "authorization", "token"],
  };
  if (destination) return pino(options, destination);
  // People reading a terminal get pino-pretty; pipes and files get JSON lines.
  if (format === "pretty" || (format === "auto" && process.stdout.isTTY))
    return pino({ ...options, transport: { target: "pino-pretty", options: { colorize: true } } });
  return pino(options);
}

/**
 * A logger for an error event a library may fire many times a second (a BullMQ worker
 * while Redis is away): the first of a run of equal messages is logged, the repeats
 * within `windowMs` are counted into the next line. Outage errors, which the clients
 * recover from by themselves, are warnings; anything else stays an error.
 */
export function repeatedErrors(
  log: Logger,
  message: string,
  windowMs = 10_000,
): (error: Error) => void {
  let lastText = "";
  let lastAt = Number.NEGATIVE_INFINITY;
  let repeats = 0;
  return (error) => {
    const now = Date.now();
    if (error.message === lastText && now - lastAt < windowMs) {
      repeats++;
      return;
    }
    const fields = { err: error.message, ...(repeats > 0 ? { repeatsBefore: repeats } : {}) };
    if (isRedisOutage(error)) log.warn(fields, message);
    else log.error(fields, message);
    lastText = error.message;
    lastAt = now;
    repeats = 0;
  };
}
