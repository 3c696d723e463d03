/**
 * An experiment's report: per arm, what it answered (lookups, hit ratio, the main
 * output's mean, spread and histogram) and how often it agreed with the other arm's
 * version on sampled lookups; and, for the inputs both versions' newest tables cover,
 * how many predictions changed and by how much.
 */
import type { Keys } from "../cache/keys.ts";
import { LookupTable } from "../client/lookup-table.ts";
import { mainValueOf } from "../model/decoding.ts";
import { type Manifest, mainOutputOf } from "../model/manifest.ts";
import type { ModelRegistry } from "../model/registry.ts";
import type { Redis } from "../redis/connection.ts";
import type { TableStore } from "../table/store.ts";
import { AGREEMENT_RULE, agreementOf } from "./agreement.ts";
import { ARMS, type Arm, type Experiment, versionOf } from "./experiment.ts";
import { type ArmCounts, binEdges, binOf, countsFromHash } from "./tally.ts";

export interface ReportDeps {
  redis: Redis;
  keys: Keys;
  registry: ModelRegistry;
  tables: TableStore;
}

export interface Histogram {
  /** Upper edge of each bin (null: the open last bin) and how many fell in it. */
  bins: { upTo: number | null; count: number }[];
}

export interface ArmReport {
  version: string;
  /** Lookups of the arm, failed ones included. */
  lookups: number;
  /** Lookups answered with an error (the live model failed, Redis away). */
  failed: number;
  /** Lookups refused (422): input the arm's version does not take. */
  refused: number;
  /** Lookups with no client id nor API key (control only): they are not a random cohort. */
  anonymous: number;
  hits: number;
  hitRatio: number | null;
  main: { output: string; count: number; mean: number | null; stddev: number | null } & Histogram;
  agreement: {
    compared: number;
    agreed: number;
    rate: number | null;
    meanAbsDiff: number | null;
    /** Sampled and not compared: dropped (too many pending), refused by the other version, failed. */
    notCompared: { dropped: number; refused: number; failed: number };
  };
}

export interface TableComparison {
  control: { generation: string; entries: number } | null;
  candidate: { generation: string; entries: number } | null;
  /** Inputs both tables cover. */
  common: number;
  /** Of those, predictions whose main output differs. */
  changed: number;
  /** Of those, predictions that no longer agree (the agreement rule). */
  disagreeing: number;
  meanAbsChange: number | null;
  maxAbsChange: number | null;
  /** |change| of the main output over the common inputs. */
  changes: Histogram;
}

export interface ExperimentReport extends Experiment {
  agreementRule: string;
  arms: Record<Arm, ArmReport>;
  tables: TableComparison;
}

const CHANGE_EDGES = [0, 0.001, 0.01, 0.05, 0.1, 0.2, 0.5, 1];

function histogram(edges: readonly number[], counts: readonly number[]): Histogram {
  return {
    bins: counts.map((count, i) => ({
      upTo: i < edges.length ? (edges[i] as number) : null,
      count,
    })),
  };
}

function ratio(part: number, whole: number): number | null {
  return whole > 0 ? part / whole : null;
}

function armReport(version: string, manifest: Manifest, c: ArmCounts): ArmReport {
  const mean = ratio(c.sum, c.valued);
  // E[x²] − mean² leaves rounding noise (~1e-9) when every value is equal: that is 0.
  const raw = mean === null ? null : c.sumSquares / c.valued - mean * mean;
  const variance =
    raw === null || mean === null ? null : raw <= 1e-12 * (1 + mean * mean) ? 0 : raw;
  return {
    version,
    lookups: c.lookups,
    failed: c.failed,
    refused: c.refused,
    anonymous: c.anonymous,
    hits: c.hits,
    hitRatio: ratio(c.hits, c.lookups),
    main: {
      output: mainOutputOf(manifest).name,
      count: c.valued,
      mean,
      stddev: variance === null ? null : Math.sqrt(variance),
      ...histogram(binEdges(manifest), c.bins),
    },
    agreement: {
      compared: c.compared,
      agreed: c.agreed,
      rate: ratio(c.agreed, c.compared),
      meanAbsDiff: ratio(c.absDiffSum, c.compared),
      notCompared: {
        dropped: c.shadowDropped,
        refused: c.shadowRefused,
        failed: c.shadowFailed,
      },
    },
  };
}

async function newestTable(
  tables: TableStore,
  model: string,
  version: string,
): Promise<{ generation: string; table: LookupTable } | undefined> {
  const info = (await tables.list(model)).find((t) => t.modelVersion === version);
  if (!info) return undefined;
  const table = await LookupTable.open(await tables.read(model, info.generation));
  return { generation: info.generation, table };
}

/** Compares two versions' newest tables on the inputs both cover (matched by key hash). */
export async function compareTables(
  tables: TableStore,
  model: string,
  manifest: Manifest,
  control: string,
  candidate: string,
): Promise<TableComparison> {
  const [a, b] = await Promise.all([
    newestTable(tables, model, control),
    newestTable(tables, model, candidate),
  ]);
  const counts = new Array<number>(CHANGE_EDGES.length + 1).fill(0);
  const result: TableComparison = {
    control: a ? { generation: a.generation, entries: a.table.size } : null,
    candidate: b ? { generation: b.generation, entries: b.table.size } : null,
    common: 0,
    changed: 0,
    disagreeing: 0,
    meanAbsChange: null,
    maxAbsChange: null,
    changes: histogram(CHANGE_EDGES, counts),
  };
  if (!a || !b) return result;
  let sum = 0;
  let max = 0;
  for (const { hi, lo, prediction } of a.table.entries()) {
    const theirs = b.table.getByHash(hi, lo);
    if (!theirs) continue;
    result.common++;
    const x = mainValueOf(manifest, prediction) ?? Number.NaN;
    const y = mainValueOf(manifest, theirs) ?? Number.NaN;
    const change = Math.abs(x - y);
    if (change !== 0) result.changed++;
    if (!agreementOf(manifest, prediction, theirs).agreed) result.disagreeing++;
    sum += change;
    max = Math.max(max, change);
    const bin = binOf(CHANGE_EDGES, change);
    counts[bin] = (counts[bin] ?? 0) + 1;
  }
  result.meanAbsChange = ratio(sum, result.common);
  result.maxAbsChange = result.common > 0 ? max : null;
  result.changes = histogram(CHANGE_EDGES, counts);
  return result;
}

export async function experimentReport(
  deps: ReportDeps,
  experiment: Experiment,
): Promise<ExperimentReport> {
  const { model } = experiment;
  const manifestOf = (version: string) =>
    (deps.registry.get(model, version) ?? deps.registry.defaultVersion(model))?.manifest;
  const arms = {} as Record<Arm, ArmReport>;
  for (const arm of ARMS) {
    const version = versionOf(experiment, arm);
    const manifest = manifestOf(version);
    if (!manifest) throw new Error(`model ${model} is not loaded`);
    const hash = await deps.redis.hgetall(deps.keys.experimentArm(model, experiment.id, arm));
    arms[arm] = armReport(version, manifest, countsFromHash(hash, binEdges(manifest).length + 1));
  }
  const manifest = manifestOf(experiment.control) as Manifest;
  return {
    ...experiment,
    agreementRule: AGREEMENT_RULE,
    arms,
    tables: await compareTables(
      deps.tables,
      model,
      manifest,
      experiment.control,
      experiment.candidate,
    ),
  };
}
