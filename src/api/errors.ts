/** The one place errors become HTTP replies: `{ error: { code, message, details?, requestId? } }`. */
import type { IncomingMessage } from "node:http";
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import { type ErrorCode, PredcacheError, redisUnavailable, statusOf } from "../errors.ts";
import { type Logger, repeatedErrors } from "../log.ts";
import { isRedisOutage } from "../redis/outage.ts";
import { incomingOf, jsonReply } from "./headers.ts";

export interface ErrorBody {
  error: { code: ErrorCode; message: string; details?: unknown };
}

export function errorBody(code: ErrorCode, message: string, details?: unknown): ErrorBody {
  return { error: details === undefined ? { code, message } : { code, message, details } };
}

/**
 * A declared body up to this size, left unread by a refusal (a 415, an unknown model), is
 * read to its end and dropped (node does, after the reply): the client keeps its
 * connection. A larger one, one of unknown length, or one refused as too large is not.
 */
const DRAINED_MAX = 64 * 1024;

/** Whether a refusal leaves a body unread that the connection is then closed over. */
function bodyLeftUnread(incoming: IncomingMessage, status: number): boolean {
  // A GET's message is complete only after the handler starts: its headers say.
  if (incoming.complete) return false;
  const length = incoming.headers["content-length"];
  if (length === undefined) return incoming.headers["transfer-encoding"] !== undefined;
  if (length === "0") return false;
  // Asked to say 100 first, the client may never send it: what it sends next on the
  // connection would be read as this body. Closed, as before.
  if (incoming.headers.expect !== undefined) return true;
  return status === 413 || !(Number(length) <= DRAINED_MAX);
}

export function errorReply(c: Context, error: PredcacheError): Response {
  // Refused before its body was all read (too large, or of unknown size): the rest of it
  // ends the connection, which the reply says, so a client does not send its next request
  // on it.
  const incoming = incomingOf(c);
  if (incoming && bodyLeftUnread(incoming, error.status)) c.header("Connection", "close");
  if (error.retryAfter !== undefined)
    c.header("Retry-After", String(Math.max(1, Math.ceil(error.retryAfter))));
  c.header("Cache-Control", "no-store");
  return jsonReply(c, errorBody(error.code, error.message, error.details), error.status);
}

function fromHttpException(error: HTTPException): PredcacheError {
  if (error.status === 413)
    return new PredcacheError("payload_too_large", error.message || "request body too large");
  if (error.status === 401)
    return new PredcacheError("unauthorized", error.message || "unauthorized");
  return new PredcacheError("bad_request", error.message || "bad request");
}

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

/**
 * A Redis outage that reached the app unconverted (admin and other routes let Redis errors
 * through): 503 like the lookups'. A change whose command was cut off may still be applied
 * once Redis answers, so the reply says to check before retrying one.
 */
function unavailable(method: string, error: Error): PredcacheError {
  // Called for an outage only, which redisUnavailable always makes a PredcacheError.
  return (
    SAFE_METHODS.has(method)
      ? redisUnavailable(error)
      : redisUnavailable(
          error,
          "the change may or may not have been applied: check before retrying",
        )
  ) as PredcacheError;
}

/**
 * The client went away while its request body was being read (node reports "aborted"):
 * nobody is left to answer, and it is no fault of the service.
 */
function clientGone(c: Context, error: Error): boolean {
  const incoming = incomingOf(c);
  if ((error as NodeJS.ErrnoException).code === "ECONNRESET" && error.message === "aborted")
    return true;
  return incoming?.destroyed === true && !incoming.complete;
}

export function handleError(log: Logger) {
  // The Redis client's own error behind a 503, for operators (once per 10 s per message).
  const outage = repeatedErrors(log, "answered 503: Redis is unavailable");
  return (error: Error, c: Context): Response => {
    if (error instanceof PredcacheError) {
      if (error.code === "redis_unavailable" && error.cause instanceof Error) outage(error.cause);
      return errorReply(c, error);
    }
    if (error instanceof HTTPException) return errorReply(c, fromHttpException(error));
    if (error instanceof SyntaxError)
      return errorReply(c, new PredcacheError("bad_request", "malformed JSON body"));
    if (clientGone(c, error)) {
      log.debug({ path: c.req.path }, "client closed the connection before its body was read");
      return errorReply(
        c,
        new PredcacheError("bad_request", "the client closed the connection mid-request"),
      );
    }
    if (isRedisOutage(error)) {
      outage(error);
      return errorReply(c, unavailable(c.req.method, error));
    }
    log.error({ err: error, path: c.req.path }, "unhandled error");
    return c.json(errorBody("internal", "internal error"), statusOf("internal"));
  };
}
