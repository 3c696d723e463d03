/**
 * The lookup path's hot series must render exactly what prom-client's own Counter and
 * Histogram render for the same updates: scrapers and dashboards cannot tell them apart.
 */
import fc from "fast-check";
import client from "prom-client";
import { describe, expect, it } from "vitest";
import { HotCounter, HotHistogram } from "../../src/observability/hot-series.ts";

const BOUNDS = [0.001, 0.01, 0.1, 0.5, 1, 10];
const LABELS = ["model", "source"] as const;

const update = fc.record({
  model: fc.constantFrom("a", "b", 'we"ird\\name'),
  source: fc.constantFrom("memory", "redis", "live"),
  value: fc.oneof(fc.constantFrom(...BOUNDS), fc.double({ min: 0, max: 20, noNaN: true })),
});

describe("hot series", () => {
  it("render the same text as prom-client's Counter and Histogram", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(update, { maxLength: 60 }), async (updates) => {
        const ours = new client.Registry();
        const theirs = new client.Registry();
        const hotCounter = new HotCounter("x_total", "help x", LABELS, ours);
        const hotHistogram = new HotHistogram("y_seconds", "help y", LABELS, BOUNDS, ours);
        const counter = new client.Counter({
          name: "x_total",
          help: "help x",
          labelNames: LABELS,
          registers: [theirs],
        });
        const histogram = new client.Histogram({
          name: "y_seconds",
          help: "help y",
          labelNames: LABELS,
          buckets: BOUNDS,
          registers: [theirs],
        });
        for (const { model, source, value } of updates) {
          hotCounter.labels(model, source).inc();
          counter.labels(model, source).inc();
          hotHistogram.labels(model, source).observe(value);
          histogram.labels(model, source).observe(value);
        }
        expect(await ours.metrics()).toBe(await theirs.metrics());
      }),
      { numRuns: 200 },
    );
  });

  it("skips non-finite observations (prom-client's throws: a lookup must not fail on one)", async () => {
    const registry = new client.Registry();
    const histogram = new HotHistogram("n_seconds", "help", ["model"], BOUNDS, registry);
    histogram.labels("a").observe(Number.NaN);
    histogram.labels("a").observe(Number.POSITIVE_INFINITY);
    histogram.labels("a").observe(0.2);
    const text = await registry.metrics();
    expect(text).toContain('n_seconds_count{model="a"} 1');
    expect(text).toContain('n_seconds_sum{model="a"} 0.2');
  });

  it("refuses label values that do not match the label names", () => {
    const counter = new HotCounter("z_total", "help", LABELS, new client.Registry());
    expect(() => counter.labels("only-one")).toThrow(/expected 2 label values/);
  });

  it("starts over on reset", async () => {
    const registry = new client.Registry();
    const counter = new HotCounter("r_total", "help", ["model"], registry);
    counter.labels("a").inc(3);
    counter.reset();
    expect(await registry.metrics()).toBe("# HELP r_total help\n# TYPE r_total counter\n");
  });
});
