/** How `predcache experiment …` shows experiments and their report as text. */
import type { Experiment } from "../src/experiment/experiment.ts";
import type { ExperimentReport, Histogram } from "../src/experiment/report.ts";

const BAR_WIDTH = 20;

/** Up to 4 significant digits, without trailing zeros; "-" for nothing yet. */
export function num(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return "-";
  return String(Number(value.toPrecision(4)));
}

export function percent(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return "-";
  const text = (value * 100).toFixed(1);
  // Not all (or none) unless it is: 46,616 of 46,634 is not "100.0%".
  if (text === "100.0" && value < 1) return ">99.9%";
  if (text === "0.0" && value > 0) return "<0.1%";
  return `${text}%`;
}

/** An arm's lookups, with how many failed or were refused (input its version does not take). */
function lookupsText(a: { lookups: number; failed: number; refused?: number }): string {
  const parts = [
    a.failed > 0 ? `${a.failed} failed` : "",
    a.refused ? `${a.refused} refused` : "",
  ].filter(Boolean);
  return parts.length > 0 ? `${a.lookups} (${parts.join(", ")})` : String(a.lookups);
}

/** A share of clients as the operator typed it: 0.3 → 30%. */
function share(value: number): string {
  return `${Number((value * 100).toPrecision(4))}%`;
}

export function splitText(x: Pick<Experiment, "fraction" | "shadowRate">): string {
  return `candidate for ${share(x.fraction)} of clients, shadow ${share(x.shadowRate)}`;
}

export function startedText(x: Experiment): string {
  return `experiment ${x.id} started on ${x.model}: control ${x.control}, candidate ${x.candidate}; ${splitText(x)}`;
}

export function listRow(x: Experiment): Record<string, string> {
  return {
    id: x.id,
    state: x.state,
    control: x.control,
    candidate: x.candidate,
    split: share(x.fraction),
    shadow: share(x.shadowRate),
    started: x.startedAt,
    stopped: x.stoppedAt ?? "",
  };
}

export const LIST_COLUMNS = [
  "id",
  "state",
  "control",
  "candidate",
  "split",
  "shadow",
  "started",
  "stopped",
];

function columns(rows: string[][]): string[] {
  const widths = (rows[0] ?? []).map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) =>
    r
      .map((cell, i) => cell.padEnd(widths[i] as number))
      .join("  ")
      .trimEnd(),
  );
}

function bar(part: number, whole: number): string {
  const filled = whole > 0 ? Math.round((part / whole) * BAR_WIDTH) : 0;
  return `${"█".repeat(filled)}${"░".repeat(BAR_WIDTH - filled)}`;
}

/** Bin labels: "≤ edge", the open last bin "> last edge"; `zero` names a 0 edge (|Δ| = 0). */
function binLabels(h: Histogram, zero?: string): string[] {
  const last = h.bins.findLast((b) => b.upTo !== null)?.upTo ?? 0;
  return h.bins.map((b) =>
    b.upTo === null ? `> ${num(last)}` : b.upTo === 0 && zero ? zero : `≤ ${num(b.upTo)}`,
  );
}

/** The span of bins holding any count in any histogram: empty bins at the ends are noise. */
function span(histograms: Histogram[]): [number, number] | undefined {
  const used = (i: number) => histograms.some((h) => (h.bins[i]?.count ?? 0) > 0);
  const n = histograms[0]?.bins.length ?? 0;
  let first = 0;
  while (first < n && !used(first)) first++;
  if (first === n) return undefined;
  let last = n - 1;
  while (!used(last)) last--;
  return [first, last];
}

/** Histograms with the same bins side by side: a bar and the share of its total per bin. */
function histogramLines(named: { name: string; histogram: Histogram }[], zero?: string): string[] {
  const histograms = named.map((n) => n.histogram);
  const range = span(histograms);
  if (!range) return ["  (nothing counted yet)"];
  const labels = binLabels(histograms[0] as Histogram, zero);
  const totals = histograms.map((h) => h.bins.reduce((n, b) => n + b.count, 0));
  const rows = [["", ...named.map((n) => n.name), ""]];
  for (let i = range[0]; i <= range[1]; i++)
    rows.push([
      labels[i] as string,
      ...histograms.map((h, j) => {
        const count = h.bins[i]?.count ?? 0;
        const total = totals[j] as number;
        return `${bar(count, total)} ${percent(total > 0 ? count / total : null).padStart(6)} ${count}`;
      }),
    ]);
  return columns(rows).map((line) => `  ${line}`);
}

/** Shadow samples not compared, per arm, when there were any. */
function notComparedLines(r: ExperimentReport): string[] {
  return (["control", "candidate"] as const).flatMap((arm) => {
    const { dropped, refused, failed } = r.arms[arm].agreement.notCompared;
    if (dropped + refused + failed === 0) return [];
    const parts = [
      refused ? `${refused} refused by the other version` : "",
      failed ? `${failed} failed` : "",
      dropped ? `${dropped} dropped (too many pending)` : "",
    ].filter(Boolean);
    return [`not compared on ${arm} lookups: ${parts.join(", ")}`];
  });
}

export function reportText(r: ExperimentReport): string {
  const { control, candidate } = r.arms;
  const output = control.main.output;
  const lines = [
    `experiment ${r.id}  ${r.model}  ${r.state}  ${splitText(r)}`,
    `started ${r.startedAt}${r.stoppedAt ? `, stopped ${r.stoppedAt}` : ""}`,
    "",
    ...columns([
      ["arm", "version", "lookups", "hit ratio", `mean ${output}`, "stddev", "agreement"],
      ...(["control", "candidate"] as const).map((arm) => {
        const a = r.arms[arm];
        const agreement =
          a.agreement.compared > 0
            ? `${percent(a.agreement.rate)} of ${a.agreement.compared} compared`
            : "- (none compared)";
        return [
          arm,
          a.version,
          lookupsText(a),
          percent(a.hitRatio),
          num(a.main.mean),
          num(a.main.stddev),
          agreement,
        ];
      }),
    ]),
    `agreement: ${r.agreementRule}`,
    ...(control.anonymous
      ? [
          `${control.anonymous} control lookups had no client id (all served control: not a random cohort)`,
        ]
      : []),
    ...notComparedLines(r),
    "",
    `${output}, share of each arm's answers:`,
    ...histogramLines([
      { name: "control", histogram: control.main },
      { name: "candidate", histogram: candidate.main },
    ]),
    "",
  ];
  const t = r.tables;
  const tableOf = (x: { generation: string; entries: number } | null, version: string) =>
    x ? `${x.generation} (${x.entries} entries)` : `none for ${version}`;
  lines.push(
    `tables: control ${tableOf(t.control, control.version)}, candidate ${tableOf(t.candidate, candidate.version)}`,
  );
  if (!t.control || !t.candidate) {
    lines.push("  precompute both versions to compare their tables");
    return lines.join("\n");
  }
  const ofCommon = (n: number) => (t.common > 0 ? ` (${percent(n / t.common)})` : "");
  lines.push(
    `common ${t.common}  changed ${t.changed}${ofCommon(t.changed)}  decisions flipped ${t.disagreeing}${ofCommon(t.disagreeing)}  mean |change| ${num(t.meanAbsChange)}  max |change| ${num(t.maxAbsChange)}`,
    `|change| of ${output} over the common inputs:`,
    ...histogramLines([{ name: "inputs", histogram: t.changes }], "= 0"),
  );
  return lines.join("\n");
}
