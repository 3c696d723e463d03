/**
 * The live queue's contract, shared by the API (producer) and the live worker: queue
 * name, job id derivation (one job per model version and canonical key, so identical
 * misses anywhere share one job) and the payload schema the worker re-validates.
 */
import { z } from "zod";
import { sha256Hex } from "../model/hash.ts";

export const LIVE_QUEUE = "live";

export const liveJobSchema = z.strictObject({
  model: z.string().min(1).max(64),
  version: z.string().regex(/^[0-9a-f]{12}$/),
  key: z.string().min(2).max(8192),
});
export type LiveJob = z.infer<typeof liveJobSchema>;

/**
 * Job names: "predict" answers a miss and stores it; "audit" recomputes a cached entry
 * for the cache audit and stores nothing, so an audit observes and never repairs.
 */
export const liveJobNameSchema = z.enum(["predict", "audit"]);
export type LiveJobName = z.infer<typeof liveJobNameSchema>;

/** `<model>.<version>.<hash of key>`: safe in URLs and in BullMQ ids (no colon). */
export function liveJobId(model: string, version: string, key: string): string {
  return `${model}.${version}.${sha256Hex(key).slice(0, 32)}`;
}

/** `audit.<model>.<version>.<hash of key>`: never a predict id, so /v1/jobs does not find it. */
export function auditJobId(model: string, version: string, key: string): string {
  return `audit.${liveJobId(model, version, key)}`;
}

const jobIdPattern = /^([a-z0-9][a-z0-9-]{0,62})\.([0-9a-f]{12})\.([0-9a-f]{32})$/;

export function parseLiveJobId(id: string): { model: string; version: string } | undefined {
  const match = jobIdPattern.exec(id);
  return match ? { model: match[1] as string, version: match[2] as string } : undefined;
}

/** BullMQ's key prefix: one hash tag, so a queue's keys stay in one Redis Cluster slot. */
export function queuePrefix(prefix: string): string {
  return `{${prefix}:q}`;
}
