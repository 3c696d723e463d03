/**
 * What this API process answered, by model and source, and a window of the most recent
 * lookups (for the coverage estimate: which share of recent traffic the newest table
 * would have answered); each answer also goes to the Prometheus metrics. In-process and
 * cheap: counter bumps and a ring-buffer write.
 */
import type { Prediction } from "../model/decoding.ts";
import type { ModelVersion } from "../model/registry.ts";
import { type Metrics, processMetrics } from "../observability/metrics.ts";

export type Outcome = "memory" | "table" | "redis" | "live" | "pending" | "failed";

export interface ModelCounts {
  lookups: number;
  bySource: Record<Outcome, number>;
  /** Lookups by the model version that answered (a promote splits them). */
  byVersion: Record<string, number>;
}

/** Recent lookups kept per model for coverage. */
const WINDOW = 10_000;
/** Distinct missed inputs counted per model; past it, those missed once are forgotten. */
const MISSES_MAX = 10_000;

class Recent {
  readonly keys: string[] = [];
  readonly versions: string[] = [];
  private next = 0;

  add(version: string, key: string): void {
    this.keys[this.next] = key;
    this.versions[this.next] = version;
    this.next = (this.next + 1) % WINDOW;
  }
}

export interface AnswerDetail {
  /** Time the lookup took (single lookups). */
  seconds?: number;
  prediction?: Prediction;
  outOfDistribution?: boolean;
}

export class ServingStats {
  private readonly counts = new Map<string, ModelCounts>();
  private readonly recent = new Map<string, Recent>();
  private readonly misses = new Map<string, Map<string, number>>();
  readonly since = new Date();

  constructor(private readonly metrics: Metrics = processMetrics()) {}

  record(model: ModelVersion, key: string, outcome: Outcome, detail: AnswerDetail = {}): void {
    const series = this.metrics.answerSeries(model, outcome);
    series.lookups.inc();
    if (detail.seconds !== undefined) series.seconds.observe(detail.seconds);
    if (outcome === "live" || outcome === "pending") series.misses.inc();
    if (outcome === "pending") series.pending.inc();
    if (detail.prediction)
      this.metrics.observePrediction(series, detail.prediction, detail.outOfDistribution ?? false);
    let counts = this.counts.get(model.name);
    if (!counts) {
      counts = {
        lookups: 0,
        bySource: { memory: 0, table: 0, redis: 0, live: 0, pending: 0, failed: 0 },
        byVersion: {},
      };
      this.counts.set(model.name, counts);
    }
    counts.lookups++;
    counts.bySource[outcome]++;
    counts.byVersion[model.version] = (counts.byVersion[model.version] ?? 0) + 1;
    let recent = this.recent.get(model.name);
    if (!recent) {
      recent = new Recent();
      this.recent.set(model.name, recent);
    }
    recent.add(model.version, key);
    if (outcome === "live" || outcome === "pending") this.countMiss(model.name, key);
  }

  private countMiss(model: string, key: string): void {
    let counts = this.misses.get(model);
    if (!counts) {
      counts = new Map();
      this.misses.set(model, counts);
    }
    counts.set(key, (counts.get(key) ?? 0) + 1);
    if (counts.size > MISSES_MAX) {
      for (const [k, n] of counts) if (n === 1) counts.delete(k);
    }
  }

  /** The inputs this process missed most (answered live or 202), most missed first. */
  topMissed(model: string, k = 10): { key: string; count: number }[] {
    const counts = this.misses.get(model);
    if (!counts) return [];
    return [...counts]
      .sort((a, b) => b[1] - a[1])
      .slice(0, k)
      .map(([key, count]) => ({ key, count }));
  }

  models(): string[] {
    return [...this.counts.keys()].sort();
  }

  countsOf(model: string): ModelCounts | undefined {
    return this.counts.get(model);
  }

  /** The recent lookups' keys asked of `version` (up to the window size). */
  recentKeys(model: string, version: string): string[] {
    const recent = this.recent.get(model);
    if (!recent) return [];
    return recent.keys.filter((_, i) => recent.versions[i] === version);
  }
}
