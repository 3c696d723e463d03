/**
 * A Redis outage must not end a process, but a rejection nobody handles ends a Node
 * process by default, and some come from inside ioredis and BullMQ (their reconnect
 * paths), not from code here. So an unhandled error that only says Redis is unreachable
 * or failing over is logged and the process keeps running (the clients reconnect by
 * themselves); any other unhandled rejection is a bug: logged as fatal, then exit 1, as
 * Node would.
 */
import type { Logger } from "../log.ts";

/** ioredis's and BullMQ's errors for a command cut off by an outage, not refused by Redis. */
const OUTAGE_NAMES = new Set(["MaxRetriesPerRequestError", "ClusterAllFailedError"]);
const OUTAGE_MESSAGES =
  /^(Command timed out|Stream isn't writeable|Command aborted due to connection close|Ready check failed|None of startup nodes is available|Cluster isn't ready|Cluster is disconnected\.|Too many Cluster redirections|BullMQ: cluster reconnect timed out)/;
/** Redis's own replies while a server loads or a failover runs. */
const FAILOVER_REPLIES = /^(LOADING|READONLY|MASTERDOWN|CLUSTERDOWN|TRYAGAIN) /;
/**
 * A command on a connection closed on purpose: expected of a library's leftovers while the
 * process stops (it closes its connections); at any other time, code using a connection
 * it closed, which will never come back: a bug.
 */
const CLOSED = "Connection is closed.";

export function survivable(reason: unknown, stopping: boolean): boolean {
  if (!(reason instanceof Error)) return false;
  if (OUTAGE_NAMES.has(reason.name) || OUTAGE_MESSAGES.test(reason.message)) return true;
  if (reason.name === "ReplyError" && FAILOVER_REPLIES.test(reason.message)) return true;
  return stopping && reason.message === CLOSED;
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
