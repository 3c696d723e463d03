/**
 * Errors are values with a stable code; one place (api/errors.ts) turns them into HTTP.
 * The code → status switch is exhaustive, so a new code cannot ship without a status.
 */
import { isRedisOutage } from "./redis/outage.ts";

export type ErrorCode =
  | "bad_request"
  | "invalid_input"
  | "unauthorized"
  | "forbidden"
  | "model_not_found"
  | "version_not_found"
  | "not_found"
  | "method_not_allowed"
  | "conflict"
  | "payload_too_large"
  | "unsupported_media_type"
  | "range_not_satisfiable"
  | "precondition_failed"
  | "rate_limited"
  | "redis_unavailable"
  | "version_unavailable"
  | "overloaded"
  | "inference_failed"
  | "internal";

export function statusOf(
  code: ErrorCode,
): 400 | 401 | 403 | 404 | 405 | 409 | 412 | 413 | 415 | 416 | 422 | 429 | 500 | 503 {
  switch (code) {
    case "bad_request":
      return 400;
    case "invalid_input":
      return 422;
    case "unauthorized":
      return 401;
    case "forbidden":
      return 403;
    case "model_not_found":
    case "version_not_found":
    case "not_found":
      return 404;
    case "method_not_allowed":
      return 405;
    case "conflict":
      return 409;
    case "payload_too_large":
      return 413;
    case "unsupported_media_type":
      return 415;
    case "range_not_satisfiable":
      return 416;
    case "precondition_failed":
      return 412;
    case "rate_limited":
      return 429;
    case "redis_unavailable":
    case "version_unavailable":
    case "overloaded":
      return 503;
    case "inference_failed":
    case "internal":
      return 500;
  }
}

export class PredcacheError extends Error {
  override readonly name = "PredcacheError";
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: unknown,
    /** Seconds a client should wait before retrying (429/503). */
    readonly retryAfter?: number,
  ) {
    super(message);
  }

  get status(): ReturnType<typeof statusOf> {
    return statusOf(this.code);
  }
}

/** Why Redis did not answer, as a 503 tells it. */
export type OutageReason = "timeout" | "failover" | "unreachable";

const OUTAGE_WORDS: Record<OutageReason, string> = {
  timeout: "it did not answer in time",
  failover: "it is loading or failing over",
  unreachable: "not connected",
};

function outageReason(error: Error): OutageReason {
  if (error.message.startsWith("Command timed out")) return "timeout";
  if (error.name === "ReplyError") return "failover";
  return "unreachable";
}

/**
 * Redis did not answer a command a reply needs: 503, retry in a second, said in the
 * API's words (the Redis client's name its own options), the client's error kept as the
 * cause. `doing` says what could not be done. Anything but an outage (a wrong reply, a
 * bug) is returned as it is, to be answered 500 and logged; a PredcacheError passes.
 */
export function redisUnavailable(error: unknown, doing = "retry shortly"): Error {
  if (error instanceof PredcacheError) return error;
  if (!(error instanceof Error)) return new Error(String(error));
  if (!isRedisOutage(error)) return error;
  const reason = outageReason(error);
  const unavailable = new PredcacheError(
    "redis_unavailable",
    `Redis is unavailable (${OUTAGE_WORDS[reason]}); ${doing}`,
    { reason },
    1,
  );
  unavailable.cause = error;
  return unavailable;
}
