/**
 * CORS for the read routes, so browser apps on other origins can download tables and ask
 * for fallbacks. Hand-written rather than hono/cors: that middleware touches `c.res`
 * before the handler runs, which makes Hono build a throwaway Response on every request
 * (measured: most of the gap between an L1 hit and a bare handler). Headers go through
 * setHeader (./headers.ts): they ride along with whatever response is made, errors included.
 */
import type { MiddlewareHandler } from "hono";
import { requestHeader, setHeader } from "./headers.ts";

export interface CorsOptions {
  /** "*" or exact origins. */
  origins: readonly string[];
  allowMethods: readonly string[];
  allowHeaders: readonly string[];
  exposeHeaders: readonly string[];
  maxAgeSeconds: number;
}

export function cors(options: CorsOptions): MiddlewareHandler {
  const any = options.origins.includes("*");
  const allowed = new Set(options.origins);
  const expose = options.exposeHeaders.join(", ");
  const methods = options.allowMethods.join(", ");
  const headers = options.allowHeaders.join(", ");
  return async (c, next) => {
    const origin = requestHeader(c, "origin");
    const allow = any ? "*" : origin && allowed.has(origin) ? origin : undefined;
    if (!any) setHeader(c, "Vary", "Origin", true);
    if (c.req.method === "OPTIONS" && requestHeader(c, "access-control-request-method")) {
      // A preflight: answered here, never reaching the routes.
      if (allow) {
        setHeader(c, "Access-Control-Allow-Origin", allow);
        setHeader(c, "Access-Control-Allow-Methods", methods);
        setHeader(c, "Access-Control-Allow-Headers", headers);
        setHeader(c, "Access-Control-Max-Age", String(options.maxAgeSeconds));
      }
      return c.body(null, 204);
    }
    if (allow) {
      setHeader(c, "Access-Control-Allow-Origin", allow);
      setHeader(c, "Access-Control-Expose-Headers", expose);
    }
    await next();
  };
}
