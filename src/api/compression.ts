/**
 * gzip (or deflate) for the larger answers: a batch's results, the models, the table
 * listing, OpenAPI and the docs, metrics, admin's listings, when the client accepts it.
 * Hono's compress, with what it leaves to the app:
 * - an answer whose length is not said (c.json, c.body) is measured first: compress only
 *   holds back what says it is under the threshold, and most errors are a few dozen bytes;
 * - Vary goes with the headers the edge adds (./headers.ts): set on the reply it would
 *   replace the edge's own (Vary: Origin).
 * Not on single lookups or table files: a hit is answered by the hot front ahead of Hono,
 * uncompressed (a few hundred bytes), and the route through Hono answers the same; a table
 * is served in ranges of its bytes, with a strong ETag of them.
 */
import type { Context, MiddlewareHandler } from "hono";
import { COMPRESSIBLE_CONTENT_TYPE_REGEX, compress } from "hono/compress";
import { setHeader } from "./headers.ts";

/** Below this, gzip's header and a stream's setup cost more than the bytes saved. */
export const COMPRESS_MIN_BYTES = 1024;

/** The paths whose answers may be compressed (Hono's path patterns), besides the batch. */
export const COMPRESSED_PATHS = [
  "/v1/models",
  "/v1/models/:model",
  "/v1/models/:model/tables",
  "/openapi.json",
  "/docs",
  "/docs/*",
  "/metrics",
  "/admin/*",
] as const;

export function compression(): MiddlewareHandler {
  const gzip = compress({ threshold: COMPRESS_MIN_BYTES });
  return async (c, next) => {
    await gzip(c, async () => {
      await next();
      await sayLength(c);
    });
    const vary = c.res.headers.get("Vary");
    if (vary !== null) {
      c.res.headers.delete("Vary");
      setHeader(c, "Vary", vary, true);
    }
  };
}

/** Gives a compressible reply held in memory its Content-Length, so the threshold applies. */
async function sayLength(c: Context): Promise<void> {
  const res = c.res;
  if (res.body === null || res.headers.has("Content-Length") || c.req.method === "HEAD") return;
  const type = res.headers.get("Content-Type");
  if (!type || !COMPRESSIBLE_CONTENT_TYPE_REGEX.test(type)) return;
  const bytes = new Uint8Array(await res.arrayBuffer());
  const measured = new Response(bytes, res);
  measured.headers.set("Content-Length", String(bytes.byteLength));
  c.res = measured;
}
