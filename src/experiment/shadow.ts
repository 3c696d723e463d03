/**
 * Shadow comparisons: for a sample of an experiment's lookups, the other arm's version
 * answers the same input too — from its cache, or from the live queue (which also warms
 * that version's keyspace) — after the reply has gone, and the two are compared. The
 * request never waits for it; past maxInFlight pending comparisons, samples are dropped
 * (and counted) rather than queued without bound. The other version is asked for the
 * same input under its own key (its encoding may differ); an input it refuses is counted
 * as refused, and nothing is asked of it.
 */
import type { Tiers } from "../cache/tiers.ts";
import type { LiveClient } from "../live/client.ts";
import type { Logger } from "../log.ts";
import type { Prediction } from "../model/decoding.ts";
import type { ModelVersion } from "../model/registry.ts";
import { processMetrics, type ShadowOutcome } from "../observability/metrics.ts";
import { agreementOf } from "./agreement.ts";
import type { Arm, Experiment } from "./experiment.ts";
import type { ArmTally } from "./tally.ts";

export interface ShadowOptions {
  maxInFlight: number;
  random?: () => number;
  /**
   * Whether the experiment still runs in this process: a comparison that ends after its
   * experiment stopped is not counted in the metrics, whose series went with the stop.
   */
  isRunning?: (experiment: Experiment) => boolean;
}

/**
 * `other`'s key for the input `model` keys as `key`, asked as `input` (the client's own
 * values: a key holds a flagged value as its bound ± 1 and an unknown category as "*",
 * which another encoding may take differently); undefined when `other` refuses it.
 */
export function keyFor(
  other: ModelVersion,
  model: ModelVersion,
  key: string,
  input?: Record<string, unknown>,
): string | undefined {
  if (other.encoder.hash === model.encoder.hash) return key;
  try {
    const encoded = other.encoder.encode(input ?? model.encoder.decodeKey(key));
    return encoded.ok ? encoded.value.key : undefined;
  } catch {
    return undefined;
  }
}

export class ShadowComparer {
  private inFlight = 0;
  private readonly pending = new Set<Promise<void>>();
  readonly counts = { sampled: 0, compared: 0, dropped: 0, refused: 0, failed: 0 };

  constructor(
    private readonly tiers: Tiers,
    private readonly live: LiveClient,
    private readonly tally: ArmTally,
    private readonly log: Logger,
    private readonly options: ShadowOptions,
  ) {}

  /**
   * Maybe (at the experiment's shadow rate) compares `served` with `other`'s answer for
   * the same input, which `otherKey` keys for it (made only for a sampled lookup).
   */
  consider(
    experiment: Experiment,
    arm: Arm,
    other: ModelVersion,
    otherKey: () => string | undefined,
    served: Prediction,
  ): void {
    if (experiment.shadowRate <= 0) return;
    if ((this.options.random ?? Math.random)() >= experiment.shadowRate) return;
    this.counts.sampled++;
    const outcomes = processMetrics().shadowComparisons;
    const count = (outcome: ShadowOutcome) => {
      if (this.options.isRunning?.(experiment) ?? true)
        outcomes.labels(other.name, experiment.id, outcome).inc();
    };
    if (this.inFlight >= this.options.maxInFlight) {
      this.counts.dropped++;
      count("dropped");
      this.tally.missed(experiment, arm, other.manifest, "dropped");
      return;
    }
    const theirKey = otherKey();
    if (theirKey === undefined) {
      this.counts.refused++;
      count("refused");
      this.tally.missed(experiment, arm, other.manifest, "refused");
      return;
    }
    this.inFlight++;
    const work = new Promise<void>((done) => setImmediate(done))
      .then(() => this.answerOf(other, theirKey))
      .then((theirs) => {
        const { agreed, absDiff } = agreementOf(other.manifest, served, theirs);
        this.tally.compare(experiment, arm, other.manifest, agreed, absDiff);
        this.counts.compared++;
        count(agreed ? "agreed" : "disagreed");
      })
      .catch((error: Error) => {
        this.counts.failed++;
        count("failed");
        this.tally.missed(experiment, arm, other.manifest, "failed");
        this.log.debug(
          { err: error.message, model: other.name, key: theirKey },
          "shadow comparison failed",
        );
      })
      .finally(() => {
        this.inFlight--;
        this.pending.delete(work);
      });
    this.pending.add(work);
  }

  private async answerOf(model: ModelVersion, key: string): Promise<Prediction> {
    const hit = await this.tiers.lookup(model, key);
    if (hit) return hit.prediction;
    const { queued, result } = this.live.submit(model, key);
    await queued;
    const prediction = await result;
    this.tiers.remember(model, key, prediction);
    return prediction;
  }

  /** Waits for the comparisons under way (bounded by the live wait). */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.pending]);
  }
}
