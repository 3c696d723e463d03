/** The body and cache headers of a prediction answer, shared by every route that gives one. */
import { createHash } from "node:crypto";
import type { Context } from "hono";
import type { Source } from "../cache/tiers.ts";
import type { Arm } from "../experiment/experiment.ts";
import { isLowConfidence, type Prediction } from "../model/decoding.ts";
import type { ModelVersion } from "../model/registry.ts";
import { requestHeader } from "./headers.ts";

/** Which experiment arm answered, when the model runs an experiment. */
export interface ArmLabel {
  id: string;
  arm: Arm;
}

export interface PredictionReply {
  model: string;
  version: string;
  key: string;
  source: Source;
  prediction: Prediction;
  outOfDistribution: boolean;
  /** The fields outside the training distribution, when any. */
  outOfDistributionFields?: string[];
  lowConfidence: boolean;
  experiment?: ArmLabel;
}

export function predictionReply(
  model: ModelVersion,
  key: string,
  source: Source,
  prediction: Prediction,
  outOfDistribution: readonly string[],
  experiment?: ArmLabel,
): PredictionReply {
  const reply: PredictionReply = {
    model: model.name,
    version: model.version,
    key,
    source,
    prediction,
    outOfDistribution: outOfDistribution.length > 0,
    lowConfidence: isLowConfidence(model.manifest, prediction),
  };
  if (outOfDistribution.length > 0) reply.outOfDistributionFields = [...outOfDistribution];
  if (experiment) reply.experiment = experiment;
  return reply;
}

/**
 * Strong ETag of an answer: the version and the key decide it completely (a cached
 * prediction is an immutable fact), so a matching If-None-Match needs no lookup at all.
 * The key goes in as 128 bits of its SHA-256: with a 32-bit hash, keys of the demo model
 * alone shared tags by the thousand pairs, and one answer's tag got a 304 for the other.
 */
export function predictionEtag(model: ModelVersion, key: string, experiment?: ArmLabel): string {
  const arm = experiment ? `-${experiment.id}-${experiment.arm}` : "";
  // createHash, not crypto.hash (~0.3 µs less, but only from Node 20.12; engines says 20).
  const digest = createHash("sha256").update(key).digest("hex").slice(0, 32);
  return `"${model.version}-${digest}${arm}"`;
}

/**
 * How If-None-Match matches `etag`: "tag" when it names it, "any" when it is *, else
 * undefined. Tags are compared weakly (RFC 9110 §13.1.2): W/"x" matches "x", so a proxy
 * that weakens ETags (when it compresses, say) still gets its 304.
 */
export function ifNoneMatch(c: Context, etag: string): "tag" | "any" | undefined {
  const header = requestHeader(c, "if-none-match");
  if (!header) return undefined;
  if (header.trim() === "*") return "any";
  for (const listed of header.split(",")) {
    const tag = listed.trim();
    if ((tag.startsWith("W/") ? tag.slice(2) : tag) === etag) return "tag";
  }
  return undefined;
}

/** True when If-None-Match names this ETag or is * (for a representation at hand). */
export function notModified(c: Context, etag: string): boolean {
  return ifNoneMatch(c, etag) !== undefined;
}

/** The validators and cache lifetime of an answer, as a plain record (see ./headers.ts). */
export function hitHeaders(
  etag: string,
  maxAge: MaxAge,
  contentType?: string,
  scope: CacheScope = "public",
): Record<string, string> {
  const headers: Record<string, string> = {
    ETag: etag,
    "Cache-Control": cacheControl(maxAge, scope),
  };
  if (contentType) headers["Content-Type"] = contentType;
  return headers;
}

/**
 * How long caches may keep an answer: seconds (short: the URL stays the same across a
 * promote, the answer does not), or "immutable" for an answer of a version asked by name.
 */
export type MaxAge = number | "immutable";

/**
 * Who may keep an answer: any cache, or (with API keys on) only the client's own. A
 * shared cache must not hand one key's answers to another client, or to one with none.
 */
export type CacheScope = "public" | "private";

const IMMUTABLE = "public, max-age=31536000, immutable";
let cachedMaxAge = -1;
let cachedCacheControl = "";

export function cacheControl(maxAge: MaxAge, scope: CacheScope = "public"): string {
  if (scope === "private")
    return maxAge === "immutable"
      ? "private, max-age=31536000, immutable"
      : `private, max-age=${maxAge}`;
  if (maxAge === "immutable") return IMMUTABLE;
  if (maxAge !== cachedMaxAge) {
    cachedMaxAge = maxAge;
    cachedCacheControl = `public, max-age=${maxAge}`;
  }
  return cachedCacheControl;
}

/** Kept, but asked about again before each use (state that may change at any time). */
export function revalidatedCacheControl(scope: CacheScope): string {
  return scope === "private" ? "private, no-cache" : "no-cache";
}

/**
 * A JSON answer about what may change at any time (the models, a listing, the API's
 * description): an ETag of its bytes and no-cache, so a client revalidates it each time
 * and gets a 304 while it has not changed.
 */
export function revalidatedJson(
  c: Context,
  value: unknown,
  scope: CacheScope,
  contentType = "application/json",
): Response {
  const text = JSON.stringify(value);
  const etag = `"${createHash("sha256").update(text).digest("hex").slice(0, 32)}"`;
  c.header("ETag", etag);
  c.header("Cache-Control", revalidatedCacheControl(scope));
  if (notModified(c, etag)) return c.body(null, 304);
  c.header("Content-Type", contentType);
  // HEAD too: Hono answers it with the GET's reply, body (and so its length) dropped.
  c.header("Content-Length", String(Buffer.byteLength(text)));
  return c.body(text, 200);
}

export function setHitHeaders(
  c: Context,
  etag: string,
  maxAgeSeconds: number,
  scope: CacheScope = "public",
): void {
  c.header("ETag", etag);
  c.header("Cache-Control", cacheControl(maxAgeSeconds, scope));
}
