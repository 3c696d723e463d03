/**
 * An experiment: a share of a model's clients served by a candidate version instead of
 * the control version, and a sample of lookups compared across the two (shadow). Its
 * record is JSON in Redis; arm assignment is a pure function of experiment and client.
 */
import { createHash } from "node:crypto";
import { LRUCache } from "lru-cache";
import { z } from "zod";

export type Arm = "control" | "candidate";
export const ARMS: readonly Arm[] = ["control", "candidate"];

export type ExperimentState = "running" | "promoted" | "reverted";

export interface Experiment {
  id: string;
  model: string;
  /** The version the control arm is served from: the active version at the start. */
  control: string;
  candidate: string;
  /** Share of clients in the candidate arm, 0..1. */
  fraction: number;
  /** Share of lookups also computed on the other arm's version, off the request path. */
  shadowRate: number;
  state: ExperimentState;
  startedAt: string;
  stoppedAt?: string;
  /**
   * "whole": the whole client id is hashed. Experiments started before it was (no field)
   * keep hashing an id's first 256 characters, so no client changes arm mid-experiment.
   */
  clientIds?: "whole";
}

export const experimentIdSchema = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{0,47}$/, "lower-case letters, digits and dashes, at most 48");

const share = z.number().min(0).max(1);

export const startSchema = z.strictObject({
  id: experimentIdSchema.optional(),
  candidate: z.string().min(1).max(64),
  fraction: share,
  shadowRate: share.default(0),
});

export const updateSchema = z
  .strictObject({ fraction: share.optional(), shadowRate: share.optional() })
  .refine((u) => u.fraction !== undefined || u.shadowRate !== undefined, {
    message: "give fraction, shadowRate or both",
  });

export const stopSchema = z.strictObject({ outcome: z.enum(["promote", "revert"]) });

export function newExperimentId(now = Date.now()): string {
  return `x-${now.toString(36)}-${Math.floor(Math.random() * 36 ** 4)
    .toString(36)
    .padStart(4, "0")}`;
}

/**
 * Where a client falls in [0, 1) for this experiment: a hash of both, so a client keeps
 * its arm for the whole experiment (and when the split grows, those already in the
 * candidate arm stay there), while different experiments draw independent cohorts.
 */
export function cohortPoint(experimentId: string, clientId: string): number {
  const id = `${experimentId}\0${clientId}`;
  // The whole id is hashed, however long; only short ones are remembered (a header may
  // hold kilobytes, and 10,000 of those would be a lot of memory for a cache of points).
  const kept = clientId.length <= POINT_ID_KEPT_MAX;
  let point = kept ? points.get(id) : undefined;
  if (point === undefined) {
    const digest = createHash("sha256").update(id).digest();
    // 48 bits are plenty for a uniform point and exact in a double.
    point = digest.readUIntBE(0, 6) / 2 ** 48;
    if (kept) points.set(id, point);
  }
  return point;
}

/**
 * Points of recent clients: every lookup of a model in an experiment asks for its
 * client's arm, and a SHA-256 (~2 µs with createHash) is most of what routing costs a hit.
 */
const points = new LRUCache<string, number>({ max: 10_000 });
const POINT_ID_KEPT_MAX = 256;

/**
 * The client a client id header names, from each value it was sent with: a list, as HTTP
 * lets a proxy join repeated lines with commas, so an id holds no comma. Repeats of one id
 * are that id; none (absent, empty, blank) is undefined; two different ids are "ambiguous".
 */
export function clientIdFrom(values: readonly string[]): string | undefined | "ambiguous" {
  let id: string | undefined;
  for (const value of values)
    for (const part of value.split(",")) {
      const trimmed = part.trim();
      if (trimmed === "") continue;
      if (id !== undefined && trimmed !== id) return "ambiguous";
      id = trimmed;
    }
  return id;
}

/** The arm of a client; clients without an id stay in the control arm. */
export function armOf(experiment: Experiment, clientId: string | undefined): Arm {
  if (!clientId || experiment.fraction <= 0) return "control";
  const hashed = experiment.clientIds === "whole" ? clientId : clientId.slice(0, 256);
  return cohortPoint(experiment.id, hashed) < experiment.fraction ? "candidate" : "control";
}

export function versionOf(experiment: Experiment, arm: Arm): string {
  return arm === "candidate" ? experiment.candidate : experiment.control;
}

export function otherArm(arm: Arm): Arm {
  return arm === "candidate" ? "control" : "candidate";
}
