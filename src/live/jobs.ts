/**
 * The live queue's contract, shared by the API (producer) and the live worker: queue
 * name, ids, and the payload schema the worker re-validates.
 *
 * A job carries a batch of keys of one model version (the misses an API process gathered
 * within a few milliseconds), so the queue's per-job cost is paid once per batch, not
 * once per miss. Each key keeps an id of its own, derived from version and key: the id a
 * client polls, and the name of the key's claim, which makes identical misses in any
 * process share one computation.
 */
import { createHash, randomBytes } from "node:crypto";
import { z } from "zod";
import type { Prediction } from "../model/decoding.ts";

export const LIVE_QUEUE = "live";

/** Keys one job may carry (the API batches up to PREDCACHE_LIVE_BATCH_ROWS). */
export const MAX_KEYS_PER_JOB = 10_000;

export const liveJobSchema = z.strictObject({
  model: z.string().min(1).max(64),
  version: z.string().regex(/^[0-9a-f]{12}$/),
  keys: z.array(z.string().min(2).max(8192)).min(1).max(MAX_KEYS_PER_JOB),
});
export type LiveJob = z.infer<typeof liveJobSchema>;

/** What a job returns: each of its keys' prediction. */
export type LiveResult = Record<string, Prediction>;

/**
 * Job names: "predict" answers misses and stores them; "audit" recomputes a cached entry
 * for the cache audit and stores nothing, so an audit observes and never repairs;
 * "repair" recomputes and stores a key whose stored value did not decode (a wrong value
 * that decodes is the audit's to report, not anyone's to overwrite unseen).
 */
export const liveJobNameSchema = z.enum(["predict", "audit", "repair"]);
export type LiveJobName = z.infer<typeof liveJobNameSchema>;

/**
 * `<model>.<version>.<hash of key>`: a key's own id, safe in URLs (no colon). Server-only,
 * so node:crypto (several times faster than the browser-safe hash) computes it.
 */
export function liveJobId(model: string, version: string, key: string): string {
  return `${model}.${version}.${createHash("sha256").update(key).digest("hex").slice(0, 32)}`;
}

/**
 * `<model>.<version>.b<random>.t<claim ttl ms>`: one batch's BullMQ job id (never a key's
 * id), also the value of its keys' claims. It names the time to live the claims were set
 * with, so any process can tell a claim's age from its PTTL. Without `claimTtlMs`, the
 * form of processes from before that (`…b<random>`, still read).
 */
export function batchJobId(model: string, version: string, claimTtlMs?: number): string {
  const id = `${model}.${version}.b${randomBytes(9).toString("base64url")}`;
  return claimTtlMs === undefined ? id : `${id}.t${Math.round(claimTtlMs)}`;
}

/** The claim time to live a batch id names; undefined for an id of the older form. */
export function batchClaimTtlMs(batchId: string): number | undefined {
  // base64url has no ".", so an older id cannot end like this.
  const match = /\.t(\d{1,12})$/.exec(batchId);
  return match ? Number(match[1]) : undefined;
}

/** `audit.<model>.<version>.<hash of key>`: never a key's id, so /v1/jobs does not find it. */
export function auditJobId(model: string, version: string, key: string): string {
  return `audit.${liveJobId(model, version, key)}`;
}

/** `repair.<model>.<version>.<hash of key>`: one repair of a key queued at a time. */
export function repairJobId(model: string, version: string, key: string): string {
  return `repair.${liveJobId(model, version, key)}`;
}

const jobIdPattern = /^([a-z0-9][a-z0-9-]{0,62})\.([0-9a-f]{12})\.([0-9a-f]{32})$/;

/** The model and version of a key's id; undefined for anything else. */
export function parseLiveJobId(id: string): { model: string; version: string } | undefined {
  const match = jobIdPattern.exec(id);
  return match ? { model: match[1] as string, version: match[2] as string } : undefined;
}

/** BullMQ's key prefix: one hash tag, so a queue's keys stay in one Redis Cluster slot. */
export function queuePrefix(prefix: string): string {
  return `{${prefix}:q}`;
}

/** The claim of a key (its id → the batch computing it), in the queue's slot. */
export function claimKey(prefix: string, keyId: string): string {
  return `${prefix}:claim:${keyId}`;
}

/**
 * The batch whose failure a key's id last saw (its id → that batch), in the queue's slot:
 * the claim is given up at once, so the next miss tries again, and polls read this.
 */
export function failedKey(prefix: string, keyId: string): string {
  return `${prefix}:failed:${keyId}`;
}
