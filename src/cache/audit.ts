/**
 * The cache audit: a sample of hits served from Redis or the resident table is
 * recomputed by the live model, off the request path, and compared with what was served.
 * A mismatch (a corrupted entry, a skewed encoding) is counted and logged with its key,
 * so it is caught in production rather than by users. Audits only observe: the live
 * worker does not store their results, so a bad entry stays until someone acts on it.
 */
import type { LiveClient } from "../live/client.ts";
import type { Logger } from "../log.ts";
import type { OutputValue, Prediction } from "../model/decoding.ts";
import type { Manifest, OutputDefinition } from "../model/manifest.ts";
import type { ModelVersion } from "../model/registry.ts";
import { processMetrics } from "../observability/metrics.ts";
import { closeWithin } from "../redis/connection.ts";
import type { Hit } from "./tiers.ts";

/** Audits pending at once per process: past it sampled hits are skipped, not queued. */
export const AUDIT_MAX_IN_FLIGHT = 32;

/** How long close() waits for pending audits. */
const CLOSE_WAIT_MS = 2_000;

export interface CacheAuditOptions {
  /** Share of redis and table hits audited (0: none). */
  rate: number;
  maxInFlight: number;
}

function closeEnough(a: unknown, b: unknown, unit: number): boolean {
  if (typeof a !== "number" || typeof b !== "number") return false;
  // Both sides are multiples of the unit (up to float32 storage in tables): 1.5 units
  // accepts a one-unit flip at a rounding boundary and nothing more.
  return Math.abs(a - b) <= 1.5 * unit;
}

function sameOutput(
  output: OutputDefinition,
  a: OutputValue | undefined,
  b: OutputValue | undefined,
) {
  const unit = 10 ** -output.digits;
  if (typeof a === "number" || typeof b === "number") return closeEnough(a, b, unit);
  if (!a || !b || a.label !== b.label) return false;
  const labels = Object.keys(b.probabilities);
  return (
    Object.keys(a.probabilities).length === labels.length &&
    labels.every((label) => closeEnough(a.probabilities[label], b.probabilities[label], unit))
  );
}

/**
 * The outputs on which a cached prediction disagrees with a recomputed one (empty: they
 * agree). Numbers may differ by one unit of the output's rounding, since a different
 * batch can move a value across a rounding boundary; class labels must be equal.
 */
export function differingOutputs(
  manifest: Pick<Manifest, "outputs">,
  cached: Prediction,
  recomputed: Prediction,
): string[] {
  return manifest.outputs
    .filter((o) => !sameOutput(o, cached[o.name], recomputed[o.name]))
    .map((o) => o.name);
}

export class CacheAudit {
  private readonly pending = new Set<Promise<void>>();

  constructor(
    private readonly live: LiveClient,
    private readonly log: Logger,
    private readonly options: CacheAuditOptions,
    private readonly random: () => number = Math.random,
  ) {}

  /** Maybe audits this hit; returns at once and never throws into the request. */
  consider(model: ModelVersion, key: string, hit: Hit): void {
    if (hit.source !== "redis" && hit.source !== "table") return;
    if (!(this.random() < this.options.rate)) return;
    const metrics = processMetrics();
    if (this.pending.size >= this.options.maxInFlight) {
      metrics.auditSkipped.inc({ model: model.name, reason: "busy" });
      return;
    }
    const { source, prediction: cached } = hit;
    const check = Promise.resolve()
      .then(() => this.live.recompute(model, key))
      .then(
        (recomputed) => {
          metrics.auditChecks.inc({ model: model.name, version: model.version, source });
          const outputs = differingOutputs(model.manifest, cached, recomputed);
          if (outputs.length === 0) return;
          metrics.auditMismatches.inc({ model: model.name, version: model.version, source });
          this.log.warn(
            {
              model: model.name,
              version: model.version,
              source,
              key,
              outputs,
              cached,
              recomputed,
            },
            "cache audit mismatch",
          );
        },
        (error: Error) => {
          metrics.auditSkipped.inc({ model: model.name, reason: "failed" });
          this.log.debug({ model: model.name, err: error.message }, "cache audit not run");
        },
      )
      .catch(() => {})
      .finally(() => this.pending.delete(check));
    this.pending.add(check);
  }

  /** Waits for pending audits, at most CLOSE_WAIT_MS. */
  async close(): Promise<void> {
    await closeWithin(Promise.allSettled([...this.pending]), CLOSE_WAIT_MS);
  }
}
