/**
 * Who may scrape /metrics: anyone, unless PREDCACHE_METRICS_TOKENS is set; then only a
 * bearer token of that list. The series name models, versions, routes and traffic
 * volumes, which a deployment guarding its API with keys may not want public. One check
 * for the API's route and a worker process's bare metrics server.
 */
import { secretOf } from "../admin/auth.ts";
import { type AdminToken, matchToken } from "../admin/tokens.ts";
import { PredcacheError } from "../errors.ts";

const CHALLENGE = 'Bearer realm="predcache-metrics"';

/** A refused scrape: the error to answer and the WWW-Authenticate challenge to send. */
export interface ScrapeRefusal {
  error: PredcacheError;
  challenge: string;
}

/** Why a scrape with this Authorization header is refused, or undefined when it may go on. */
export function refuseScrape(
  tokens: readonly AdminToken[],
  authorization: string | undefined,
): ScrapeRefusal | undefined {
  if (tokens.length === 0) return undefined;
  const secret = secretOf(authorization, false);
  if (secret === undefined)
    return {
      error: new PredcacheError(
        "unauthorized",
        "send a metrics token: Authorization: Bearer <token>",
      ),
      challenge: CHALLENGE,
    };
  if (matchToken(tokens, secret) === undefined)
    return {
      error: new PredcacheError("forbidden", "the metrics token is not valid"),
      challenge: `${CHALLENGE}, error="invalid_token"`,
    };
  return undefined;
}
