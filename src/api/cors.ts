/**
 * CORS for the read routes, so browser apps on other origins can download tables and ask
 * for fallbacks. Hand-written rather than hono/cors, and an edge hook (./edge.ts) rather
 * than middleware: the headers are added before the app runs, so errors carry them too
 * and the routes keep no middleware; preflights are answered without reaching the app.
 */
import type { IncomingMessage } from "node:http";
import type { EdgeHook } from "./edge.ts";
import { addHeader, headerOf, takeHeaders } from "./headers.ts";

export interface CorsOptions {
  /** "*" or exact origins. */
  origins: readonly string[];
  /** Path prefixes CORS applies to ("/v1/models": that path and what is below it). */
  paths: readonly string[];
  allowMethods: readonly string[];
  allowHeaders: readonly string[];
  exposeHeaders: readonly string[];
  /**
   * Headers exposed besides, on answers whose path has this segment only (table downloads'
   * own): every byte of a header is written, and checked by node, on every answer.
   */
  alsoExposed?: { segment: string; headers: readonly string[] };
  maxAgeSeconds: number;
  /** The methods a path has routes for: a preflight allows only those of allowMethods. */
  methodsOf?: (path: string) => readonly string[];
}

function allowedOrigin(options: CorsOptions, origin: string | undefined): string | undefined {
  if (options.origins.includes("*")) return "*";
  return origin && options.origins.includes(origin) ? origin : undefined;
}

/**
 * Whether CORS applies: under "/v1/models", to "/v1/models", "/v1/models/…" or
 * "/v1/models?…", not "/v1/modelsfoo", and not a path with dot segments (the app resolves
 * "/v1/models/../admin" elsewhere).
 */
function isUnder(paths: readonly string[], url: string): boolean {
  const path = paths.find((prefix) => url.startsWith(prefix));
  if (path === undefined) return false;
  const next = url.charCodeAt(path.length);
  if (!(Number.isNaN(next) || next === 47 || next === 63)) return false;
  // A "/." before the query, if any (found without cutting the path out).
  const dots = url.indexOf("/.");
  const query = url.indexOf("?");
  return dots === -1 || (query !== -1 && dots > query);
}

/** Whether the path (not the query) of `url` has `segment` ("/tables": "/…/tables[/…]"). */
function hasSegment(url: string, segment: string): boolean {
  const query = url.indexOf("?");
  const end = query === -1 ? url.length : query;
  // Each occurrence: "/tables-eu/tables" has "/tables" first as part of another segment.
  for (let at = url.indexOf(segment); at !== -1 && at < end; at = url.indexOf(segment, at + 1)) {
    const next = url.charCodeAt(at + segment.length);
    if (Number.isNaN(next) || next === 47 || next === 63) return true;
  }
  return false;
}

/** allowMethods, narrowed to the methods the path serves when that is known and not none. */
function preflightMethods(options: CorsOptions, url: string, all: string): string {
  if (!options.methodsOf) return all;
  const query = url.indexOf("?");
  const served = options.methodsOf(query === -1 ? url : url.slice(0, query));
  const allowed = options.allowMethods.filter((method) => served.includes(method));
  return allowed.length > 0 ? allowed.join(", ") : all;
}

/**
 * The Access-Control headers of every answer under `paths` (and Vary: Origin when it
 * varies); a preflight (OPTIONS with Access-Control-Request-Method) is answered 204 here.
 */
export function cors(options: CorsOptions): EdgeHook {
  const any = options.origins.includes("*");
  const expose = options.exposeHeaders.join(", ");
  const also = options.alsoExposed;
  const exposeMore = also ? [...options.exposeHeaders, ...also.headers].join(", ") : expose;
  const methods = options.allowMethods.join(", ");
  const headers = options.allowHeaders.join(", ");
  return (incoming: IncomingMessage) => {
    if (!isUnder(options.paths, incoming.url ?? "")) return undefined;
    if (!any) addHeader(incoming, "Vary", "Origin", true);
    const allow = any ? "*" : allowedOrigin(options, headerOf(incoming, "origin"));
    const preflight =
      incoming.method === "OPTIONS" && headerOf(incoming, "access-control-request-method");
    if (preflight) {
      const reply: Record<string, string> = takeHeaders(incoming) ?? {};
      if (allow) {
        reply["Access-Control-Allow-Origin"] = allow;
        reply["Access-Control-Allow-Methods"] = preflightMethods(
          options,
          incoming.url ?? "",
          methods,
        );
        reply["Access-Control-Allow-Headers"] = headers;
        reply["Access-Control-Max-Age"] = String(options.maxAgeSeconds);
      }
      return new Response(null, { status: 204, headers: reply });
    }
    if (allow) {
      addHeader(incoming, "Access-Control-Allow-Origin", allow);
      const url = incoming.url ?? "";
      const more = also && hasSegment(url, also.segment);
      addHeader(incoming, "Access-Control-Expose-Headers", more ? exposeMore : expose);
    }
    return undefined;
  };
}
