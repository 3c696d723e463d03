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

const pending = new WeakMap<Request, Record<string, string>>();

/** A request header (lower-case name), without building a Headers object when on node:http. */
export function requestHeader(c: Context, name: string): string | undefined {
  const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
  if (!incoming) return c.req.header(name);
  const value = incoming.headers[name];
  return Array.isArray(value) ? value.join(", ") : value;
}

/** Adds a response header, whatever response the handler makes (errors included). */
export function setHeader(c: Context, name: string, value: string, append = false): void {
  let record = pending.get(c.req.raw);
  if (!record) {
    record = {};
    pending.set(c.req.raw, record);
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
  const record = pending.get(c.req.raw);
  if (record) pending.delete(c.req.raw);
  return new Response(body, { status, headers: record ? Object.assign(record, headers) : headers });
}

/** Copies pending headers onto a response made the usual way (call once, at the end). */
export function applyHeaders(c: Context): void {
  const record = pending.get(c.req.raw);
  if (!record) return;
  pending.delete(c.req.raw);
  const headers = c.res.headers;
  for (const name in record) {
    const value = record[name] as string;
    if (name === "Vary" && headers.has("vary")) headers.append("Vary", value);
    else headers.set(name, value);
  }
}
