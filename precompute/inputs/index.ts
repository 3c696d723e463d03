/** Opens a run's input source as a stream of raw inputs. */
import { basename } from "node:path";
import type { Keys } from "../../src/cache/keys.ts";
import type { ModelRegistry, ModelVersion } from "../../src/model/registry.ts";
import type { Redis } from "../../src/redis/connection.ts";
import type { SourceSpec } from "../spec.ts";
import { gridInputs } from "./grid.ts";
import { type RawInput, seedInputs } from "./seed.ts";
import { trafficInputs } from "./traffic.ts";

export type { RawInput } from "./seed.ts";

export interface SourceContext {
  redis: Redis;
  keys: Keys;
  registry: ModelRegistry;
  /** The version being precomputed. */
  target: ModelVersion;
  /**
   * Which of these keys it has precomputed (in its newest table; without tables, stored):
   * the traffic source passes over those, not over live answers that Redis holds too.
   */
  precomputed(keys: readonly string[]): Promise<boolean[]>;
}

export function openSource(
  spec: SourceSpec,
  ctx: SourceContext,
): AsyncIterable<RawInput> | Iterable<RawInput> {
  switch (spec.kind) {
    case "seed":
      return seedInputs(spec.file, spec.limit);
    case "grid":
      return gridInputs(ctx.target.manifest.encoding.features, spec);
    case "inline":
      return spec.inputs;
    case "traffic": {
      const hash = spec.encodingHash ?? ctx.target.encoder.hash;
      const observed = ctx.registry.versions(ctx.target.name).find((v) => v.encoder.hash === hash);
      if (!observed)
        throw new Error(`no loaded version of ${ctx.target.name} has encoding ${hash}`);
      return trafficInputs({
        redis: ctx.redis,
        keys: ctx.keys,
        observed: observed.encoder,
        target: ctx.target,
        precomputed: ctx.precomputed,
        top: spec.top,
      });
    }
  }
}

/**
 * A run's inputs in a few words, for its record and the header of the table it publishes.
 * The header is public: a seed file is named, not its place on the server's disk.
 */
export function describeSource(spec: SourceSpec): string {
  switch (spec.kind) {
    case "seed":
      return `seed file ${basename(spec.file)}${spec.limit ? ` (first ${spec.limit})` : ""}`;
    case "grid":
      return `grid over ${Object.keys(spec.axes).join(", ")}`;
    case "inline":
      return `${spec.inputs.length} uploaded inputs`;
    case "traffic":
      return `${spec.top} most asked inputs not yet precomputed`;
  }
}
