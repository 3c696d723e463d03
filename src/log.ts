/**
 * Structured JSON logs (pino); pretty on a TTY (LOG_FORMAT=json keeps JSON there too).
 * Tokens are never logged, and request lines carry no inputs: the path without the query,
 * no headers, and the authorization header and token fields are redacted anyway. The one
 * exception is the cache audit's mismatch warning, which names the key it found wrong.
 */
import { pino } from "pino";

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
