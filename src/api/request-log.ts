/**
 * One structured log line per request: request id (taken from X-Request-Id or made),
 * method, path, status, duration, and — for lookups — model, version and source. The
 * path carries no query string, so inputs never reach the logs; headers are not logged.
 */
import { randomUUID } from "node:crypto";
import type { Context, MiddlewareHandler } from "hono";
import type { Logger } from "../log.ts";

const notes = new WeakMap<Request, Record<string, unknown>>();

/** Adds fields (model, version, source…) to this request's log line. */
export function annotate(c: Context, fields: Record<string, unknown>): void {
  notes.set(c.req.raw, { ...notes.get(c.req.raw), ...fields });
}

const SAFE_ID = /^[A-Za-z0-9._:-]{1,64}$/;

export function requestLog(log: Logger): MiddlewareHandler {
  return async (c, next) => {
    const given = c.req.header("x-request-id");
    const id = given && SAFE_ID.test(given) ? given : randomUUID();
    const started = performance.now();
    c.header("X-Request-Id", id);
    await next();
    const status = c.res.status;
    const line = {
      reqId: id,
      method: c.req.method,
      path: c.req.path,
      status,
      ms: Math.round((performance.now() - started) * 100) / 100,
      ...notes.get(c.req.raw),
    };
    if (status >= 500) log.error(line, "request failed");
    else log.info(line, "request");
  };
}
