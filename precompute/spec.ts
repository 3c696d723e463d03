/**
 * The precompute contract: what a run asks for (validated where it enters — code, CLI,
 * admin API — and again when a worker takes the job) and the payloads of run and chunk
 * jobs.
 */
import { z } from "zod";

const gridAxis = z.union([
  /** Every known value (categorical vocabulary, or the whole integer range). */
  z.literal("all"),
  z.array(z.union([z.string(), z.number()])).min(1),
  z.strictObject({ min: z.number(), max: z.number(), step: z.number().positive().default(1) }),
]);

export const sourceSchema = z.discriminatedUnion("kind", [
  z.strictObject({
    kind: z.literal("seed"),
    /** CSV (header row) or JSON lines; an optional `frequency` column is not a feature. */
    file: z.string().min(1),
    /** Take only the first N rows (the file is ordered by frequency when it has one). */
    limit: z.number().int().positive().optional(),
  }),
  z.strictObject({
    kind: z.literal("grid"),
    /** Axis per feature; features left out take their default. */
    axes: z.record(z.string(), gridAxis),
    /** Refuse grids larger than this (the cross product grows fast). */
    maxSize: z.number().int().positive().default(1_000_000),
  }),
  z.strictObject({
    kind: z.literal("inline"),
    /** Inputs sent with the request (the admin API and CLI upload a local file this way). */
    inputs: z.array(z.record(z.string(), z.unknown())).min(1).max(100_000),
  }),
  z.strictObject({
    kind: z.literal("traffic"),
    top: z.number().int().positive().max(10_000_000),
    /** Whose traffic: the model's inputs as encoded by this encoding (default: the target's). */
    encodingHash: z.string().optional(),
  }),
]);
export type SourceSpec = z.infer<typeof sourceSchema>;
export type SourceSpecInput = z.input<typeof sourceSchema>;

/** Strict: a misspelt field (promte, limt) is refused, not dropped, as it changes the run. */
export const runRequestSchema = z.strictObject({
  model: z.string().min(1),
  /** Target model version (default: the active one). */
  version: z
    .string()
    .regex(/^[0-9a-f]{12}$/)
    .optional(),
  source: sourceSchema,
  chunkSize: z.number().int().min(1).max(100_000).default(5_000),
  /** Switch the active version to the target once every chunk has succeeded. */
  promote: z.boolean().default(false),
  /** First precompute the top K inputs observed for the currently active version. */
  warmFromTraffic: z.number().int().positive().optional(),
});
export type RunRequest = z.input<typeof runRequestSchema>;

export const runJobSchema = z.object({
  runId: z.string(),
  model: z.string(),
  version: z.string(),
  source: sourceSchema,
  chunkSize: z.number().int().positive(),
  promote: z.boolean(),
  /**
   * With promote: how many times the model's active version had been switched when the
   * run was asked for. The run promotes only if no switch happened since: a promote,
   * rollback or experiment stop made meanwhile is not undone. Absent in runs queued by
   * older releases (they promote whatever happened).
   */
  promoteIfSwitches: z.string().optional(),
  warm: z.object({ top: z.number().int().positive(), encodingHash: z.string() }).optional(),
  /** Step-job state: planning adds the chunks, finishing runs once they all succeeded. */
  step: z.enum(["plan", "finish"]),
});
export type RunJob = z.infer<typeof runJobSchema>;

export const chunkJobSchema = z.object({
  runId: z.string(),
  index: z.number().int().min(0),
  model: z.string(),
  version: z.string(),
  inputs: z.array(z.record(z.string(), z.unknown())).min(1),
});
export type ChunkJob = z.infer<typeof chunkJobSchema>;

export const RUN_QUEUE = "precompute";
export const CHUNK_QUEUE = "precompute-chunks";
