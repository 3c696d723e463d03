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
import type { HotCounterSeries } from "../observability/hot-series.ts";
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

/** A sampled lookup to compare with the other version's answer. */
interface Comparison {
  experiment: Experiment;
  arm: Arm;
  other: ModelVersion;
  /** The other version's key for the lookup's input. */
  key: string;
  served: Prediction;
}

function compareLater(comparer: ShadowComparer, comparison: Comparison): void {
  comparer.run(comparison);
}

export class ShadowComparer {
  private inFlight = 0;
  /** Who waits for the comparisons under way to end (drain). */
  private drained: (() => void)[] = [];
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
    if (this.inFlight >= this.options.maxInFlight) {
      this.counts.dropped++;
      this.count(experiment, other, "dropped");
      this.tally.missed(experiment, arm, other.manifest, "dropped");
      return;
    }
    const key = otherKey();
    if (key === undefined) {
      this.counts.refused++;
      this.count(experiment, other, "refused");
      this.tally.missed(experiment, arm, other.manifest, "refused");
      return;
    }
    this.inFlight++;
    // After the reply has gone. Most often the other version's answer is in L1: compared
    // then, without a promise chain. (Methods, not closures made per comparison: tsx
    // names each closure it makes, a defineProperty per call.)
    setImmediate(compareLater, this, { experiment, arm, other, key, served });
  }

  /** A sampled comparison, after the reply has gone. */
  run(comparison: Comparison): void {
    try {
      const local = this.tiers.withoutRedis(comparison.other, comparison.key);
      if (local) {
        this.compared(comparison, local.prediction);
        this.ended();
        return;
      }
    } catch (error) {
      // The lookup or the comparison itself: counted as failed, never left under way.
      this.failed(comparison, error as Error);
      this.ended();
      return;
    }
    this.answerOf(comparison.other, comparison.key)
      .then((theirs) => this.compared(comparison, theirs))
      .catch((error: Error) => this.failed(comparison, error))
      .finally(() => this.ended());
  }

  private compared({ experiment, arm, other, served }: Comparison, theirs: Prediction): void {
    const { agreed, absDiff } = agreementOf(other.manifest, served, theirs);
    this.tally.compare(experiment, arm, other.manifest, agreed, absDiff);
    this.counts.compared++;
    this.count(experiment, other, agreed ? "agreed" : "disagreed");
  }

  private failed({ experiment, arm, other, key }: Comparison, error: Error): void {
    this.counts.failed++;
    this.count(experiment, other, "failed");
    this.tally.missed(experiment, arm, other.manifest, "failed");
    this.log.debug({ err: error.message, model: other.name, key }, "shadow comparison failed");
  }

  /** Counts an outcome in the metrics while its experiment runs here (its series go with the stop). */
  private count(experiment: Experiment, other: ModelVersion, outcome: ShadowOutcome): void {
    if (!(this.options.isRunning?.(experiment) ?? true)) return;
    let series = this.series.get(experiment);
    if (!series) {
      series = new Map();
      this.series.set(experiment, series);
    }
    let counter = series.get(outcome);
    if (!counter) {
      counter = processMetrics().shadowComparisons.labels(other.name, experiment.id, outcome);
      series.set(outcome, counter);
    }
    counter.inc();
  }

  /** The counters of each running experiment (a refreshed experiment is a new object). */
  private readonly series = new WeakMap<Experiment, Map<ShadowOutcome, HotCounterSeries>>();

  /** One comparison less under way. */
  private ended(): void {
    this.inFlight--;
    if (this.inFlight > 0 || this.drained.length === 0) return;
    const waiting = this.drained;
    this.drained = [];
    for (const done of waiting) done();
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
    if (this.inFlight === 0) return;
    await new Promise<void>((done) => this.drained.push(done));
  }
}
