/**
 * A model version that flags hours past its range instead of refusing them: the model
 * sees the nearest trained hour, so every hour past a bound is one input to it, one key,
 * one cache entry and one inference, not one per value asked.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ModelVersion } from "../../src/model/registry.ts";
import type { ModelRuntime } from "../../src/model/runtime.ts";
import {
  computedAsOlderApi,
  getJson,
  labelled,
  modelsDirWithHourEdited,
  startTestService,
  type TestService,
  uniquePrefix,
} from "../helpers/service.ts";

let t: TestService;
let flagged: ModelVersion;
let runtime: ModelRuntime;

beforeAll(async () => {
  const models = await modelsDirWithHourEdited("flag-hours", (hour) => {
    hour.outOfRange = "flag";
  });
  t = await startTestService({
    env: { PREDCACHE_PREFIX: uniquePrefix("flagrange"), PREDCACHE_MODELS_DIR: models },
  });
  flagged = labelled(t.registry, "flag-hours");
  runtime = await t.registry.runtime(flagged);
});
afterAll(async () => {
  await t.close();
});

const lookup = (hour: number) =>
  getJson(
    `${t.url}/v1/models/flight-delay/predict?origin=SFO&destination=LAX&hour=${hour}&dayOfWeek=3&version=${flagged.version}&wait=5000`,
  );

describe("hours past the range, flagged", () => {
  it("share one key and one inference per bound, answered as the bound is", async () => {
    const rows = runtime.stats.rows;
    const high = await lookup(24);
    expect(high.status).toBe(200);
    expect(high.body).toMatchObject({
      source: "live",
      key: '["SFO","LAX",24,3]',
      outOfDistribution: true,
      outOfDistributionFields: ["hour"],
    });
    for (const hour of [25, 1000, 2 ** 40]) {
      const again = await lookup(hour);
      expect(again.body).toMatchObject({ source: "memory", key: high.body.key });
      expect(again.body.prediction).toEqual(high.body.prediction);
    }
    const low = await lookup(-7);
    expect(low.body).toMatchObject({ source: "live", key: '["SFO","LAX",-1,3]' });
    expect(runtime.stats.rows - rows).toBe(2);
    // The model saw the bound: the same prediction as the bound's own, under another key.
    const bound = await lookup(23);
    expect(bound.body.key).toBe('["SFO","LAX",23,3]');
    expect(bound.body.outOfDistribution).toBe(false);
    expect(bound.body.prediction).toEqual(high.body.prediction);
  });

  it("computes a key an older API process sends with the hour as asked", async () => {
    // A rolling deploy: an older API process keys the value as asked; same row, so the
    // worker computes it and answers under that key.
    const older = await computedAsOlderApi(t, flagged, '["SFO","LAX",1000,3]');
    expect(older).toEqual((await lookup(24)).body.prediction);
  });
});
