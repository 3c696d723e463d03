/**
 * Observed traffic: the K inputs users asked most (recorded by the API per model and
 * encoding), most asked first, read in pages so K can be large.
 */
import type { Keys } from "../../src/cache/keys.ts";
import type { Encoder } from "../../src/model/encoding.ts";
import type { Redis } from "../../src/redis/connection.ts";
import type { RawInput } from "./seed.ts";

const PAGE = 10_000;

export async function* trafficInputs(
  redis: Redis,
  keys: Keys,
  model: string,
  encoder: Encoder,
  top: number,
): AsyncGenerator<RawInput> {
  const set = keys.traffic(model, encoder.hash);
  for (let start = 0; start < top; start += PAGE) {
    const stop = Math.min(top, start + PAGE) - 1;
    const page = await redis.zrevrange(set, start, stop);
    for (const key of page) yield encoder.decodeKey(key);
    if (page.length < stop - start + 1) return;
  }
}
