/**
 * A Redis outage must not end a process, but a rejection nobody handles ends a Node
 * process by default, and some come from inside ioredis and BullMQ (their reconnect
 * paths), not from code here. So a Redis connection error left unhandled is logged and
 * the process keeps running (the client reconnects by itself); any other unhandled
 * rejection is a bug: logged as fatal, then exit 1, as Node would.
 */
import type { Logger } from "../log.ts";

const CONNECTION_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
]);

/** ioredis's messages for a command cut off by the connection, not refused by Redis. */
const CONNECTION_MESSAGES = /^(Connection is closed\.|Command timed out|Stream isn't writeable)/;

export function isRedisConnectionError(reason: unknown): boolean {
  if (!(reason instanceof Error)) return false;
  const code = (reason as NodeJS.ErrnoException).code;
  if (code !== undefined && CONNECTION_CODES.has(code)) return true;
  return reason.name === "MaxRetriesPerRequestError" || CONNECTION_MESSAGES.test(reason.message);
}

export function unhandledRejectionHandler(
  log: Logger,
  exit: (code: number) => void = (code) => process.exit(code),
): (reason: unknown) => void {
  return (reason) => {
    if (isRedisConnectionError(reason)) {
      log.warn(
        { err: (reason as Error).message },
        "a Redis connection error was left unhandled; the process keeps running",
      );
      return;
    }
    log.fatal({ err: reason }, "unhandled rejection");
    exit(1);
  };
}

/** Installs the handler for this process (entry points only: tests keep Node's rules). */
export function survivingRedisErrors(log: Logger): void {
  process.on("unhandledRejection", unhandledRejectionHandler(log));
}
