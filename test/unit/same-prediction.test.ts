/**
 * samePrediction: the hot front reuses a reply when a prediction read again holds the same
 * outputs, so "same" must mean every output equal, and nothing less.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type Prediction, samePrediction } from "../../src/model/decoding.ts";

const number = fc.double({ noNaN: true, min: -1e6, max: 1e6 });
const classes = fc
  .dictionary(fc.string({ minLength: 1, maxLength: 4 }), number, { minKeys: 1, maxKeys: 4 })
  .chain((probabilities) =>
    fc.record({
      label: fc.constantFrom(...Object.keys(probabilities)),
      probabilities: fc.constant(probabilities),
    }),
  );
const prediction: fc.Arbitrary<Prediction> = fc.dictionary(
  fc.string({ minLength: 1, maxLength: 6 }),
  fc.oneof(number, classes),
  { minKeys: 1, maxKeys: 4 },
);

describe("samePrediction", () => {
  it("holds for a copy (as a second decoding of the same bytes gives)", () => {
    fc.assert(fc.property(prediction, (p) => samePrediction(p, structuredClone(p))));
  });

  it("fails when any output, label or probability differs, or an output is missing or extra", () => {
    fc.assert(
      fc.property(prediction, fc.nat(), (p, pick) => {
        const names = Object.keys(p);
        const name = names[pick % names.length] as string;
        const value = p[name];
        const changed = structuredClone(p);
        if (typeof value === "number") changed[name] = value + 1;
        else if (value) {
          const labels = Object.keys(value.probabilities);
          const label = labels[pick % labels.length] as string;
          changed[name] = {
            label: value.label,
            probabilities: {
              ...value.probabilities,
              [label]: (value.probabilities[label] as number) + 1,
            },
          };
        }
        const fewer = structuredClone(p);
        delete fewer[name];
        const more = { ...structuredClone(p), [`${name}+`]: 1 };
        return (
          !samePrediction(p, changed) &&
          !samePrediction(changed, p) &&
          !samePrediction(p, fewer) &&
          !samePrediction(fewer, p) &&
          !samePrediction(p, more)
        );
      }),
    );
    const a = { c: { label: "x", probabilities: { x: 0.6, y: 0.4 } } };
    expect(samePrediction(a, { c: { label: "y", probabilities: { x: 0.6, y: 0.4 } } })).toBe(false);
    expect(samePrediction(a, { c: { label: "x", probabilities: { x: 0.6, z: 0.4 } } })).toBe(false);
    expect(samePrediction({ m: 1 }, { m: { label: "1", probabilities: { 1: 1 } } })).toBe(false);
  });
});
