/**
 * One structured log line per request: request id (taken from X-Request-Id or made),
 * method, path, status, duration, and — for lookups — model, version and source. The
 * path carries no query string, so inputs never reach the logs; headers are not logged.
 * An edge hook (./edge.ts): it runs on node's request before the app sees it.
 */
import { randomBytes } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Context } from "hono";
import type { Logger } from "../log.ts";
import { processMetrics } from "../observability/metrics.ts";
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

/**
 * The fields of this request's log line, to add to, when a line will be written (for what
 * answers a request without a Hono context; no object made per request otherwise).
 */
export function noteOf(incoming: IncomingMessage): Record<string, unknown> | undefined {
  return (incoming as Noted)[NOTE];
}

const SAFE_ID = /^[A-Za-z0-9._:-]{1,64}$/;

/**
 * A new request id: 64 random bits as 16 hex digits, cut from a pool of 4 KiB of random
 * bytes made hex at once. As unguessable as a UUID's 122 bits need be for telling requests
 * apart (no count a client could read the process's traffic from), at half a UUID's
 * length; a cut of a ready string costs less than hex-encoding 8 bytes per request.
 */
const ID_DIGITS = 16;
let idPool = "";
let idPoolAt = 0;

function newRequestId(): string {
  if (idPoolAt === idPool.length) {
    idPool = randomBytes(4096).toString("hex");
    idPoolAt = 0;
  }
  const id = idPool.slice(idPoolAt, idPoolAt + ID_DIGITS);
  idPoolAt += ID_DIGITS;
  return id;
}

/** The request's id: its own X-Request-Id when that is a safe one, else a new one. */
export function requestIdOf(incoming: IncomingMessage | undefined): string {
  const given = incoming && headerOf(incoming, "x-request-id");
  return given && SAFE_ID.test(given) ? given : newRequestId();
}

function pathOf(url: string | undefined): string {
  let path = url ?? "/";
  // An absolute-form target ("http://user:secret@host/path"): its path only.
  if (!path.startsWith("/") && path !== "*") {
    try {
      path = new URL(path).pathname;
    } catch {
      return "(malformed target)";
    }
  }
  const query = path.indexOf("?");
  return query === -1 ? path : path.slice(0, query);
}

/**
 * The route group of a request, for the HTTP metrics: a fixed, small set whatever paths
 * clients make up (no model names, ids or generations in the label).
 */
export function routeGroup(url: string | undefined): string {
  // On the raw target, as received: no copy of the path on an ordinary request.
  let path = url ?? "/";
  if (path.charCodeAt(0) !== 47) path = pathOf(path); // absolute-form or "*"
  if (path.startsWith("/v1/models")) {
    // "/v1/models", "/v1/models/<model>", "/v1/models/<model>/<what>[/…][?…]"
    const what = path.indexOf("/", 11);
    const query = path.indexOf("?");
    if (what === -1 || (query !== -1 && what > query)) return "models";
    if (path.startsWith("/predict", what)) return "predict";
    if (path.startsWith("/tables", what)) return "tables";
    return "other";
  }
  if (path.startsWith("/v1/jobs/")) return "jobs";
  if (path.startsWith("/admin/v1/")) return "admin";
  const bare = pathOf(path);
  if (bare === "/admin/queues" || bare.startsWith("/admin/queues/")) return "queue-board";
  if (bare === "/healthz" || bare === "/readyz") return bare.slice(1);
  if (bare === "/metrics") return "metrics";
  if (bare === "/openapi.json" || bare === "/docs" || bare.startsWith("/docs/")) return "docs";
  return "other";
}

/** What the log line of a response needs when it closes, kept on the response. */
interface Pending {
  log: Logger;
  logging: boolean;
  incoming: IncomingMessage;
  id: string;
  started: number;
  note: Record<string, unknown> | undefined;
}
const PENDING = Symbol("request log");
type Logged = ServerResponse & { [PENDING]?: Pending | undefined };

/**
 * The "close" listener of a response: one function, its request's fields read off the
 * response (no closure and no once() wrapper per request; "close" comes once).
 */
function onClose(this: Logged): void {
  settle(this, !this.writableFinished);
}

/**
 * Counts the request and writes its line, once (`aborted`: the reply was not sent whole;
 * `unanswered`: the client was gone before any).
 */
function settle(response: Logged, aborted: boolean, unanswered = false): void {
  const pending = response[PENDING];
  if (!pending) return;
  response[PENDING] = undefined;
  // A client gone before any answer: no status was sent (node would say 200).
  const status = response.headersSent && !unanswered ? response.statusCode : 0;
  processMetrics().countHttp(routeGroup(pending.incoming.url), status);
  // Failures are logged at warn or error level, so they are written even with info off.
  if (!pending.logging && status < 500) return;
  const line = {
    reqId: pending.id,
    method: pending.incoming.method,
    path: pathOf(pending.incoming.url).slice(0, 200),
    status,
    ...(aborted ? { aborted: true } : {}),
    ms: Math.round((performance.now() - pending.started) * 100) / 100,
    ...pending.note,
  };
  // A 503 is a refusal the service chose (Redis away, the live queue full, a version not
  // loaded; its cause logged once apart): a warning, not one error line per request.
  if (status === 503) pending.log.warn(line, "request refused: unavailable");
  else if (status >= 500) pending.log.error(line, "request failed");
  else pending.log.info(line, "request");
}

/**
 * For a request whose hooks ran with `answering` (see EdgeHook), once its front has
 * written the whole reply: counted and logged now. `gone`: the client had left before it
 * was written. Not answered yet (handed on): counted and logged when it closes. A
 * listener per response, added and called, cost about as much main-thread time as an
 * L1 hit's lookup.
 */
export function logAnswered(outgoing: ServerResponse, gone = false): void {
  const response = outgoing as Logged;
  if (!response[PENDING]) return;
  if (gone) settle(response, true, true);
  else if (response.writableEnded) settle(response, false);
  else response.on("close", onClose);
}

export function requestLog(log: Logger): EdgeHook {
  const logging = log.isLevelEnabled("info");
  return (incoming: IncomingMessage, outgoing: ServerResponse, answering?: boolean) => {
    const id = requestIdOf(incoming);
    addHeader(incoming, "X-Request-Id", id);
    let note: Record<string, unknown> | undefined;
    if (logging) {
      note = {};
      (incoming as Noted)[NOTE] = note;
    }
    (outgoing as Logged)[PENDING] = {
      log,
      logging,
      incoming,
      id,
      started: performance.now(),
      note,
    };
    // "close", not "finish": a request whose client went away is logged too. A front
    // answering it says when it has (logAnswered).
    if (!answering) outgoing.on("close", onClose);
    return undefined;
  };
}
