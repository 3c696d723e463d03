/**
 * Which errors say Redis is unreachable or failing over (an outage, from which the
 * clients recover by themselves) rather than that a command was wrong: the API answers
 * them 503 with Retry-After, and an entry point survives them left unhandled.
 */

/** ioredis's and BullMQ's errors for a command cut off by an outage, not refused by Redis. */
const OUTAGE_NAMES = new Set(["MaxRetriesPerRequestError", "ClusterAllFailedError"]);
const OUTAGE_MESSAGES =
  /^(Command timed out|Stream isn't writeable|Command aborted due to connection close|Ready check failed|None of startup nodes is available|Cluster isn't ready|Cluster is disconnected\.|Too many Cluster redirections|BullMQ: cluster reconnect timed out)/;
/** Redis's own replies while a server loads or a failover runs. */
const FAILOVER_REPLIES = /^(LOADING|READONLY|MASTERDOWN|CLUSTERDOWN|TRYAGAIN) /;

export function isRedisOutage(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  if (OUTAGE_NAMES.has(error.name) || OUTAGE_MESSAGES.test(error.message)) return true;
  return error.name === "ReplyError" && FAILOVER_REPLIES.test(error.message);
}

/**
 * A command on a connection closed on purpose: expected while the process stops (it
 * closes its connections); at any other time, code using a connection it closed.
 */
export function isClosedConnection(error: unknown): boolean {
  return error instanceof Error && error.message === "Connection is closed.";
}
