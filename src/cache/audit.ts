/**
 * The cache audit: a sample of hits served from Redis or the resident table is
 * recomputed by the live model, off the request path, and compared with what was served.
 * A mismatch (a corrupted entry, a skewed encoding) is counted and logged with its key,
 * so it is caught in production rather than by users. Audits only observe: the live
 * worker does not store their results, so a bad entry stays until someone acts on it.
 *
 * The model of a version is deterministic, so an entry whose audit agreed, still holding
 * the value that agreed, would only agree again: it is not recomputed again within the
 * hour (AUDIT_VERIFIED_MS; what runs the model may change meanwhile). Without that
 * the audit spent its samples (and the live model's time) on the hottest keys over and
 * over, since those are most of the hits; measured on bench:serving's one hot key read
 * from Redis, re-auditing it cost ~10% of the API's throughput (BullMQ jobs, the worker's
 * run, their Redis scripts).
 */
import { LRUCache } from "lru-cache";
import type { LiveClient } from "../live/client.ts";
import type { Logger } from "../log.ts";
import { type OutputValue, type Prediction, samePrediction } from "../model/decoding.ts";
import type { Manifest, OutputDefinition } from "../model/manifest.ts";
import type { ModelVersion } from "../model/registry.ts";
import { processMetrics } from "../observability/metrics.ts";
import { closeWithin } from "../redis/connection.ts";
import { MemoryCache } from "./memory.ts";
import type { Hit } from "./tiers.ts";

/** Audits pending at once per process: past it sampled hits are skipped, not queued. */
export const AUDIT_MAX_IN_FLIGHT = 32;

/** Entries remembered as verified (the least recently sampled go first). */
export const AUDIT_VERIFIED_MAX = 10_000;

/**
 * How long an entry stays verified: the model of a version does not change, but what runs
 * it may (a new worker image, another onnxruntime), so hot entries are checked again hourly.
 */
export const AUDIT_VERIFIED_MS = 3_600_000;

/** How long close() waits for pending audits. */
const CLOSE_WAIT_MS = 2_000;

export interface CacheAuditOptions {
  /** Share of redis and table hits audited (0: none). */
  rate: number;
  maxInFlight: number;
  /** How many verified entries are remembered (default AUDIT_VERIFIED_MAX). */
  verifiedMax?: number;
  /** For how long (ms; default AUDIT_VERIFIED_MS). */
  verifiedMs?: number;
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
  /** By source and L1 id: the value whose audit agreed (a table's float32 is its own). */
  private readonly verified: LRUCache<string, Prediction>;

  constructor(
    private readonly live: LiveClient,
    private readonly log: Logger,
    private readonly options: CacheAuditOptions,
    private readonly random: () => number = Math.random,
  ) {
    this.verified = new LRUCache({
      max: options.verifiedMax ?? AUDIT_VERIFIED_MAX,
      ttl: options.verifiedMs ?? AUDIT_VERIFIED_MS,
    });
  }

  /** Maybe audits this hit; returns at once and never throws into the request. */
  consider(model: ModelVersion, key: string, hit: Hit): void {
    if (hit.source !== "redis" && hit.source !== "table") return;
    if (!(this.random() < this.options.rate)) return;
    const metrics = processMetrics();
    const { source, prediction: cached } = hit;
    const id = `${source}|${MemoryCache.id(model.name, model.version, key)}`;
    const agreed = this.verified.get(id);
    if (agreed && samePrediction(agreed, cached)) {
      metrics.auditSkipped.inc({ model: model.name, reason: "verified" });
      return;
    }
    if (this.pending.size >= this.options.maxInFlight) {
      metrics.auditSkipped.inc({ model: model.name, reason: "busy" });
      return;
    }
    const check = Promise.resolve()
      .then(() => this.live.recompute(model, key))
      .then(
        (recomputed) => {
          metrics.auditChecks.inc({ model: model.name, version: model.version, source });
          const outputs = differingOutputs(model.manifest, cached, recomputed);
          if (outputs.length === 0) {
            this.verified.set(id, cached);
            return;
          }
          this.verified.delete(id);
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
