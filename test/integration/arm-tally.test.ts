/**
 * An experiment arm's counters in Redis: sums of main outputs are floats, whatever value a
 * flush happens to add. A flush whose sum came out whole (0.25 + 0.75) once went as
 * HINCRBY onto a field holding a float, which Redis refuses inside the transaction while
 * applying the counts beside it: the report then had every lookup and not all of the sum.
 */
import { readFile } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { Keys } from "../../src/cache/keys.ts";
import type { Experiment } from "../../src/experiment/experiment.ts";
import { ArmTally, binEdges, countsFromHash } from "../../src/experiment/tally.ts";
import type { Manifest } from "../../src/model/manifest.ts";
import { createRedis, type Redis, whenReady } from "../../src/redis/connection.ts";
import { uniquePrefix } from "../helpers/service.ts";

let redis: Redis;
let manifest: Manifest;
beforeAll(async () => {
  redis = createRedis(inject("redisUrl"));
  await whenReady(redis);
  manifest = JSON.parse(await readFile("seeds/models/flight-delay/manifest.json", "utf8"));
});
afterAll(() => redis.disconnect());

const experiment: Experiment = {
  id: "floats",
  model: "flight-delay",
  control: "aaaaaaaaaaaa",
  candidate: "bbbbbbbbbbbb",
  fraction: 0.5,
  shadowRate: 0,
  state: "running",
  startedAt: new Date(0).toISOString(),
};

describe("arm tally", () => {
  it("adds every flush's sum, whole or not, and the counts with it", async () => {
    const keys = new Keys(uniquePrefix("tally"));
    const tally = new ArmTally(redis, keys, 60_000);
    const read = async () =>
      countsFromHash(
        await redis.hgetall(keys.experimentArm(experiment.model, experiment.id, "control")),
        binEdges(manifest).length + 1,
      );
    tally.answer(experiment, "control", manifest, true, 0.5);
    await tally.flush();
    // This flush's sum is exactly 1, its squares' sum not.
    tally.answer(experiment, "control", manifest, true, 0.25);
    tally.answer(experiment, "control", manifest, true, 0.75);
    await tally.flush();
    // And a whole sum onto a field that has only held whole numbers so far, then a float.
    tally.answer(experiment, "control", manifest, true, 2);
    await tally.flush();
    tally.answer(experiment, "control", manifest, true, 0.1);
    await tally.flush();
    await tally.flush(); // nothing left to add: nothing added twice
    const counts = await read();
    expect(counts).toMatchObject({ lookups: 5, hits: 5, valued: 5 });
    expect(counts.sum).toBeCloseTo(3.6, 12);
    expect(counts.sumSquares).toBeCloseTo(0.25 + 0.0625 + 0.5625 + 4 + 0.01, 12);
    await tally.close();
  });
});
