/**
 * Which version answers a lookup while its model runs an experiment: the client's arm
 * (by the client id header, else the API key) picks the candidate or the control
 * version; a request naming ?version= is outside the experiment. After the answer, the
 * arm's tallies and (sampled) the shadow comparison with the other version.
 */
import type { Context } from "hono";
import type { Source } from "../cache/tiers.ts";
import { PredcacheError } from "../errors.ts";
import {
  type Arm,
  armOf,
  clientIdFrom,
  type Experiment,
  otherArm,
  versionOf,
} from "../experiment/experiment.ts";
import { keyFor } from "../experiment/shadow.ts";
import { mainValueOf, type Prediction } from "../model/decoding.ts";
import type { ModelVersion } from "../model/registry.ts";
import { clientOf } from "./access.ts";
import type { ApiDeps } from "./deps.ts";
import { headerValues, setHeader } from "./headers.ts";
import type { ArmLabel } from "./reply.ts";

export interface Assignment {
  experiment: Experiment;
  arm: Arm;
  /** No client id and no API key: placed in control, and counted apart in its tallies. */
  anonymous: boolean;
  label: ArmLabel;
  /** The other arm's version, when this process has it loaded (for shadow comparisons). */
  other: ModelVersion | undefined;
  /**
   * Set when the client's own arm could not be served here (its version not loaded in this
   * process): the control version answered, and the lookup is kept out of both arms'
   * tallies (counting it as control's would skew the comparison).
   */
  unserved?: Arm;
}

/**
 * Arms this process has warned it cannot serve, by model, experiment id and arm: once
 * each (the running experiment is a new object at every refresh, so not by object).
 */
const warnedUnserved = new Set<string>();

export interface Routed {
  model: ModelVersion;
  assignment?: Assignment;
  /** The lookup's input as the client sent it (for the other arm's shadow comparison). */
  input?: Record<string, unknown>;
}

export function routeToArm(c: Context, deps: ApiDeps, resolved: ModelVersion): Routed {
  const running = deps.experiments?.running.get(resolved.name);
  if (!running || c.req.query("version") !== undefined) return { model: resolved };
  const header = deps.settings.clientIdHeader;
  // Answers differ by client now: shared caches must key on the client id too, and on the
  // API key that picks the arm of a request without one.
  setHeader(c, "Vary", deps.access ? `${header}, Authorization, X-API-Key` : header, true);
  const named = clientIdFrom(headerValues(c, header));
  // Which of two clients the request is, is not for the server to guess (joined, they
  // would be a third client, in an arm neither is in).
  if (named === "ambiguous")
    throw new PredcacheError("bad_request", `${header} names two clients: send one`, {
      header,
    });
  const client = named ?? clientOf(c);
  let arm = armOf(running, client);
  let model = deps.registry.get(resolved.name, versionOf(running, arm));
  let unserved: Arm | undefined;
  if (!model) {
    // A version this process has not loaded (yet, or its folder gone) cannot serve its
    // arm: control answers, labelled so, and the lookup is counted in neither arm.
    unserved = arm;
    const warned = `${resolved.name}|${running.id}|${arm}`;
    if (!warnedUnserved.has(warned)) {
      warnedUnserved.add(warned);
      deps.log.warn(
        { model: resolved.name, experiment: running.id, arm, version: versionOf(running, arm) },
        "experiment arm's version not loaded in this process: control answers its clients, left out of the report",
      );
    }
    arm = "control";
    model = deps.registry.get(resolved.name, running.control) ?? resolved;
  }
  return {
    model,
    assignment: {
      experiment: running,
      arm,
      anonymous: !client,
      label: { id: running.id, arm },
      other: deps.registry.get(resolved.name, versionOf(running, otherArm(arm))),
      ...(unserved ? { unserved } : {}),
    },
  };
}

/**
 * Counts an answer (or a pending one: no prediction; or an input the arm's version
 * refused: no key) for the arm, and maybe shadows it.
 */
export function recordArm(
  deps: ApiDeps,
  routed: Routed,
  key: string,
  source: Source | "pending" | "failed" | "refused",
  prediction: Prediction | undefined,
): void {
  const { assignment, model } = routed;
  if (!assignment || assignment.unserved || !deps.experiments) return;
  const value = prediction ? mainValueOf(model.manifest, prediction) : undefined;
  const hit = source === "memory" || source === "table" || source === "redis";
  deps.experiments.tally.answer(assignment.experiment, assignment.arm, model.manifest, hit, value, {
    failed: source === "failed",
    refused: source === "refused",
    anonymous: assignment.anonymous,
  });
  const other = assignment.other;
  if (prediction && other)
    deps.experiments.shadow.consider(
      assignment.experiment,
      assignment.arm,
      other,
      () => keyFor(other, model, key, routed.input),
      prediction,
    );
}
