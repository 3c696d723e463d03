/**
 * Header plumbing for the hot path. Hono keeps headers set with c.header() in a WHATWG
 * Headers object, and reading c.req.header() builds one for the request; on an L1 hit
 * those objects cost more than the lookup. Here request headers are read from node:http's
 * already parsed object, and headers middleware adds are kept in a plain record: a hit
 * answers with a plain-record Response (which @hono/node-server writes straight out),
 * and for every other response the record is copied onto it at the end (applyHeaders).
 */
import type { IncomingMessage } from "node:http";
import type { Context } from "hono";

/** Headers added so far, on the request's Context (a property: a WeakMap costs ~1 µs per set). */
const PENDING = Symbol("pending headers");
type WithPending = Context & { [PENDING]?: Record<string, string> | undefined };

/** A request header (lower-case name), without building a Headers object when on node:http. */
export function requestHeader(c: Context, name: string): string | undefined {
  const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
  if (!incoming) return c.req.header(name);
  const value = incoming.headers[name];
  return Array.isArray(value) ? value.join(", ") : value;
}

/** Adds a response header, whatever response the handler makes (errors included). */
export function setHeader(c: Context, name: string, value: string, append = false): void {
  let record = (c as WithPending)[PENDING];
  if (!record) {
    record = {};
    (c as WithPending)[PENDING] = record;
  }
  const before = record[name];
  record[name] = append && before ? `${before}, ${value}` : value;
}

/** A response carrying the pending headers and `headers`, as a plain record (the fast path). */
export function plainResponse(
  c: Context,
  status: number,
  body: string | null,
  headers: Record<string, string>,
): Response {
  const record = (c as WithPending)[PENDING];
  if (record) (c as WithPending)[PENDING] = undefined;
  return new Response(body, { status, headers: record ? Object.assign(record, headers) : headers });
}

/** Copies pending headers onto a response made the usual way (call once, at the end). */
export function applyHeaders(c: Context): void {
  const record = (c as WithPending)[PENDING];
  if (!record) return;
  (c as WithPending)[PENDING] = undefined;
  const headers = c.res.headers;
  for (const name in record) {
    const value = record[name] as string;
    if (name === "Vary" && headers.has("vary")) headers.append("Vary", value);
    else headers.set(name, value);
  }
}
