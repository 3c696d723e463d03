/**
 * Bearer-token guard for the admin API: 401 without a token, 403 with a wrong one, and
 * with no tokens configured every admin route answers 403 `admin_disabled` (never open by
 * default). The matched token's id is kept on the request for the audit log.
 */
import type { MiddlewareHandler } from "hono";
import { PredcacheError } from "../errors.ts";
import { type AdminToken, matchToken } from "./tokens.ts";

/** `auditDetail`: what a handler did, for its audit entry (see ./audit.ts). */
export type AdminEnv = { Variables: { actor: string; auditDetail?: string } };

export interface AdminGuardOptions {
  /**
   * Also take the token as an HTTP Basic password (any user name), and ask for Basic
   * credentials: how a browser reaches a dashboard behind the token.
   */
  basic?: boolean;
}

/** The token an Authorization header carries (Bearer; also Basic's password when `basic`). */
export function secretOf(header: string | undefined, basic: boolean): string | undefined {
  if (!header) return undefined;
  const bearer = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (bearer) return bearer[1];
  const credentials = basic ? /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header) : null;
  if (!credentials) return undefined;
  const decoded = Buffer.from(credentials[1] as string, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  return colon >= 0 ? decoded.slice(colon + 1) : undefined;
}

export function requireAdmin(
  tokens: readonly AdminToken[],
  options: AdminGuardOptions = {},
): MiddlewareHandler<AdminEnv> {
  const challenge = options.basic
    ? 'Basic realm="predcache-admin", charset="UTF-8"'
    : 'Bearer realm="predcache-admin"';
  return async (c, next) => {
    if (tokens.length === 0) {
      throw new PredcacheError(
        "forbidden",
        "the admin API is disabled: set PREDCACHE_ADMIN_TOKENS to enable it",
        { reason: "admin_disabled" },
      );
    }
    const secret = secretOf(c.req.header("authorization"), options.basic ?? false);
    if (!secret) {
      c.header("WWW-Authenticate", challenge);
      throw new PredcacheError(
        "unauthorized",
        "send the admin token: Authorization: Bearer <token>",
      );
    }
    const actor = matchToken(tokens, secret);
    if (!actor) {
      // Wrong Basic credentials are a 401 with the challenge: a browser asks again only
      // then (after a 403 it keeps sending the password it cached). An API client is told
      // why with a 403.
      if (options.basic && /^Basic\s/i.test(c.req.header("authorization") ?? "")) {
        c.header("WWW-Authenticate", challenge);
        throw new PredcacheError("unauthorized", "the admin token is not valid");
      }
      c.header("WWW-Authenticate", `${challenge}, error="invalid_token"`);
      throw new PredcacheError("forbidden", "the admin token is not valid");
    }
    c.set("actor", actor);
    await next();
  };
}
