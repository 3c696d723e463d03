/** The pure parts of experiments: arm assignment, the agreement rule, histogram bins; shadow metrics. */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { Tiers } from "../../src/cache/tiers.ts";
import { agreementOf } from "../../src/experiment/agreement.ts";
import {
  armOf,
  clientIdFrom,
  cohortPoint,
  type Experiment,
} from "../../src/experiment/experiment.ts";
import { keyFor, ShadowComparer } from "../../src/experiment/shadow.ts";
import { type ArmTally, binOf } from "../../src/experiment/tally.ts";
import type { LiveClient } from "../../src/live/client.ts";
import { createLogger } from "../../src/log.ts";
import type { Manifest } from "../../src/model/manifest.ts";
import type { ModelVersion } from "../../src/model/registry.ts";
import { processMetrics } from "../../src/observability/metrics.ts";

function experiment(fraction: number, id = "exp-1"): Experiment {
  return {
    id,
    model: "m",
    control: "aaaaaaaaaaaa",
    candidate: "bbbbbbbbbbbb",
    fraction,
    shadowRate: 0,
    state: "running",
    startedAt: new Date(0).toISOString(),
  };
}

const clients = Array.from({ length: 10_000 }, (_, i) => `client-${i}-${(i * 7919) % 10_007}`);

describe("arm assignment", () => {
  it("matches the split within statistical tolerance over 10,000 client ids", () => {
    for (const fraction of [0.01, 0.1, 0.25, 0.5, 0.9]) {
      const inCandidate = clients.filter((c) => armOf(experiment(fraction), c) === "candidate");
      const n = clients.length;
      // Four standard deviations of a binomial count: fails by chance about once in 15,000.
      const tolerance = 4 * Math.sqrt(n * fraction * (1 - fraction));
      expect(Math.abs(inCandidate.length - n * fraction)).toBeLessThan(tolerance);
      console.log(
        `split ${fraction}: ${inCandidate.length} of ${n} clients in the candidate arm (expected ${n * fraction} ± ${tolerance.toFixed(0)})`,
      );
    }
  });

  it("is stable per client, and a grown split keeps its candidate clients", () => {
    fc.assert(
      fc.property(
        fc.string({ minLength: 1, maxLength: 64 }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        (client, f1, f2) => {
          const [small, large] = f1 <= f2 ? [f1, f2] : [f2, f1];
          expect(armOf(experiment(small), client)).toBe(armOf(experiment(small), client));
          if (armOf(experiment(small), client) === "candidate")
            expect(armOf(experiment(large), client)).toBe("candidate");
        },
      ),
    );
  });

  it("puts clients without an id in control, and nobody in candidate at 0 or everyone at 1", () => {
    expect(armOf(experiment(1), undefined)).toBe("control");
    expect(armOf(experiment(1), "")).toBe("control");
    expect(clients.some((c) => armOf(experiment(0), c) === "candidate")).toBe(false);
    expect(clients.every((c) => armOf(experiment(1), c) === "candidate")).toBe(true);
  });

  it("hashes the whole id, however long: ids alike in their first 256 characters still spread", () => {
    const prefix = `tenant/${"x".repeat(300)}/user/`;
    const points = new Set(
      Array.from({ length: 40 }, (_, i) => cohortPoint("exp-long", `${prefix}${i}`)),
    );
    expect(points.size).toBe(40);
    const long = Array.from({ length: 40 }, (_, i) => `${prefix}${i}`);
    const whole: Experiment = { ...experiment(0.5), clientIds: "whole" };
    const inCandidate = long.filter((c) => armOf(whole, c) === "candidate");
    expect(inCandidate.length).toBeGreaterThan(5);
    expect(inCandidate.length).toBeLessThan(35);
    // An experiment started before (no clientIds) keeps hashing the first 256 characters:
    // its clients stay in their arms through a rolling deploy.
    const older = experiment(0.5);
    expect(new Set(long.map((c) => armOf(older, c))).size).toBe(1);
    expect(armOf(older, long[0] as string)).toBe(armOf(older, (long[0] as string).slice(0, 256)));
    // Asked again (not remembered: too long to keep), the same point.
    expect(cohortPoint("exp-long", `${prefix}7`)).toBe(cohortPoint("exp-long", `${prefix}7`));
  });

  it("reads the client id header as a list: repeats are one client, two different ids ambiguous", () => {
    expect(clientIdFrom([])).toBeUndefined();
    expect(clientIdFrom([""])).toBeUndefined();
    expect(clientIdFrom([" ", " , "])).toBeUndefined();
    expect(clientIdFrom(["u0"])).toBe("u0");
    expect(clientIdFrom([" u0 "])).toBe("u0");
    expect(clientIdFrom(["u0", "u0"])).toBe("u0");
    expect(clientIdFrom(["u0, u0"])).toBe("u0");
    expect(clientIdFrom(["", "u0"])).toBe("u0");
    expect(clientIdFrom(["u0,u5"])).toBe("ambiguous");
    expect(clientIdFrom(["u0", "u5"])).toBe("ambiguous");
  });

  it("keeps every client's point across releases (the first 48 bits of SHA-256 of id, NUL, client)", () => {
    // Computed once with createHash("sha256").update(id).update("\0").update(client): a
    // change here would move clients between arms of experiments already running.
    expect(cohortPoint("exp-a", "client-1")).toBe(0.11876813737805492);
    expect(cohortPoint("bench-0", "bench-client-42")).toBe(0.6240401217339091);
    expect(cohortPoint("é-x", "ü")).toBe(0.6311999203731418);
    // Asked again (remembered now): the same points.
    expect(cohortPoint("exp-a", "client-1")).toBe(0.11876813737805492);
  });

  it("draws independent cohorts for different experiments", () => {
    const a = clients.map((c) => cohortPoint("exp-a", c) < 0.5);
    const b = clients.map((c) => cohortPoint("exp-b", c) < 0.5);
    const both = a.filter((x, i) => x && b[i]).length;
    // Independent halves overlap on about a quarter.
    expect(Math.abs(both - clients.length / 4)).toBeLessThan(
      4 * Math.sqrt(clients.length * 0.1875),
    );
  });
});

const manifestOf = (kind: "probability" | "regression" | "classes", digits = 4) =>
  ({
    outputs: [
      {
        name: "y",
        tensor: "y",
        kind,
        digits,
        ...(kind === "classes" ? { labels: ["a", "b"] } : {}),
      },
    ],
  }) as unknown as Manifest;

describe("agreement", () => {
  it("judges a probability by its side of 0.5", () => {
    expect(agreementOf(manifestOf("probability"), { y: 0.49 }, { y: 0.1 }).agreed).toBe(true);
    const flipped = agreementOf(manifestOf("probability"), { y: 0.49 }, { y: 0.51 });
    expect(flipped.agreed).toBe(false);
    expect(flipped.absDiff).toBeCloseTo(0.02, 12);
  });

  it("judges classes by label and a regression within 5% or one rounding unit", () => {
    const classes = manifestOf("classes");
    const a = { y: { label: "a", probabilities: { a: 0.6, b: 0.4 } } };
    const b = { y: { label: "b", probabilities: { a: 0.4, b: 0.6 } } };
    expect(agreementOf(classes, a, b).agreed).toBe(false);
    expect(agreementOf(classes, a, a).agreed).toBe(true);
    const regression = manifestOf("regression", 1);
    expect(agreementOf(regression, { y: 100 }, { y: 104.9 }).agreed).toBe(true);
    expect(agreementOf(regression, { y: 100 }, { y: 106 }).agreed).toBe(false);
    expect(agreementOf(regression, { y: 0 }, { y: 0.1 }).agreed).toBe(true);
  });
});

describe("histogram bins", () => {
  it("puts a value in the first bin whose upper edge holds it, else the open last one", () => {
    const edges = [0.1, 0.5, 1];
    expect(binOf(edges, 0)).toBe(0);
    expect(binOf(edges, 0.1)).toBe(0);
    expect(binOf(edges, 0.3)).toBe(1);
    expect(binOf(edges, 1)).toBe(2);
    expect(binOf(edges, 7)).toBe(3);
  });
});

describe("shadow comparison metrics", () => {
  /** Keys the other version was asked for. */
  let asked: string[] = [];
  /** A comparer whose other version answers every key from its cache with `y: 0.4`. */
  function comparer(isRunning: (x: Experiment) => boolean) {
    asked = [];
    const tiers = {
      // Not in L1: asked through lookup(), which records the key.
      withoutRedis: () => undefined,
      lookup: async (_model: ModelVersion, key: string) => {
        asked.push(key);
        return { source: "memory", prediction: { y: 0.4 } };
      },
    };
    const tally = { compare: () => {}, missed: () => {} };
    return new ShadowComparer(
      tiers as unknown as Tiers,
      {} as LiveClient,
      tally as unknown as ArmTally,
      createLogger("silent"),
      { maxInFlight: 10, random: () => 0, isRunning },
    );
  }
  const version = (id: string, encoder: object) =>
    ({ name: "m", version: id, manifest: manifestOf("probability"), encoder }) as ModelVersion;
  const served = version("v1", { hash: "h1", decodeKey: () => ({ hour: 22 }) });
  const other = version("v2", { hash: "h1" });
  const seriesOf = async (id: string) =>
    (await processMetrics().shadowComparisons.get()).values.filter(
      (v) => v.labels.experiment === id,
    );

  it("counts a comparison while its experiment runs, not one that ends after the stop", async () => {
    const running = { ...experiment(0.5, "shadow-running"), shadowRate: 1 };
    const live = comparer(() => true);
    live.consider(running, "control", other, () => keyFor(other, served, "k"), { y: 0.3 });
    await live.drain();
    expect(await seriesOf("shadow-running")).toEqual([
      expect.objectContaining({ value: 1, labels: expect.objectContaining({ outcome: "agreed" }) }),
    ]);
    processMetrics().forgetExperiment("m", "shadow-running");
    expect(await seriesOf("shadow-running")).toEqual([]);

    const stopped = { ...experiment(0.5, "shadow-stopped"), shadowRate: 1 };
    const late = comparer(() => false);
    late.consider(stopped, "control", other, () => keyFor(other, served, "k"), { y: 0.3 });
    await late.drain();
    expect(late.counts.compared).toBe(1);
    expect(await seriesOf("shadow-stopped")).toEqual([]);
  });

  it("asks the other version under its own key for the input, and counts an input it refuses", async () => {
    const running = { ...experiment(0.5, "shadow-encodings"), shadowRate: 1 };
    const c = comparer(() => true);
    // Another encoding: the input is keyed as the other version keys it.
    const rekeyed = version("v3", {
      hash: "h2",
      encode: (input: { hour: number }) => ({ ok: true, value: { key: `v3-hour-${input.hour}` } }),
    });
    // The client's own input when there is one (its key holds a flagged 500 as 24, say),
    // else the input the key decodes to.
    c.consider(running, "control", rekeyed, () => keyFor(rekeyed, served, "k", { hour: 500 }), {
      y: 0.3,
    });
    c.consider(running, "control", rekeyed, () => keyFor(rekeyed, served, "k"), { y: 0.3 });
    // One that refuses the input (hour 22 past its range): nothing asked, counted as refused.
    const narrower = version("v4", { hash: "h3", encode: () => ({ ok: false, errors: [] }) });
    c.consider(running, "control", narrower, () => keyFor(narrower, served, "k"), { y: 0.3 });
    await c.drain();
    expect(asked).toEqual(["v3-hour-500", "v3-hour-22"]);
    expect(c.counts).toMatchObject({ sampled: 3, compared: 2, refused: 1, failed: 0 });
    expect(await seriesOf("shadow-encodings")).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          value: 1,
          labels: expect.objectContaining({ outcome: "refused" }),
        }),
      ]),
    );
  });
});
