/**
 * `npx predcache <command>`: the operator's admin script, over the admin API.
 * Server and token from --server/--token or PREDCACHE_SERVER/PREDCACHE_TOKEN.
 * Exit codes: 0 ok, 1 a failed or cancelled run (or a server failure), 2 usage or a
 * refused request, 3 server unreachable or unavailable for now (503), or token refused.
 */
import { rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Command, CommanderError, Option } from "commander";
import { LookupTable } from "../src/client/lookup-table.ts";
import type { Experiment } from "../src/experiment/experiment.ts";
import type { ExperimentReport } from "../src/experiment/report.ts";
import { AdminClient, CliError } from "./admin-client.ts";
import {
  LIST_COLUMNS,
  listRow,
  percent,
  reportText,
  splitText,
  startedText,
} from "./experiment-view.ts";
import { seedInputs } from "./inputs/seed.ts";
import { ProgressView } from "./progress.ts";
import type { RunStatus } from "./runs.ts";

const ENDED = new Set(["completed", "failed", "cancelled"]);
const INLINE_MAX = 100_000;
/** How long --watch keeps asking through 503s before it gives up (ms). */
const WATCH_UNAVAILABLE_MS = 60_000;

interface Globals {
  server: string;
  token?: string;
  apiKey?: string;
  json?: boolean;
}

const program = new Command("predcache")
  .description(
    "Operate a predcache service: precompute runs, versions, experiments, tables, stats.",
  )
  .addOption(
    new Option("--server <url>", "the predcache API")
      .env("PREDCACHE_SERVER")
      .default("http://127.0.0.1:8787"),
  )
  .addOption(
    new Option("--token <token>", "admin token (id:secret's secret)").env("PREDCACHE_TOKEN"),
  )
  .addOption(
    new Option(
      "--api-key <key>",
      "read-API key, for tables and download when the server has PREDCACHE_API_KEYS",
    ).env("PREDCACHE_API_KEY"),
  )
  .option("--json", "print JSON instead of text")
  .addHelpText(
    "after",
    "\nExit codes: 0 ok; 1 a failed or cancelled run, a server or local failure; 2 usage or a\nrefused request; 3 server unreachable or unavailable for now (503), or token refused.",
  )
  .showHelpAfterError()
  .exitOverride()
  // Under --json a usage error is written as JSON below, not as commander's text.
  .configureOutput({
    writeErr: (text) => {
      if (!process.argv.includes("--json")) process.stderr.write(text);
    },
  });

// An empty argument ("" from an unset shell variable, say) is a usage error, not a request
// for an empty id or name.
program.hook("preAction", (_program, command) => {
  command.registeredArguments.forEach((argument, i) => {
    if (command.processedArgs[i] === "")
      throw new CliError(`<${argument.name()}> must not be empty`, 2);
  });
});

function globals(): Globals {
  return program.opts<Globals>();
}

function client(): AdminClient {
  const { server, token, apiKey } = globals();
  return new AdminClient({ server, token, apiKey });
}

function print(value: unknown, text: () => string): void {
  process.stdout.write(globals().json ? `${JSON.stringify(value, null, 2)}\n` : `${text()}\n`);
}

function table(rows: Record<string, unknown>[], columns: string[]): string {
  if (rows.length === 0) return "(none)";
  const cells = rows.map((r) => columns.map((c) => String(r[c] ?? "")));
  const widths = columns.map((c, i) =>
    Math.max(c.length, ...cells.map((row) => (row[i] as string).length)),
  );
  const line = (values: string[]) =>
    values
      .map((v, i) => v.padEnd(widths[i] as number))
      .join("  ")
      .trimEnd();
  return [line(columns), line(widths.map((w) => "-".repeat(w))), ...cells.map(line)].join("\n");
}

/**
 * --source seed:FILE | grid:JSON | traffic[:K]; a local seed file is uploaded inline, unless
 * --on-server says FILE is the server's (one too large to upload, in the server's folder).
 */
async function sourceOf(
  text: string,
  options: { top?: string; limit?: string; gridMax?: string; onServer?: boolean },
): Promise<unknown> {
  const colon = text.indexOf(":");
  const kind = colon < 0 ? text : text.slice(0, colon);
  const rest = colon < 0 ? "" : text.slice(colon + 1);
  // An option for another kind of source is refused, not silently ignored.
  if (options.limit && kind !== "seed") throw new CliError("--limit is for seed sources", 2);
  if (options.top && kind !== "traffic") throw new CliError("--top is for traffic sources", 2);
  if (options.gridMax && kind !== "grid") throw new CliError("--grid-max is for grid sources", 2);
  if (options.onServer && kind !== "seed") throw new CliError("--on-server is for seed sources", 2);
  if (options.top && rest)
    throw new CliError("give the traffic count once: traffic:K or --source traffic --top K", 2);
  const limit = options.limit ? positive(options.limit, "--limit") : undefined;
  if (kind === "seed") {
    if (!rest) throw new CliError("--source seed:<file>", 2);
    const local =
      !options.onServer &&
      (await stat(rest).then(
        (s) => s.isFile(),
        () => false,
      ));
    if (!local) return { kind: "seed", file: rest, ...(limit ? { limit } : {}) }; // a file on the server
    const inputs: unknown[] = [];
    try {
      for await (const row of seedInputs(rest, limit)) {
        inputs.push(row);
        if (inputs.length > INLINE_MAX)
          throw new CliError(
            `${rest} has more than ${INLINE_MAX} rows to upload: put it in the server's seeds, models or data folder and run again with --on-server, naming it as the server sees it`,
            2,
          );
      }
    } catch (error) {
      if (error instanceof CliError) throw error;
      // A file that cannot be parsed is a bad source (2), not a failed run (1).
      throw new CliError(`${rest} cannot be read: ${(error as Error).message}`, 2);
    }
    if (inputs.length === 0)
      throw new CliError(
        `${rest} has no rows (a CSV starts with a header row naming the features)`,
        2,
      );
    return { kind: "inline", inputs };
  }
  if (kind === "grid") {
    const maxSize = options.gridMax ? positive(options.gridMax, "--grid-max") : undefined;
    let axes: unknown;
    try {
      axes = JSON.parse(rest);
    } catch {
      throw new CliError(
        `grid axes must be JSON, e.g. grid:'{"origin":["SFO"],"destination":"all","hour":{"min":6,"max":22},"dayOfWeek":"all"}'`,
        2,
      );
    }
    return { kind: "grid", axes, ...(maxSize ? { maxSize } : {}) };
  }
  if (kind === "traffic") {
    const top = options.top ?? rest;
    if (!top) throw new CliError("--source traffic needs --top K (or traffic:K)", 2);
    return { kind: "traffic", top: positive(top, options.top ? "--top" : "traffic:K") };
  }
  throw new CliError(`unknown source "${kind}": seed:<file>, grid:<json> or traffic`, 2);
}

function positive(text: string, name: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) throw new CliError(`${name} must be a positive integer`, 2);
  return n;
}

/** Follows a run to its end; exit 1 unless it completed. */
async function watch(api: AdminClient, runId: string): Promise<void> {
  const view = new ProgressView(process.stderr);
  let status: RunStatus;
  // A 503 (Redis away a moment) is asked again: the run goes on meanwhile.
  let unavailableSince: number | undefined;
  for (;;) {
    try {
      status = await api.request<RunStatus>("GET", `/admin/v1/runs/${encodeURIComponent(runId)}`);
      unavailableSince = undefined;
    } catch (error) {
      // A 503 (Redis away) or a server not reachable for a moment (an API restart): the
      // run goes on meanwhile, so the watch rides it out.
      const unreachable = error instanceof CliError && error.exitCode === 3 && !error.status;
      if (!(error instanceof CliError && (error.retryable || unreachable))) throw error;
      unavailableSince ??= Date.now();
      if (Date.now() - unavailableSince > WATCH_UNAVAILABLE_MS) throw error;
      await new Promise((r) => setTimeout(r, 1_000));
      continue;
    }
    if (!globals().json) view.show(status);
    if (ENDED.has(status.state)) break;
    await new Promise((r) => setTimeout(r, 300));
  }
  view.end();
  print(
    status,
    () =>
      `run ${status.id} ${status.state}${status.error ? `: ${status.error}` : ""} (${status.written} written, ${status.skipped} already present${status.observedRefused ? `, ${status.observedRefused} observed inputs refused by this version` : ""}${status.table ? `, table ${status.table}` : ""}${status.promotedFrom === null ? "" : status.promotedFrom === status.version ? ", active already" : `, promoted over ${status.promotedFrom || "none"}`}${status.promoteSkipped ? `; ${status.promoteSkipped}` : ""})`,
  );
  if (status.state !== "completed") process.exitCode = 1;
}

program
  .command("precompute <model>")
  .description("start a precompute run")
  .requiredOption("--source <source>", "seed:<file> | grid:<json axes> | traffic[:K]")
  .option("--top <K>", "traffic: the K most asked inputs the version does not hold yet")
  .option("--limit <N>", "seed: only the first N rows")
  .option("--grid-max <N>", "grid: the most inputs it may have (default 1000000)")
  .option(
    "--on-server",
    "seed: the file is the server's (under its seeds, models or data folder), not uploaded",
  )
  .option("--version <id>", "target model version (default: the active one)")
  .option("--chunk-size <N>", "inputs per chunk job")
  .option("--promote", "make the target version active once every chunk succeeded")
  .option(
    "--warm <K>",
    "first precompute the old version's K most asked inputs (those the new one lacks)",
  )
  .option("--watch", "follow the run to its end (exit 1 unless it completes)")
  .action(async (model: string, o: Record<string, string | boolean | undefined>) => {
    const api = client();
    const body = {
      source: await sourceOf(o.source as string, {
        top: o.top as string,
        limit: o.limit as string,
        gridMax: o.gridMax as string,
        onServer: Boolean(o.onServer),
      }),
      ...(o.version ? { version: o.version } : {}),
      ...(o.chunkSize ? { chunkSize: positive(o.chunkSize as string, "--chunk-size") } : {}),
      ...(o.warm ? { warmFromTraffic: positive(o.warm as string, "--warm") } : {}),
      promote: Boolean(o.promote),
    };
    const started = await api
      .request<{ runId: string; version: string }>(
        "POST",
        `/admin/v1/models/${encodeURIComponent(model)}/precompute`,
        body,
      )
      .catch((error: unknown) => {
        // An upload larger than the server takes: say what to do instead.
        if (
          error instanceof CliError &&
          error.status === 413 &&
          o.source?.toString().startsWith("seed:")
        )
          throw new CliError(
            `${error.message}: put the file in the server's seeds, models or data folder and run again with --on-server`,
            error.exitCode,
            error.status,
            error.code,
          );
        throw error;
      });
    if (!o.watch || !globals().json)
      print(started, () => `run ${started.runId} started: ${model}@${started.version}`);
    if (o.watch) await watch(api, started.runId);
  });

program
  .command("runs")
  .description("list recent runs")
  .option("--limit <N>", "how many", "20")
  .action(async (o: { limit: string }) => {
    const { runs } = await client().request<{ runs: RunStatus[] }>(
      "GET",
      `/admin/v1/runs?limit=${positive(o.limit, "--limit")}`,
    );
    print(runs, () =>
      table(
        runs.map((r) => ({
          id: r.id,
          model: `${r.model}@${r.version}`,
          state: r.state,
          chunks: `${r.chunks.done}/${r.chunks.total ?? "?"}`,
          written: r.written,
          source: r.sourceDescription,
          created: new Date(r.createdAt).toISOString(),
        })),
        ["id", "model", "state", "chunks", "written", "source", "created"],
      ),
    );
  });

program
  .command("run <id>")
  .description("show a run (--watch: follow it to its end)")
  .option("--watch", "follow the run to its end (exit 1 unless it completes)")
  .action(async (id: string, o: { watch?: boolean }) => {
    const api = client();
    if (o.watch) return watch(api, id);
    const s = await api.request<RunStatus>("GET", `/admin/v1/runs/${encodeURIComponent(id)}`);
    print(s, () =>
      [
        `run ${s.id}  ${s.model}@${s.version}  ${s.state}`,
        `source  ${s.sourceDescription}`,
        `progress  chunks ${s.chunks.done}/${s.chunks.total ?? "?"}  rows ${s.rows}  written ${s.written}  skipped ${s.skipped}  ${Math.round(s.rate)}/s${ENDED.has(s.state) ? "" : `  eta ${s.etaSeconds ?? "?"}s`}`,
        ...(s.observedRefused ? [`refused  ${s.observedRefused} observed inputs`] : []),
        ...(s.error ? [`error  ${s.error}`] : []),
        ...(s.table ? [`table  ${s.table}`] : []),
      ].join("\n"),
    );
  });

program
  .command("cancel <id>")
  .description("cancel a run")
  .action(async (id: string) => {
    const s = await client().request<RunStatus>(
      "DELETE",
      `/admin/v1/runs/${encodeURIComponent(id)}`,
    );
    print(s, () => `run ${s.id} ${s.state}`);
  });

interface VersionRow {
  version: string;
  label: string | null;
  active: boolean;
  rollbackTarget: boolean;
  entries: number;
  loaded: boolean;
  tables: { generation: string }[];
}

program
  .command("versions <model>")
  .description("list a model's versions")
  .action(async (model: string) => {
    const { versions } = await client().request<{ versions: VersionRow[] }>(
      "GET",
      `/admin/v1/models/${encodeURIComponent(model)}/versions`,
    );
    print(versions, () =>
      table(
        versions.map((v) => ({
          version: v.version,
          label: v.label ?? "",
          state: v.active
            ? "active"
            : v.rollbackTarget
              ? "rollback target"
              : v.loaded
                ? ""
                : "not loaded",
          entries: v.entries,
          tables: v.tables.length,
          newest: v.tables[0]?.generation ?? "",
        })),
        ["version", "label", "state", "entries", "tables", "newest"],
      ),
    );
  });

program
  .command("promote <model> <version>")
  .description("make a version active")
  .action(async (model: string, version: string) => {
    const r = await client().request<{
      active: string;
      previous: string | null;
      warnings?: string[];
    }>(
      "POST",
      `/admin/v1/models/${encodeURIComponent(model)}/versions/${encodeURIComponent(version)}/promote`,
    );
    print(r, () => `${model}: ${r.previous ?? "(none)"} → ${r.active}`);
    for (const warning of r.warnings ?? []) process.stderr.write(`warning: ${warning}\n`);
  });

program
  .command("rollback <model>")
  .description("go back to the previous active version")
  .action(async (model: string) => {
    const r = await client().request<{
      active: string;
      previous: string | null;
      warnings?: string[];
    }>("POST", `/admin/v1/models/${encodeURIComponent(model)}/rollback`);
    print(r, () => `${model}: ${r.previous ?? "(none)"} → ${r.active} (rolled back)`);
    for (const warning of r.warnings ?? []) process.stderr.write(`warning: ${warning}\n`);
  });

program
  .command("reload <model>")
  .description("load version folders dropped into the server's models folder")
  .action(async (model: string) => {
    const r = await client().request<{
      added: { version: string }[];
      failed: { directory: string; error: string }[];
      versions: string[];
    }>("POST", `/admin/v1/models/${encodeURIComponent(model)}/reload`);
    print(r, () =>
      [
        `${model}: ${r.added.length === 0 ? "no new version" : `${r.added.length} new version(s) ${r.added.map((a) => a.version).join(", ")}`}; loaded: ${r.versions.join(", ")}`,
        ...r.failed.map((f) => `not loaded: ${f.directory}: ${f.error}`),
      ].join("\n"),
    );
    // A folder that could not be loaded is a failure to act on, whatever else loaded.
    if (r.failed.length > 0) process.exitCode = 1;
  });

program
  .command("tables <model>")
  .description("list a model's lookup tables")
  .action(async (model: string) => {
    const r = await client().request<{ tables: Record<string, unknown>[] }>(
      "GET",
      `/v1/models/${encodeURIComponent(model)}/tables`,
    );
    print(r, () =>
      table(r.tables, ["generation", "modelVersion", "entryCount", "bytes", "created", "checksum"]),
    );
  });

program
  .command("download <model>")
  .description("download the active version's newest table (verified)")
  .option(
    "--out <file>",
    "where to write it (default <model>.pctable; a folder: <model>.pctable in it)",
  )
  .action(async (model: string, o: { out?: string }) => {
    const api = client();
    const path = `/v1/models/${encodeURIComponent(model)}/tables/latest`;
    const response = await api.fetch(path);
    if (!response.ok) {
      const body = (await response.json().catch(() => ({}))) as { error?: { message?: string } };
      throw api.failure(path, response.status, body.error);
    }
    const bytes = new Uint8Array(await response.arrayBuffer());
    const table = await LookupTable.open(bytes, { model }).catch((error: Error) => {
      throw new CliError(`the downloaded table is not valid: ${error.message}`, 1);
    });
    const named = `${model}.pctable`;
    const given = o.out ?? named;
    // A folder (named with a trailing slash, or one that exists): the file goes in it.
    const isFolder =
      /[\\/]$/.test(given) ||
      (await stat(given).then(
        (s) => s.isDirectory(),
        () => false,
      ));
    const out = isFolder ? join(given, named) : given;
    try {
      await writeFile(`${out}.tmp`, bytes);
      await rename(`${out}.tmp`, out);
    } catch (error) {
      await rm(`${out}.tmp`, { force: true }).catch(() => {});
      throw new CliError(`cannot write ${out}: ${(error as Error).message}`, 1);
    }
    const h = table.header;
    const summary = {
      file: out,
      bytes: bytes.length,
      generation: h.generation,
      modelVersion: h.modelVersion,
      entries: h.entryCount,
      checksum: table.checksum,
    };
    print(
      summary,
      () =>
        `${out}: ${h.entryCount} entries of ${model}@${h.modelVersion} (generation ${h.generation}, ${bytes.length} bytes, verified)`,
    );
  });

program
  .command("stats")
  .description("hit ratios, misses, queue depths, coverage")
  .action(async () => {
    const s = await client().request<{
      models: Record<string, Record<string, unknown>>;
      queues: Record<string, Record<string, number>>;
    }>("GET", "/admin/v1/stats");
    print(s, () => {
      const lines: string[] = [];
      for (const [name, m] of Object.entries(s.models)) {
        const hit = m.hitRatio as { overall: number | null } | null;
        const cov = m.coverage as { ratio: number | null; window: number };
        // Counts cover every version this process answered with since it started.
        lines.push(
          `${name} (active ${m.activeVersion}): ${m.lookups} lookups, hit ratio ${percent(hit?.overall)}, misses ${m.misses}, table coverage ${cov.ratio === null ? "-" : `${percent(cov.ratio)} of ${cov.window}`}`,
        );
        if (m.bySource) lines.push(`  by source ${JSON.stringify(m.bySource)}`);
        const versions = Object.entries(m.byVersion as Record<string, number>);
        if (versions.length > 1 || (versions.length === 1 && versions[0]?.[0] !== m.activeVersion))
          lines.push(`  by version ${versions.map(([v, n]) => `${v} ${n}`).join(", ")}`);
        const top = m.topMissed as { key: string; count: number }[];
        if (top.length)
          lines.push(`  top missed ${top.map((t) => `${t.key}×${t.count}`).join(" ")}`);
      }
      for (const [name, q] of Object.entries(s.queues))
        lines.push(
          `queue ${name}: ${Object.entries(q)
            .map(([k, v]) => `${k} ${v}`)
            .join(", ")}`,
        );
      return lines.join("\n");
    });
  });

program
  .command("gc <model>")
  .description(
    "delete versions retention no longer keeps (never the active one or the rollback target)",
  )
  .option("--dry-run", "only say what would be deleted")
  .action(async (model: string, o: { dryRun?: boolean }) => {
    const r = await client().request<{
      dryRun: boolean;
      kept: string[];
      collected: { version: string; keysDeleted: number; tablesDeleted: number }[];
      bytesFreedOnDisk: number;
      olderTablesDeleted: number;
      runKeyListsDeleted: number;
    }>(
      "POST",
      `/admin/v1/models/${encodeURIComponent(model)}/gc`,
      o.dryRun ? { dryRun: true } : undefined,
    );
    const would = r.dryRun ? "would be " : "";
    print(r, () =>
      [
        ...(r.dryRun ? ["dry run: nothing deleted"] : []),
        `kept ${r.kept.join(", ")}`,
        ...r.collected.map(
          (c) =>
            `${r.dryRun ? "would collect" : "collected"} ${c.version}: ${c.keysDeleted} Redis keys, ${c.tablesDeleted} tables`,
        ),
        `older tables ${would}deleted ${r.olderTablesDeleted}; ${r.bytesFreedOnDisk} bytes ${would}freed on disk`,
        ...(r.dryRun ? [] : [`key lists of ended runs deleted ${r.runKeyListsDeleted}`]),
      ].join("\n"),
    );
  });

program
  .command("audit")
  .description("recent admin actions")
  .option("--limit <N>", "how many", "50")
  .option("--no-refused", "leave out refused attempts (401/403)")
  .action(async (o: { limit: string; refused: boolean }) => {
    const { entries } = await client().request<{ entries: Record<string, unknown>[] }>(
      "GET",
      `/admin/v1/audit?limit=${positive(o.limit, "--limit")}&refused=${o.refused}`,
    );
    print(entries, () => table(entries, ["at", "actor", "action", "target", "status", "detail"]));
  });

/** A share given on the command line: a number in 0..1 (the server checks again). */
function shareOf(text: string, name: string): number {
  const n = Number(text);
  if (text.trim() === "" || !Number.isFinite(n) || n < 0 || n > 1)
    throw new CliError(`${name} must be a number from 0 to 1 (0.1 = 10%), not "${text}"`, 2);
  return n;
}

function experimentPath(model: string, id?: string): string {
  const base = `/admin/v1/models/${encodeURIComponent(model)}/experiments`;
  return id ? `${base}/${encodeURIComponent(id)}` : base;
}

const experiment = program
  .command("experiment")
  .description("serve a candidate version to a share of clients, compare, then promote or revert");

experiment
  .command("start <model>")
  .description("start an experiment: the active version is the control arm")
  .requiredOption("--candidate <version>", "the version the candidate arm is served")
  .requiredOption("--fraction <share>", "share of clients in the candidate arm, 0..1")
  .option("--shadow <share>", "share of lookups also answered by the other arm's version", "0")
  .option("--id <id>", "the experiment's id (default: generated)")
  .action(async (model: string, o: Record<string, string>) => {
    const body = {
      candidate: o.candidate,
      fraction: shareOf(o.fraction as string, "--fraction"),
      shadowRate: shareOf(o.shadow as string, "--shadow"),
      ...(o.id ? { id: o.id } : {}),
    };
    const x = await client().request<Experiment & { warnings?: string[] }>(
      "POST",
      experimentPath(model),
      body,
    );
    print(x, () => startedText(x));
    for (const warning of x.warnings ?? []) process.stderr.write(`warning: ${warning}\n`);
  });

experiment
  .command("set <model> <id>")
  .description("change a running experiment's split or shadow rate")
  .option("--fraction <share>", "share of clients in the candidate arm, 0..1")
  .option("--shadow <share>", "share of lookups also answered by the other arm's version")
  .action(async (model: string, id: string, o: { fraction?: string; shadow?: string }) => {
    if (o.fraction === undefined && o.shadow === undefined)
      throw new CliError("give --fraction, --shadow or both", 2);
    const body = {
      ...(o.fraction !== undefined ? { fraction: shareOf(o.fraction, "--fraction") } : {}),
      ...(o.shadow !== undefined ? { shadowRate: shareOf(o.shadow, "--shadow") } : {}),
    };
    const x = await client().request<Experiment & { warnings?: string[] }>(
      "PATCH",
      experimentPath(model, id),
      body,
    );
    print(x, () => `experiment ${x.id}: ${splitText(x)}`);
    for (const warning of x.warnings ?? []) process.stderr.write(`warning: ${warning}\n`);
  });

experiment
  .command("stop <model> <id>")
  .description(
    "end an experiment: --promote the candidate or --revert everyone to the active version (the control, unless it was promoted or rolled back meanwhile)",
  )
  .option("--promote", "make the candidate the active version")
  .option("--revert", "serve everyone the active version again")
  .action(async (model: string, id: string, o: { promote?: boolean; revert?: boolean }) => {
    if (Boolean(o.promote) === Boolean(o.revert))
      throw new CliError("stop needs exactly one of --promote or --revert", 2);
    const x = await client().request<Experiment & { active: string; warnings?: string[] }>(
      "POST",
      `${experimentPath(model, id)}/stop`,
      { outcome: o.promote ? "promote" : "revert" },
    );
    print(x, () => `experiment ${x.id} ${x.state}: ${model} serves ${x.active} to everyone`);
    for (const warning of x.warnings ?? [])
      process.stderr.write(`warning: ${warning}
`);
  });

experiment
  .command("list <model>")
  .description("a model's experiments, running and past")
  .action(async (model: string) => {
    const { experiments } = await client().request<{ experiments: Experiment[] }>(
      "GET",
      experimentPath(model),
    );
    print(experiments, () => table(experiments.map(listRow), LIST_COLUMNS));
  });

experiment
  .command("report <model> <id>")
  .description("each arm's lookups, hit ratio, outputs and agreement; the tables compared")
  .action(async (model: string, id: string) => {
    const r = await client().request<ExperimentReport>("GET", experimentPath(model, id));
    print(r, () => reportText(r));
  });

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) {
    // Help and version print and exit 0; everything else commander rejects is usage.
    process.exitCode = error.exitCode === 0 ? 0 : 2;
    if (error.exitCode !== 0 && process.argv.includes("--json"))
      process.stderr.write(
        `${JSON.stringify({ error: { message: error.message.replace(/^error: /, ""), exitCode: 2 } })}\n`,
      );
  } else {
    const exitCode = error instanceof CliError ? error.exitCode : 1;
    const message = (error as Error).message;
    const code = error instanceof CliError ? error.code : undefined;
    // With --json, errors are JSON too, so a script reads every outcome the same way.
    process.stderr.write(
      process.argv.includes("--json")
        ? `${JSON.stringify({ error: { ...(code ? { code } : {}), message, exitCode } })}\n`
        : `predcache: ${message}\n`,
    );
    process.exitCode = exitCode;
  }
}
