/**
 * A Redis outage must not end a process, but a rejection nobody handles ends a Node
 * process by default, and some come from inside ioredis and BullMQ (their reconnect
 * paths), not from code here. So an unhandled error that only says Redis is unreachable
 * or failing over is logged and the process keeps running (the clients reconnect by
 * themselves); any other unhandled rejection is a bug: logged as fatal, then exit 1, as
 * Node would.
 */
import type { Logger } from "../log.ts";
import { isClosedConnection, isRedisOutage } from "../redis/outage.ts";

export function survivable(reason: unknown, stopping: boolean): boolean {
  return isRedisOutage(reason) || (stopping && isClosedConnection(reason));
}

export interface UnhandledOptions {
  /** Whether the process is shutting down (./shutdown.ts). */
  stopping?: () => boolean;
  exit?: (code: number) => void;
}

export function unhandledRejectionHandler(
  log: Logger,
  options: UnhandledOptions = {},
): (reason: unknown) => void {
  const exit = options.exit ?? ((code: number) => process.exit(code));
  return (reason) => {
    if (survivable(reason, options.stopping?.() ?? false)) {
      log.warn(
        { err: (reason as Error).message },
        "a Redis error was left unhandled inside a library; the process keeps running",
      );
      return;
    }
    log.fatal({ err: reason }, "unhandled rejection");
    exit(1);
  };
}

/** Installs the handler for this process (entry points only: tests keep Node's rules). */
export function survivingRedisErrors(log: Logger, stopping: () => boolean): void {
  process.on("unhandledRejection", unhandledRejectionHandler(log, { stopping }));
}
