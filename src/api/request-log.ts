/**
 * One structured log line per request: request id (taken from X-Request-Id or made),
 * method, path, status, duration, and — for lookups — model, version and source. The
 * path carries no query string, so inputs never reach the logs; headers are not logged.
 * An edge hook (./edge.ts): it runs on node's request before the app sees it.
 */
import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Context } from "hono";
import type { Logger } from "../log.ts";
import type { EdgeHook } from "./edge.ts";
import { addHeader, headerOf, incomingOf } from "./headers.ts";

/** The fields of a request's log line, on node's request; none when no line will be written. */
const NOTE = Symbol("log note");
type Noted = IncomingMessage & { [NOTE]?: Record<string, unknown> };

/** Adds fields (model, version, source…) to this request's log line. */
export function annotate(c: Context, fields: Record<string, unknown>): void {
  const note = (incomingOf(c) as Noted | undefined)?.[NOTE];
  if (note) Object.assign(note, fields);
}

const SAFE_ID = /^[A-Za-z0-9._:-]{1,64}$/;

function pathOf(url: string | undefined): string {
  const path = url ?? "/";
  const query = path.indexOf("?");
  return query === -1 ? path : path.slice(0, query);
}

export function requestLog(log: Logger): EdgeHook {
  const logging = log.isLevelEnabled("info");
  return (incoming: IncomingMessage, outgoing: ServerResponse) => {
    const given = headerOf(incoming, "x-request-id");
    const id = given && SAFE_ID.test(given) ? given : randomUUID();
    const started = performance.now();
    addHeader(incoming, "X-Request-Id", id);
    const note: Record<string, unknown> = {};
    if (logging) (incoming as Noted)[NOTE] = note;
    // "close", not "finish": a request whose client went away is logged too.
    outgoing.once("close", () => {
      // A client gone before any answer: no status was sent (node would say 200).
      const status = outgoing.headersSent ? outgoing.statusCode : 0;
      // Failures are logged at error level, so they are written even with info off.
      if (!logging && status < 500) return;
      const line = {
        reqId: id,
        method: incoming.method,
        path: pathOf(incoming.url).slice(0, 200),
        status,
        ...(outgoing.writableFinished ? {} : { aborted: true }),
        ms: Math.round((performance.now() - started) * 100) / 100,
        ...note,
      };
      if (status >= 500) log.error(line, "request failed");
      else log.info(line, "request");
    });
    return undefined;
  };
}
