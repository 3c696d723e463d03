/**
 * Observed traffic: the K most asked inputs (recorded by the API per model and encoding)
 * that the version being precomputed has not precomputed yet, most asked first, read in
 * pages so K can be large. Hits count too (sampled) so that a new version warmed from
 * traffic gets the hot inputs; but inputs already precomputed are passed over, or a run
 * asked for the top K of a version already serving them would find nothing to write.
 * "Precomputed" is in the version's newest table, not merely in Redis: the live model's
 * answers are stored too, and the most missed inputs are those a run should bring into
 * the table (the run does not infer them again: they are stored).
 */

import type { Keys } from "../../src/cache/keys.ts";
import type { Encoder } from "../../src/model/encoding.ts";
import type { ModelVersion } from "../../src/model/registry.ts";
import type { Redis } from "../../src/redis/connection.ts";
import type { RawInput } from "./seed.ts";

const PAGE = 10_000;

export interface TrafficSource {
  redis: Redis;
  keys: Keys;
  /** The encoding the traffic was observed under (its keys decode with it). */
  observed: Encoder;
  /** The version being precomputed. */
  target: ModelVersion;
  /** Which of these keys it has precomputed already. */
  precomputed(keys: readonly string[]): Promise<boolean[]>;
  top: number;
}

export async function* trafficInputs(source: TrafficSource): AsyncGenerator<RawInput> {
  const { redis, keys, observed, target, precomputed, top } = source;
  const set = keys.traffic(target.name, observed.hash);
  let given = 0;
  for (let start = 0; given < top; start += PAGE) {
    const page = await redis.zrevrange(set, start, start + PAGE - 1);
    const inputs = page.map((key) => observed.decodeKey(key));
    // Inputs the target refuses are given too: the run counts them (observedRefused).
    const targetKeys = inputs.map((input) => {
      const encoded = target.encoder.encode(input);
      return encoded.ok ? encoded.value.key : undefined;
    });
    const checked = targetKeys.filter((key): key is string => key !== undefined);
    const flags = await precomputed(checked);
    const stored = new Set(checked.filter((_, i) => flags[i]));
    for (const [i, input] of inputs.entries()) {
      const key = targetKeys[i];
      if (key !== undefined && stored.has(key)) continue;
      yield input;
      if (++given >= top) return;
    }
    if (page.length < PAGE) return;
  }
}
