/**
 * The quick start's first impression: when an active version has no precomputed data
 * yet and its manifest names common inputs, queue the seed run (once per version), so a
 * new user sees cache hits within a minute, with progress in the log.
 */
import type { Keys } from "../src/cache/keys.ts";
import type { Logger } from "../src/log.ts";
import type { ActiveVersions } from "../src/model/active.ts";
import type { ModelRegistry } from "../src/model/registry.ts";
import type { Redis } from "../src/redis/connection.ts";
import type { Precompute } from "./job.ts";

export async function seedOnFirstStart(deps: {
  redis: Redis;
  keys: Keys;
  registry: ModelRegistry;
  active: ActiveVersions;
  precompute: Precompute;
  log: Logger;
}): Promise<void> {
  for (const name of deps.registry.names()) {
    const version = deps.active.get(name);
    const model = version ? deps.registry.get(name, version) : undefined;
    if (!model?.commonInputs) continue;
    const meta = deps.keys.versionMeta(name, model.version);
    // Claim the seed run for this version once, across restarts and processes.
    if ((await deps.redis.hsetnx(meta, "seedRun", "pending")) === 0) continue;
    const { runId } = await deps.precompute.enqueue({
      model: name,
      version: model.version,
      source: { kind: "seed", file: model.commonInputs },
      chunkSize: 2_000,
    });
    await deps.redis.hset(meta, "seedRun", runId);
    deps.log.info(
      { model: name, version: model.version, run: runId, file: model.commonInputs },
      "first start: precomputing the common inputs",
    );
    void deps.precompute
      .waitUntilDone(
        runId,
        3_600_000,
        throttle(2_000, (s) =>
          deps.log.info(
            { run: runId, chunks: s.chunks, rows: s.rows, rate: s.rate, etaSeconds: s.etaSeconds },
            "seed precompute progress",
          ),
        ),
      )
      .then((s) =>
        deps.log.info(
          { run: runId, state: s.state, rows: s.rows, written: s.written, error: s.error },
          "seed precompute finished",
        ),
      )
      .catch((error: unknown) =>
        deps.log.warn(
          { run: runId, err: (error as Error).message },
          "seed precompute not followed",
        ),
      );
  }
}

function throttle<T>(ms: number, fn: (value: T) => void): (value: T) => void {
  let last = 0;
  return (value) => {
    if (Date.now() - last < ms) return;
    last = Date.now();
    fn(value);
  };
}
