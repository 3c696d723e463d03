/**
 * Header plumbing for the hot path. Hono keeps headers set with c.header() in a WHATWG
 * Headers object, and reading c.req.header() builds one for the request; on an L1 hit
 * those objects cost more than the lookup. So on node:http:
 * - request headers are read from node's already parsed object;
 * - headers added outside a handler's own reply (request id, CORS, Vary…) are kept in a
 *   flat name/value list on the request. A hit's plain-record Response takes them in (and
 *   @hono/node-server writes it straight out); any other reply gets them from the edge
 *   (./edge.ts) once the app has answered, through node's setHeader. Not setHeader for
 *   all: once it has been used, node merges every header of the reply through it.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";

interface NodeBindings {
  incoming?: IncomingMessage;
  outgoing?: ServerResponse;
}

/** node:http's request, when served by @hono/node-server. */
export function incomingOf(c: Context): IncomingMessage | undefined {
  return (c.env as NodeBindings | undefined)?.incoming;
}

/** A request header (lower-case name), without building a Headers object when on node:http. */
export function requestHeader(c: Context, name: string): string | undefined {
  const incoming = incomingOf(c);
  if (!incoming) return c.req.header(name);
  return headerOf(incoming, name);
}

/** Each value a header was sent with, in order (node joins repeated ones into one). */
export function headerValues(c: Context, name: string): string[] {
  const raw = incomingOf(c)?.rawHeaders;
  if (!raw) {
    const value = c.req.header(name);
    return value === undefined ? [] : [value];
  }
  const values: string[] = [];
  for (let at = 0; at + 1 < raw.length; at += 2)
    if ((raw[at] as string).toLowerCase() === name) values.push(raw[at + 1] as string);
  return values;
}

/** A header of node's request, repeated ones joined. */
export function headerOf(incoming: IncomingMessage, name: string): string | undefined {
  const value = incoming.headers[name];
  return Array.isArray(value) ? value.join(", ") : value;
}

const PENDING = Symbol("pending response headers");
/** As node's flat name/value list: a hit's reply takes it as it is, no record to walk. */
type WithPending = IncomingMessage & { [PENDING]?: string[] | undefined };

/** Adds a header to the reply this request will get (`append`: to a list such as Vary). */
export function addHeader(incoming: IncomingMessage, name: string, value: string, append = false) {
  const list = (incoming as WithPending)[PENDING];
  if (!list) {
    (incoming as WithPending)[PENDING] = [name, value];
    return;
  }
  for (let at = 0; at < list.length; at += 2)
    if (list[at] === name) {
      const before = list[at + 1];
      list[at + 1] = append && before ? `${before}, ${value}` : value;
      return;
    }
  list.push(name, value);
}

/** The headers added and not yet given to a reply, as a flat list; taking them clears them. */
function takeHeaderList(incoming: IncomingMessage): string[] | undefined {
  const list = (incoming as WithPending)[PENDING];
  if (list) (incoming as WithPending)[PENDING] = undefined;
  return list;
}

/** The headers added and not yet given to a reply; taking them clears them. */
export function takeHeaders(incoming: IncomingMessage): Record<string, string> | undefined {
  const list = takeHeaderList(incoming);
  if (!list) return undefined;
  const record: Record<string, string> = {};
  for (let at = 0; at < list.length; at += 2) record[list[at] as string] = list[at + 1] as string;
  return record;
}

/**
 * Adds a response header, whatever response the handler makes (errors included). Off
 * node:http, Hono's c.header(), which replies made with c.json() and c.body() carry.
 */
export function setHeader(c: Context, name: string, value: string, append = false): void {
  const incoming = incomingOf(c);
  if (incoming) addHeader(incoming, name, value, append);
  else c.header(name, value, { append });
}

/**
 * A response with the added headers and `headers`, as one plain record (the fast path).
 * To HEAD, Hono gives the GET's reply with its body dropped: the body's length is said.
 */
export function plainResponse(
  c: Context,
  status: number,
  body: string | null,
  headers: Record<string, string>,
): Response {
  const incoming = incomingOf(c);
  const added = incoming ? takeHeaders(incoming) : undefined;
  const all = added ? Object.assign(added, headers) : headers;
  if (body !== null && (incoming?.method ?? c.req.method) === "HEAD")
    all["Content-Length"] = String(Buffer.byteLength(body));
  return new Response(body, { status, headers: all });
}

/**
 * c.json(), saying the body's length to HEAD too: Hono answers HEAD with the GET's reply,
 * body dropped, and its length with it.
 */
export function jsonReply<S extends ContentfulStatusCode>(
  c: Context,
  value: unknown,
  status: S,
): Response {
  if ((incomingOf(c)?.method ?? c.req.method) === "HEAD")
    c.header("Content-Length", String(Buffer.byteLength(JSON.stringify(value))));
  return c.json(value, status);
}

/**
 * Writes a whole reply on node's response, ahead of the app: the added headers, then
 * `head` (the reply's own, as node's flat name/value list), then the body.
 */
export function writeReply(
  incoming: IncomingMessage,
  outgoing: ServerResponse,
  status: number,
  head: readonly string[],
  body: string,
): void {
  const added = takeHeaderList(incoming);
  let all = head;
  if (added) {
    for (let at = 0; at < head.length; at++) added.push(head[at] as string);
    all = added;
  }
  outgoing.writeHead(status, all as string[]);
  outgoing.end(body);
}

/**
 * Gives the headers still pending to node's response (any reply but a plain-record one).
 * Node lets the reply's own header of the same name win: a list header such as Vary is
 * added with setHeader(…, append) by whoever adds to it, never set on the reply itself.
 */
export function flushHeaders(incoming: IncomingMessage, outgoing: ServerResponse): void {
  const list = takeHeaderList(incoming);
  if (!list || outgoing.headersSent) return;
  for (let at = 0; at < list.length; at += 2)
    outgoing.setHeader(list[at] as string, list[at + 1] as string);
}

/** application/json or a +json type, with any parameters (charset…). */
const JSON_TYPE = /^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i;
/** A charset parameter, quoted or not. */
const CHARSET = /;\s*charset\s*=\s*"?([^";\s]*)/i;

/**
 * Whether a Content-Type names JSON as this service reads it: UTF-8, the only charset
 * JSON has (RFC 8259 §8.1), so a body said to be in another one is refused (415), not
 * misread.
 */
export function isJsonType(type: string): boolean {
  if (!JSON_TYPE.test(type)) return false;
  const charset = CHARSET.exec(type)?.[1]?.toLowerCase();
  return charset === undefined || charset === "utf-8" || charset === "utf8";
}
