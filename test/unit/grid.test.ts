/** Grid sources: sized before they are built, so an absurd one is refused, not allocated. */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { GridTooLargeError, gridInputs, planGrid } from "../../precompute/inputs/grid.ts";
import type { Feature } from "../../src/model/manifest.ts";

const hour = { name: "hour", type: "integer", min: 0, max: 23 } as unknown as Feature;
const temp = { name: "temp", type: "number", min: -50, max: 50 } as unknown as Feature;
const airport = {
  name: "origin",
  type: "categorical",
  vocabulary: ["ATL", "LAX", "SFO"],
} as unknown as Feature;

const grid = (axes: Record<string, unknown>, maxSize = 1_000_000) =>
  ({ kind: "grid", axes, maxSize }) as Parameters<typeof planGrid>[1];

describe("grid sources", () => {
  it("refuses a huge range or a tiny step from its size alone, without making its values", () => {
    for (const axis of [
      { min: 0, max: 1e12, step: 1 },
      { min: 0, max: 23, step: 1e-9 },
    ]) {
      expect(() => planGrid([hour], grid({ hour: axis }))).toThrow(GridTooLargeError);
      // Also when another axis is empty: the product is 0, the axis still too large to make.
      expect(() => planGrid([hour, temp], grid({ hour: axis, temp: [] }))).toThrow(
        GridTooLargeError,
      );
    }
    expect(() => planGrid([hour], grid({ hour: { min: 0, max: 1e12, step: 1 } }))).toThrow(
      /1,000,000,000,001 inputs/,
    );
  });

  it("refuses a category outside the vocabulary, a category as a number, a number as text, a range over categories", () => {
    expect(() => planGrid([airport, hour], grid({ origin: ["SFO", "XXX"], hour: [7] }))).toThrow(
      /grid axis "origin": "XXX" not in its vocabulary/,
    );
    expect(() => planGrid([airport, hour], grid({ origin: [1], hour: [7] }))).toThrow(
      /"origin": 1 not in its vocabulary/,
    );
    expect(() => planGrid([airport, hour], grid({ origin: ["SFO"], hour: ["1"] }))).toThrow(
      /"hour": "1" not a number/,
    );
    expect(() =>
      planGrid([airport, hour], grid({ origin: { min: 0, max: 2, step: 1 }, hour: [7] })),
    ).toThrow(/a range needs a numeric feature/);
    expect(planGrid([airport, hour], grid({ origin: ["SFO", "LAX"], hour: [7, 8] })).size).toBe(4);
  });

  it("sizes a range exactly as many values as it makes (property)", () => {
    fc.assert(
      fc.property(
        fc.double({ min: -1_000, max: 1_000, noNaN: true }),
        fc.double({ min: 0, max: 50, noNaN: true }),
        fc.constantFrom(0.1, 0.25, 0.3, 0.5, 0.7, 1, 2.5, 7),
        (min, span, step) => {
          const spec = grid({ temp: { min, max: min + span, step }, origin: "all" });
          const { axes, size } = planGrid([temp, airport], spec);
          expect(size).toBe((axes[0]?.length ?? 0) * 3);
          expect([...gridInputs([temp, airport], spec)]).toHaveLength(size);
        },
      ),
      { numRuns: 200 },
    );
  });
});
