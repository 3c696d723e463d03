/**
 * What each arm of an experiment answered: lookups (failed ones too), hits, the main
 * output's sum, sum of squares and histogram, and the comparisons with the other arm's
 * version (made, or not made: dropped, refused by the other version, failed). Counted in
 * process and added to Redis about once a second (one HINCRBY batch per arm, all in the
 * model's slot), so every API process contributes and the request path never waits.
 */
import type { Keys } from "../cache/keys.ts";
import type { Manifest } from "../model/manifest.ts";
import { mainOutputOf } from "../model/manifest.ts";
import type { Redis } from "../redis/connection.ts";
import type { Arm, Experiment } from "./experiment.ts";

const PROBABILITY_EDGES: readonly number[] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1];
const VALUE_EDGES: readonly number[] = [0, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600];

/** Upper bin edges of the main output's histogram (the last bin is open). */
export function binEdges(manifest: Manifest): readonly number[] {
  const kind = mainOutputOf(manifest).kind;
  return kind === "probability" || kind === "classes" ? PROBABILITY_EDGES : VALUE_EDGES;
}

export function binOf(edges: readonly number[], value: number): number {
  const i = edges.findIndex((edge) => value <= edge);
  return i === -1 ? edges.length : i;
}

/** Counters of one arm; also the shape read back from Redis for the report. */
export interface ArmCounts {
  lookups: number;
  /** Lookups answered with an error (5xx: the live model failed, Redis away). */
  failed: number;
  /** Lookups refused as input the arm's version does not take (422). */
  refused: number;
  /** Lookups with no client id (nor API key): all in control, counted apart too. */
  anonymous: number;
  hits: number;
  /** Answers with a main value (the mean's denominator). */
  valued: number;
  sum: number;
  sumSquares: number;
  bins: number[];
  compared: number;
  agreed: number;
  absDiffSum: number;
  /** Shadow comparisons sampled and not made. */
  shadowDropped: number;
  shadowRefused: number;
  shadowFailed: number;
}

/** A sampled shadow comparison that was not made. */
export type ShadowMissed = "dropped" | "refused" | "failed";

export function emptyCounts(binCount: number): ArmCounts {
  return {
    lookups: 0,
    failed: 0,
    refused: 0,
    anonymous: 0,
    hits: 0,
    valued: 0,
    sum: 0,
    sumSquares: 0,
    bins: new Array(binCount).fill(0),
    compared: 0,
    agreed: 0,
    absDiffSum: 0,
    shadowDropped: 0,
    shadowRefused: 0,
    shadowFailed: 0,
  };
}

const SCALARS = [
  "lookups",
  "failed",
  "refused",
  "anonymous",
  "hits",
  "valued",
  "sum",
  "sumSquares",
  "compared",
  "agreed",
  "absDiffSum",
  "shadowDropped",
  "shadowRefused",
  "shadowFailed",
] as const;

/**
 * Sums of values, not counts: always added as floats. Chosen by the value instead, a sum
 * that came out whole went as HINCRBY onto a field holding a float, which Redis refuses
 * inside the transaction while applying the counts beside it.
 */
const FLOAT_FIELDS: ReadonlySet<(typeof SCALARS)[number]> = new Set([
  "sum",
  "sumSquares",
  "absDiffSum",
]);

export function countsFromHash(hash: Record<string, string>, binCount: number): ArmCounts {
  const counts = emptyCounts(binCount);
  for (const field of SCALARS) counts[field] = Number(hash[field] ?? 0);
  for (let i = 0; i < binCount; i++) counts.bins[i] = Number(hash[`bin${i}`] ?? 0);
  return counts;
}

interface Pending {
  model: string;
  id: string;
  arm: Arm;
  counts: ArmCounts;
}

export class ArmTally {
  private pending = new Map<string, Pending>();
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> = Promise.resolve();

  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    private readonly flushMs = 1_000,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.flush(), this.flushMs);
    this.timer.unref();
  }

  /**
   * The counts each arm of an experiment (as running here: a refresh makes a new object)
   * adds to now, found without making their id: every experiment lookup adds to one.
   */
  private recent = new WeakMap<Experiment, Partial<Record<Arm, ArmCounts>>>();

  private countsOf(experiment: Experiment, arm: Arm, manifest: Manifest): ArmCounts {
    let arms = this.recent.get(experiment);
    const known = arms?.[arm];
    if (known) return known;
    const counts = this.pendingCountsOf(experiment, arm, manifest);
    if (!arms) {
      arms = {};
      this.recent.set(experiment, arms);
    }
    arms[arm] = counts;
    return counts;
  }

  private pendingCountsOf(experiment: Experiment, arm: Arm, manifest: Manifest): ArmCounts {
    const id = `${experiment.model}|${experiment.id}|${arm}`;
    let entry = this.pending.get(id);
    if (!entry) {
      entry = {
        model: experiment.model,
        id: experiment.id,
        arm,
        counts: emptyCounts(binEdges(manifest).length + 1),
      };
      this.pending.set(id, entry);
    }
    return entry.counts;
  }

  /**
   * One lookup of the arm; `value` is the main output (undefined: not answered yet,
   * `failed`: answered with an error, `refused`: input the version does not take).
   */
  answer(
    experiment: Experiment,
    arm: Arm,
    manifest: Manifest,
    hit: boolean,
    value: number | undefined,
    how: { failed?: boolean; refused?: boolean; anonymous?: boolean } = {},
  ): void {
    const counts = this.countsOf(experiment, arm, manifest);
    counts.lookups++;
    if (how.failed) counts.failed++;
    if (how.refused) counts.refused++;
    if (how.anonymous) counts.anonymous++;
    if (hit) counts.hits++;
    if (value === undefined) return;
    counts.valued++;
    counts.sum += value;
    counts.sumSquares += value * value;
    const bin = binOf(binEdges(manifest), value);
    counts.bins[bin] = (counts.bins[bin] ?? 0) + 1;
  }

  /** One shadow comparison made on the arm's traffic. */
  compare(experiment: Experiment, arm: Arm, manifest: Manifest, agreed: boolean, absDiff: number) {
    const counts = this.countsOf(experiment, arm, manifest);
    counts.compared++;
    if (agreed) counts.agreed++;
    counts.absDiffSum += absDiff;
  }

  /** One shadow comparison sampled on the arm's traffic and not made. */
  missed(experiment: Experiment, arm: Arm, manifest: Manifest, why: ShadowMissed): void {
    const counts = this.countsOf(experiment, arm, manifest);
    if (why === "dropped") counts.shadowDropped++;
    else if (why === "refused") counts.shadowRefused++;
    else counts.shadowFailed++;
  }

  /** Adds what was counted since the last flush to Redis; kept for the next try on failure. */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(() => this.write());
    return this.flushing;
  }

  private async write(): Promise<void> {
    if (this.pending.size === 0) return;
    const batch = this.pending;
    this.pending = new Map();
    this.recent = new WeakMap();
    await Promise.all(
      [...batch].map(async ([id, entry]) => {
        try {
          await this.writeOne(entry);
        } catch {
          // Redis away: fold the arm's counts back in, so they arrive once it returns.
          const current = this.pending.get(id);
          if (!current) this.pending.set(id, entry);
          else merge(current.counts, entry.counts);
        }
      }),
    );
  }

  /** One arm's increments as one transaction: they land all together or not at all. */
  private async writeOne({ model, id, arm, counts }: Pending): Promise<void> {
    const key = this.keys.experimentArm(model, id, arm);
    const multi = this.redis.multi();
    for (const field of SCALARS) {
      const n = counts[field];
      if (n === 0) continue;
      if (FLOAT_FIELDS.has(field)) multi.hincrbyfloat(key, field, n);
      else multi.hincrby(key, field, n);
    }
    counts.bins.forEach((n, i) => {
      if (n > 0) multi.hincrby(key, `bin${i}`, n);
    });
    const replies = await multi.exec();
    if (!replies) throw new Error("transaction aborted");
    for (const [error] of replies) if (error) throw error;
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.flush();
  }
}

function merge(into: ArmCounts, from: ArmCounts): void {
  for (const field of SCALARS) into[field] += from[field];
  from.bins.forEach((n, i) => {
    into.bins[i] = (into.bins[i] ?? 0) + n;
  });
}
