/**
 * npm run precompute -- --model <name> --source <seed:FILE | grid:JSON | traffic:K> [options]
 *
 * Starts a precompute run against the service's Redis (REDIS_URL) and, unless --no-watch,
 * follows it to the end. Exit codes: 0 completed, 1 failed or cancelled, 2 usage,
 * 3 Redis unreachable. (The admin CLI, precompute/cli.ts, does the same over HTTP.)
 */
import { parseArgs } from "node:util";
import { Keys } from "../src/cache/keys.ts";
import { loadConfigOrExit } from "../src/config.ts";
import { PredcacheError } from "../src/errors.ts";
import { queuePrefix } from "../src/live/jobs.ts";
import { createRedis, whenReady } from "../src/redis/connection.ts";
import { loadRegistry } from "../src/service.ts";
import { Precompute } from "./job.ts";
import type { SourceSpecInput } from "./spec.ts";

const usage = `usage: npm run precompute -- --model NAME --source SOURCE [--version ID] [--chunk-size N]
                              [--limit N] [--grid-max N] [--promote] [--warm K] [--no-watch]
  SOURCE: seed:FILE (CSV or JSON lines) | grid:'{"feature": "all" | [values] | {"min","max","step"}}' | traffic:K
  --limit N     seed sources: the first N rows only
  --grid-max N  grid sources: refuse grids of more than N inputs (default 1,000,000)`;

function fail(code: number, message: string): never {
  process.stderr.write(`${message}\n`);
  process.exit(code);
}

/** A whole number of at least 1 given for `name`, or exit 2 saying so. */
function positive(text: string | undefined, name: string): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text) || Number(text) < 1)
    fail(2, `${name} must be a whole number of at least 1, not "${text}"`);
  return Number(text);
}

function parseSource(
  text: string,
  limit: number | undefined,
  gridMax: number | undefined,
): SourceSpecInput {
  const [kind, ...rest] = text.split(":");
  const arg = rest.join(":");
  if (limit !== undefined && kind !== "seed") fail(2, "--limit applies to seed sources only");
  if (gridMax !== undefined && kind !== "grid") fail(2, "--grid-max applies to grid sources only");
  if (kind === "seed" && arg) return { kind: "seed", file: arg, ...(limit ? { limit } : {}) };
  if (kind === "traffic" && /^\d+$/.test(arg)) return { kind: "traffic", top: Number(arg) };
  if (kind === "grid") {
    try {
      return { kind: "grid", axes: JSON.parse(arg), ...(gridMax ? { maxSize: gridMax } : {}) };
    } catch {
      fail(2, `grid axes must be JSON\n${usage}`);
    }
  }
  fail(2, `unknown source "${text}"\n${usage}`);
}

let args: ReturnType<typeof parse>;
function parse() {
  return parseArgs({
    options: {
      model: { type: "string" },
      source: { type: "string" },
      version: { type: "string" },
      "chunk-size": { type: "string" },
      limit: { type: "string" },
      "grid-max": { type: "string" },
      promote: { type: "boolean", default: false },
      warm: { type: "string" },
      "no-watch": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
}
try {
  args = parse();
} catch (error) {
  fail(2, `${(error as Error).message}\n${usage}`);
}
const { values } = args;
if (values.help) {
  console.log(usage);
  process.exit(0);
}
if (!values.model || !values.source) fail(2, usage);
const source = parseSource(
  values.source,
  positive(values.limit, "--limit"),
  positive(values["grid-max"], "--grid-max"),
);
const chunkSize = positive(values["chunk-size"], "--chunk-size");
const warm = positive(values.warm, "--warm");
const config = loadConfigOrExit();
if (!config.redisUrl)
  fail(2, "set REDIS_URL to the service's Redis (npm start logs the one it runs)");

const redis = createRedis(config.redisUrl);
try {
  await whenReady(redis, 5_000);
} catch (error) {
  fail(3, (error as Error).message);
}
const registry = await loadRegistry(config);
const precompute = new Precompute(redis, new Keys(config.prefix), registry, {
  queuePrefix: queuePrefix(config.prefix),
});
let code = 0;
try {
  const { runId, version } = await precompute.enqueue({
    model: values.model,
    source,
    ...(values.version ? { version: values.version } : {}),
    ...(chunkSize ? { chunkSize } : {}),
    ...(warm ? { warmFromTraffic: warm } : {}),
    promote: values.promote,
  });
  process.stdout.write(`run ${runId} → ${values.model}@${version}\n`);
  if (!values["no-watch"]) {
    // Stopping the watch does not stop the run: say how to follow it again.
    process.once("SIGINT", () => {
      process.stderr.write(
        `\nstopped watching; run ${runId} goes on (npx predcache run ${runId} --watch, or cancel it)\n`,
      );
      process.exit(130);
    });
    let last = "";
    let away = false;
    const done = await precompute.waitUntilDone(
      runId,
      24 * 3_600_000,
      (s) => {
        if (away) process.stderr.write("Redis answers again\n");
        away = false;
        // A line when the run moves on, not each time only its rate or ETA is re-estimated.
        const progress = `${s.state} chunks ${s.chunks.done}/${s.chunks.total ?? "?"} rows ${s.rows} written ${s.written}`;
        if (progress !== last)
          process.stdout.write(`${progress} ${s.rate}/s eta ${s.etaSeconds ?? "?"}s\n`);
        last = progress;
      },
      // The run goes on without us: wait for Redis, as the workers do.
      () => {
        if (!away)
          process.stderr.write(`Redis is unavailable; run ${runId} goes on, waiting for Redis\n`);
        away = true;
      },
    );
    if (done.state !== "completed") {
      process.stderr.write(`run ${done.state}: ${done.error ?? ""}\n`);
      code = 1;
    }
  }
} catch (error) {
  process.stderr.write(`${(error as Error).message}\n`);
  code = error instanceof PredcacheError && error.status < 500 ? 2 : 1;
} finally {
  // Redis may be away: what is left to close is closed anyway, without a trace.
  await precompute.close().catch(() => {});
  await redis.quit().catch(() => redis.disconnect());
  await registry.close();
}
process.exit(code);
