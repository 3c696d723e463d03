/**
 * Experiment operations behind the admin API and the CLI: start (candidate and split
 * checked first), change the split, stop (promote the candidate or revert to control,
 * atomically), list, report. Every process sees a change within a second.
 */
import type { ApiDeps } from "../api/deps.ts";
import { PredcacheError } from "../errors.ts";
import {
  type Experiment,
  newExperimentId,
  startSchema,
  stopSchema,
  updateSchema,
} from "../experiment/experiment.ts";
import { refusedByCandidate } from "../experiment/input-coverage.ts";
import { type ExperimentReport, experimentReport } from "../experiment/report.ts";
import type { Written } from "../experiment/store.ts";
import { mainOutputOf } from "../model/manifest.ts";
import type { AdminDeps } from "./deps.ts";
import { coldWarnings, knownModel, loadedVersion } from "./versions.ts";

type Deps = ApiDeps & { admin: AdminDeps };

function experimentsOf(deps: Deps): NonNullable<ApiDeps["experiments"]> {
  if (!deps.experiments) throw new Error("experiments are not wired into this service");
  return deps.experiments;
}

function parsed<T>(
  result: { success: true; data: T } | { success: false; error: { issues: unknown[] } },
) {
  if (result.success) return result.data;
  const issues = (result.error.issues as { path: PropertyKey[]; message: string }[]).map((i) => ({
    path: i.path.join("."),
    message: i.message,
  }));
  throw new PredcacheError("bad_request", "the experiment request is not valid", { issues });
}

async function existing(
  deps: Deps,
  model: string,
  id: string,
): Promise<{ experiment: Experiment; read: string }> {
  knownModel(deps, model);
  const found = await experimentsOf(deps).store.record(model, id);
  if (!found) throw new PredcacheError("not_found", `model ${model} has no experiment ${id}`);
  return found;
}

async function runningOne(
  deps: Deps,
  model: string,
  id: string,
): Promise<{ experiment: Experiment; read: string }> {
  const found = await existing(deps, model, id);
  const { state } = found.experiment;
  if (state !== "running")
    throw new PredcacheError("conflict", `experiment ${id} has ended (${state})`, { state });
  return found;
}

/** Times a change is made again over a record another change has just replaced. */
const CHANGE_ATTEMPTS = 10;

/**
 * Reads the running experiment, makes its next record and saves it over the one read; a
 * change saved meanwhile (another operator, another process) is read and built on, never
 * overwritten with what it replaced.
 */
async function changeRunning<R>(
  deps: Deps,
  model: string,
  id: string,
  save: (current: Experiment, read: string) => Promise<{ written: Written; result: R }>,
): Promise<R> {
  for (let attempt = 1; ; attempt++) {
    const { experiment, read } = await runningOne(deps, model, id);
    const { written, result } = await save(experiment, read);
    if (written === "ok") return result;
    if (written === "ended" || attempt >= CHANGE_ATTEMPTS)
      throw new PredcacheError(
        "conflict",
        written === "ended"
          ? `experiment ${id} ended meanwhile`
          : `experiment ${id} kept changing meanwhile: retry`,
      );
  }
}

export async function startExperiment(
  deps: Deps,
  model: string,
  body: unknown,
): Promise<Experiment & { warnings: string[] }> {
  knownModel(deps, model);
  const request = parsed(startSchema.safeParse(body));
  const control = deps.active.get(model);
  if (!control) throw new PredcacheError("conflict", `model ${model} has no active version yet`);
  const candidate = await loadedVersion(deps, model, request.candidate);
  if (request.candidate === control)
    throw new PredcacheError(
      "bad_request",
      `${request.candidate} is the active version already: name another version as candidate`,
    );
  // The report compares the arms' main outputs: a probability and a count of minutes do
  // not compare (their means, histograms and agreement rules differ).
  const controlModel = deps.registry.get(model, control);
  const [ours, theirs] = [controlModel, candidate].map((v) => v && mainOutputOf(v.manifest));
  if (ours && theirs && (ours.name !== theirs.name || ours.kind !== theirs.kind))
    throw new PredcacheError(
      "bad_request",
      `the versions' main outputs differ (control ${ours.name}, a ${ours.kind}; candidate ${theirs.name}, a ${theirs.kind}): their answers cannot be compared`,
    );
  const experiment: Experiment = {
    id: request.id ?? newExperimentId(),
    model,
    control,
    candidate: request.candidate,
    fraction: request.fraction,
    shadowRate: request.shadowRate,
    state: "running",
    startedAt: new Date().toISOString(),
    clientIds: "whole",
  };
  await experimentsOf(deps).store.start(experiment);
  await experimentsOf(deps).running.refresh();
  // The candidate may have been found in the models folder by this process only (dropped
  // there, no reload): every process loads it, or it would serve control in its place.
  await deps.admin.announceModels();
  // Said, not refused: a narrower candidate may be the point of the experiment.
  const warnings = controlModel
    ? refusedByCandidate(controlModel.manifest.encoding, candidate.manifest.encoding).map(
        (why) => `${why}: the candidate's cohort gets 422 there (counted as refused in the report)`,
      )
    : [];
  return { ...experiment, warnings };
}

export async function updateExperiment(
  deps: Deps,
  model: string,
  id: string,
  body: unknown,
): Promise<Experiment & { warnings: string[] }> {
  const change = parsed(updateSchema.safeParse(body));
  const { before, next } = await changeRunning(deps, model, id, async (current, read) => {
    const next: Experiment = {
      ...current,
      ...(change.fraction !== undefined ? { fraction: change.fraction } : {}),
      ...(change.shadowRate !== undefined ? { shadowRate: change.shadowRate } : {}),
    };
    const written = await experimentsOf(deps).store.update(next, read);
    return { written, result: { before: current, next } };
  });
  await experimentsOf(deps).running.refresh();
  // Allowed (winding a candidate down is an operator's call), but said: a client keeps
  // its arm while the split grows, not while it shrinks.
  const warnings =
    next.fraction < before.fraction
      ? [
          `the split shrank from ${before.fraction} to ${next.fraction}: candidate clients above ${next.fraction} are served control from now on (their lookups so far stay in the candidate's report)`,
        ]
      : [];
  return { ...next, warnings };
}

export async function stopExperiment(
  deps: Deps,
  model: string,
  id: string,
  body: unknown,
): Promise<Experiment & { active: string; warnings: string[] }> {
  const { outcome } = parsed(stopSchema.safeParse(body));
  const promote = outcome === "promote";
  const { experiment: current } = await runningOne(deps, model, id);
  // Promoting the candidate is a promote: refused as one would be (its folder gone).
  if (promote) await loadedVersion(deps, model, current.candidate);
  const ended = await changeRunning(deps, model, id, async (latest, read) => {
    const ended: Experiment = {
      ...latest,
      state: promote ? "promoted" : "reverted",
      stoppedAt: new Date().toISOString(),
    };
    // Reverting leaves the pointer as it is: everyone is served the active version again.
    const activate = promote ? latest.candidate : undefined;
    return { written: await experimentsOf(deps).store.stop(ended, activate, read), result: ended };
  });
  await Promise.all([experimentsOf(deps).running.refresh(), deps.active.refresh()]);
  await experimentsOf(deps).tally.flush();
  return {
    ...ended,
    active: deps.active.get(model) ?? current.control,
    // As a promote's: made either way, a failure to say more is not an error.
    warnings: promote ? await coldWarnings(deps, model, current.candidate).catch(() => []) : [],
  };
}

export async function listExperiments(deps: Deps, model: string): Promise<Experiment[]> {
  knownModel(deps, model);
  return experimentsOf(deps).store.list(model);
}

export async function reportExperiment(
  deps: Deps,
  model: string,
  id: string,
): Promise<ExperimentReport> {
  const { experiment } = await existing(deps, model, id);
  // This process's latest counts first; other processes add theirs every second.
  await experimentsOf(deps).tally.flush();
  return experimentReport(
    { redis: deps.redis, keys: deps.admin.keys, registry: deps.registry, tables: deps.tables },
    experiment,
  );
}
