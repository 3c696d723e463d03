/**
 * One structured log line per request: request id (taken from X-Request-Id or made),
 * method, path, status, duration, and — for lookups — model, version and source. The
 * path carries no query string, so inputs never reach the logs; headers are not logged.
 */
import { randomUUID } from "node:crypto";
import type { Context, MiddlewareHandler } from "hono";
import type { Logger } from "../log.ts";
import { applyHeaders, requestHeader, setHeader } from "./headers.ts";

/** The fields of each request's log line; no entry when no line will be written. */
const NOTE = Symbol("log note");
type WithNote = Context & { [NOTE]?: Record<string, unknown> };

/** Adds fields (model, version, source…) to this request's log line. */
export function annotate(c: Context, fields: Record<string, unknown>): void {
  const note = (c as WithNote)[NOTE];
  if (note) Object.assign(note, fields);
}

const SAFE_ID = /^[A-Za-z0-9._:-]{1,64}$/;

export function requestLog(log: Logger): MiddlewareHandler {
  const logging = log.isLevelEnabled("info");
  return async (c, next) => {
    const given = requestHeader(c, "x-request-id");
    const id = given && SAFE_ID.test(given) ? given : randomUUID();
    const started = performance.now();
    setHeader(c, "X-Request-Id", id);
    const note: Record<string, unknown> = {};
    if (logging) (c as WithNote)[NOTE] = note;
    await next();
    // Outermost: what inner middleware set goes onto whatever response was made.
    applyHeaders(c);
    const status = c.res.status;
    // Failures are logged at error level, so they are written even with info off.
    if (!logging && status < 500) return;
    const line = {
      reqId: id,
      method: c.req.method,
      path: c.req.path,
      status,
      ms: Math.round((performance.now() - started) * 100) / 100,
      ...note,
    };
    if (status >= 500) log.error(line, "request failed");
    else log.info(line, "request");
  };
}
