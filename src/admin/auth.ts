/**
 * Bearer-token guard for the admin API: 401 without a token, 403 with a wrong one, and
 * with no tokens configured every admin route answers 403 `admin_disabled` (never open by
 * default). The matched token's id is kept on the request for the audit log.
 */
import type { MiddlewareHandler } from "hono";
import { PredcacheError } from "../errors.ts";
import { type AdminToken, matchToken } from "./tokens.ts";

export type AdminEnv = { Variables: { actor: string } };

export function requireAdmin(tokens: readonly AdminToken[]): MiddlewareHandler<AdminEnv> {
  return async (c, next) => {
    if (tokens.length === 0) {
      throw new PredcacheError(
        "forbidden",
        "the admin API is disabled: set PREDCACHE_ADMIN_TOKENS to enable it",
        { reason: "admin_disabled" },
      );
    }
    const header = c.req.header("authorization");
    const match = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    if (!match) {
      c.header("WWW-Authenticate", 'Bearer realm="predcache-admin"');
      throw new PredcacheError(
        "unauthorized",
        "send the admin token: Authorization: Bearer <token>",
      );
    }
    const actor = matchToken(tokens, match[1] as string);
    if (!actor) {
      c.header("WWW-Authenticate", 'Bearer realm="predcache-admin", error="invalid_token"');
      throw new PredcacheError("forbidden", "the admin token is not valid");
    }
    c.set("actor", actor);
    await next();
  };
}
