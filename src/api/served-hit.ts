/**
 * An answer from the cache (L1, a resident table or Redis), as the lookup route and the
 * hot front (./hot-lookups.ts) both give it: what it records besides the reply (demand,
 * the audit's sample, serving stats, the experiment arm's tallies, the log line's
 * source), and the reply's JSON.
 */
import type { IncomingMessage } from "node:http";
import type { Hit } from "../cache/tiers.ts";
import type { Prediction } from "../model/decoding.ts";
import type { ModelVersion } from "../model/registry.ts";
import type { ApiDeps } from "./deps.ts";
import { type Routed, recordArm } from "./experiment-routing.ts";
import { type ArmLabel, predictionReply } from "./reply.ts";
import { noteOf } from "./request-log.ts";

/** Records a hit served for `routed` (counted from `started`, a performance.now() reading). */
export function recordHit(
  deps: ApiDeps,
  routed: Routed,
  key: string,
  hit: Hit,
  outOfDistribution: readonly string[],
  started: number,
  incoming: IncomingMessage | undefined,
): void {
  const { model } = routed;
  deps.traffic.recordHit(model, key);
  deps.audit?.consider(model, key, hit);
  const note = incoming && noteOf(incoming);
  if (note) note.source = hit.source;
  deps.stats.record(model, key, hit.source, {
    seconds: (performance.now() - started) / 1000,
    prediction: hit.prediction,
    outOfDistribution: outOfDistribution.length > 0,
  });
  recordArm(deps, routed, key, hit.source, hit.prediction);
}

/**
 * The JSON of a hit's reply, kept with the cached prediction object it was made from (the
 * same object while the entry stays in L1 or the resident table): the hottest replies
 * are serialized once, not once per request. Keyed also by source and flagged fields
 * (which a key of this release implies, but one an older API process sent need not).
 */
const replies = new WeakMap<Prediction, Map<string, string>>();

export function hitReplyText(
  model: ModelVersion,
  key: string,
  hit: Hit,
  outOfDistribution: readonly string[],
  experiment: ArmLabel | undefined,
): string {
  // Read from Redis or computed live: a new object, not kept (memoizing it would only add
  // a WeakMap entry per read for the garbage collector to clear).
  if (hit.source === "redis" || hit.source === "live")
    return JSON.stringify(
      predictionReply(model, key, hit.source, hit.prediction, outOfDistribution, experiment),
    );
  let texts = replies.get(hit.prediction);
  if (!texts) {
    texts = new Map();
    replies.set(hit.prediction, texts);
  }
  const arm = experiment ? `${experiment.id}|${experiment.arm}` : "";
  const id = `${model.version}|${hit.source}|${outOfDistribution.join(",")}|${arm}`;
  let text = texts.get(id);
  if (text === undefined) {
    text = JSON.stringify(
      predictionReply(model, key, hit.source, hit.prediction, outOfDistribution, experiment),
    );
    texts.set(id, text);
  }
  return text;
}
