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
                              [--limit N] [--promote] [--warm K] [--no-watch]
  SOURCE: seed:FILE (CSV or JSON lines) | grid:'{"feature": "all" | [values] | {"min","max","step"}}' | traffic:K`;

function fail(code: number, message: string): never {
  process.stderr.write(`${message}\n`);
  process.exit(code);
}

function parseSource(text: string, limit: number | undefined): SourceSpecInput {
  const [kind, ...rest] = text.split(":");
  const arg = rest.join(":");
  if (kind === "seed" && arg) return { kind: "seed", file: arg, ...(limit ? { limit } : {}) };
  if (kind === "traffic" && /^\d+$/.test(arg)) return { kind: "traffic", top: Number(arg) };
  if (kind === "grid") {
    try {
      return { kind: "grid", axes: JSON.parse(arg) };
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
    source: parseSource(values.source, values.limit ? Number(values.limit) : undefined),
    ...(values.version ? { version: values.version } : {}),
    ...(values["chunk-size"] ? { chunkSize: Number(values["chunk-size"]) } : {}),
    ...(values.warm ? { warmFromTraffic: Number(values.warm) } : {}),
    promote: values.promote,
  });
  process.stdout.write(`run ${runId} → ${values.model}@${version}\n`);
  if (!values["no-watch"]) {
    let last = "";
    const done = await precompute.waitUntilDone(runId, 24 * 3_600_000, (s) => {
      const line = `${s.state} chunks ${s.chunks.done}/${s.chunks.total ?? "?"} rows ${s.rows} written ${s.written} ${s.rate}/s eta ${s.etaSeconds ?? "?"}s`;
      if (line !== last) process.stdout.write(`${line}\n`);
      last = line;
    });
    if (done.state !== "completed") {
      process.stderr.write(`run ${done.state}: ${done.error ?? ""}\n`);
      code = 1;
    }
  }
} catch (error) {
  process.stderr.write(`${(error as Error).message}\n`);
  code = error instanceof PredcacheError && error.status < 500 ? 2 : 1;
} finally {
  await precompute.close();
  await redis.quit();
  await registry.close();
}
process.exit(code);
