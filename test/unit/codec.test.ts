/**
 * Stored prediction values: what encodePrediction writes decodes back the same, and any
 * other bytes either decode to a prediction of the manifest's shape or are refused as a
 * CorruptEntryError (read as a miss by the store), never served with the wrong types.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { CorruptEntryError, decodePrediction, encodePrediction } from "../../src/cache/codec.ts";
import type { Prediction } from "../../src/model/decoding.ts";
import type { Manifest } from "../../src/model/manifest.ts";

const manifest = {
  outputs: [
    { name: "p", tensor: "p", kind: "probability", digits: 4 },
    { name: "minutes", tensor: "m", kind: "regression", digits: 1 },
    { name: "kind", tensor: "k", kind: "classes", labels: ["a", "b"], digits: 2 },
  ],
} as unknown as Manifest;

/** Doubles as decoding.ts gives them: never -0 (rounding turns it into 0). */
const value = fc.double({ noNaN: true }).map((x) => (x === 0 ? 0 : x));
const prediction: fc.Arbitrary<Prediction> = fc.record({
  p: fc.double({ min: 0, max: 1, noNaN: true }).map((x) => (x === 0 ? 0 : x)),
  minutes: value,
  kind: fc.record({
    label: fc.constantFrom("a", "b"),
    probabilities: fc.record({ a: value, b: value }),
  }),
});

/** The shape every decoded value must have, whatever the bytes were. */
function wellTyped(p: Prediction): boolean {
  const kind = p.kind as { label: unknown; probabilities: Record<string, unknown> };
  return (
    typeof p.p === "number" &&
    typeof p.minutes === "number" &&
    (kind.label === "a" || kind.label === "b") &&
    Object.keys(kind.probabilities).length === 2 &&
    typeof kind.probabilities.a === "number" &&
    typeof kind.probabilities.b === "number"
  );
}

describe("prediction codec", () => {
  it("decodes what it encodes", () => {
    fc.assert(
      fc.property(prediction, (p) => {
        expect(decodePrediction(manifest, encodePrediction(manifest, p))).toEqual(p);
      }),
    );
  });

  it("decodes other bytes to a well-typed prediction or refuses them as corrupt", () => {
    const damaged = fc.oneof(
      fc.uint8Array({ maxLength: 40 }),
      // Valid encodings with a byte changed or cut short.
      fc
        .tuple(prediction, fc.nat(), fc.integer({ min: 0, max: 255 }), fc.boolean())
        .map(([p, at, byte, cut]) => {
          const bytes = new Uint8Array(encodePrediction(manifest, p));
          const i = at % bytes.length;
          if (cut) return bytes.slice(0, i);
          bytes[i] = byte;
          return bytes;
        }),
    );
    fc.assert(
      fc.property(damaged, (bytes) => {
        try {
          expect(wellTyped(decodePrediction(manifest, bytes))).toBe(true);
        } catch (error) {
          expect(error).toBeInstanceOf(CorruptEntryError);
        }
      }),
      { numRuns: 2_000 },
    );
  });

  it("refuses values of the wrong type or count", () => {
    const refused: unknown[][] = [
      ["lol", 1, { label: "a", probabilities: { a: 1, b: 0 } }],
      [0.5, null, { label: "a", probabilities: { a: 1, b: 0 } }],
      [0.5, 1, { label: "c", probabilities: { a: 1, b: 0 } }],
      [0.5, 1, { label: "a", probabilities: { a: 1 } }],
      [0.5, 1, { label: "a", probabilities: { a: 1, b: "0" } }],
      [0.5, 1, { label: "a", probabilities: { a: 1, b: 0, c: 0 } }],
      [0.5, 1],
    ];
    for (const values of refused) {
      // Packed as the codec packs (values in output order), under a manifest that allows them.
      const packed = encodePrediction(
        { outputs: values.map((_, i) => ({ name: String(i) })) } as unknown as Manifest,
        Object.fromEntries(values.map((v, i) => [String(i), v])) as Prediction,
      );
      expect(() => decodePrediction(manifest, packed), JSON.stringify(values)).toThrow(
        CorruptEntryError,
      );
    }
  });
});
