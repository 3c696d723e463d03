/**
 * Structured JSON logs (pino); pretty on a TTY (LOG_FORMAT=json keeps JSON there too).
 * Inputs and tokens are never logged: requests log their path without the query, no
 * headers, and the authorization header and token fields are redacted anyway.
 */
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
  if (destination) return pino(options, destination);
  // People reading a terminal get pino-pretty; pipes and files get JSON lines.
  if (process.stdout.isTTY && process.env.LOG_FORMAT !== "json")
    return pino({ ...options, transport: { target: "pino-pretty", options: { colorize: true } } });
  return pino(options);
}
