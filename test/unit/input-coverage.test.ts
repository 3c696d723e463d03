/** Which inputs a candidate refuses that control answers, from the two encodings. */
import { describe, expect, it } from "vitest";
import { refusedByCandidate } from "../../src/experiment/input-coverage.ts";
import type { EncodingDefinition } from "../../src/model/manifest.ts";

const control: EncodingDefinition = {
  input: { name: "features", dtype: "int64" },
  features: [
    {
      name: "origin",
      type: "categorical",
      vocabulary: ["SFO", "LAX", "JFK"],
      normalize: "upper",
      unknown: "flag",
    },
    {
      name: "carrier",
      type: "categorical",
      vocabulary: ["AA", "UA"],
      normalize: "none",
      unknown: "reject",
    },
    { name: "hour", type: "integer", min: 0, max: 23, encodeAs: "value", outOfRange: "reject" },
    {
      name: "day",
      type: "integer",
      min: 1,
      max: 7,
      encodeAs: "value",
      outOfRange: "reject",
      default: 1,
    },
  ],
};

const withFeatures = (features: EncodingDefinition["features"]): EncodingDefinition => ({
  ...control,
  features,
});
const [origin, carrier, hour, day] = control.features as [
  EncodingDefinition["features"][number],
  EncodingDefinition["features"][number],
  EncodingDefinition["features"][number],
  EncodingDefinition["features"][number],
];

describe("refusedByCandidate", () => {
  it("says nothing of a candidate that takes all control takes (wider is fine)", () => {
    expect(refusedByCandidate(control, control)).toEqual([]);
    const wider = withFeatures([
      origin,
      { ...carrier, vocabulary: ["AA", "UA", "DL"] } as typeof carrier,
      { ...hour, min: -1, max: 30 } as typeof hour,
      day,
      {
        name: "extra",
        type: "integer",
        min: 0,
        max: 1,
        encodeAs: "value",
        outOfRange: "reject",
        default: 0,
      },
    ]);
    expect(refusedByCandidate(control, wider)).toEqual([]);
  });

  it("names each way a narrower candidate refuses control's inputs", () => {
    const narrow = withFeatures([
      { ...origin, unknown: "reject" } as typeof origin,
      { ...carrier, vocabulary: ["AA"] } as typeof carrier,
      { ...hour, max: 22 } as typeof hour,
      { ...day, default: undefined } as typeof day,
      { name: "gate", type: "string", maxLength: 8, normalize: "none", hashBuckets: 64 },
    ]);
    expect(refusedByCandidate(control, narrow)).toEqual([
      "control answers unknown origin values (flagged), the candidate refuses them",
      "the candidate refuses 1 carrier value control takes (UA)",
      "the candidate takes hour from 0 to 22, control from 0 to 23",
      "the candidate requires day, which control fills in when it is left out",
      "the candidate requires gate, which control does not take",
    ]);
    expect(refusedByCandidate(control, withFeatures([origin, carrier, day]))).toEqual([
      "the candidate does not take hour: a lookup giving it is refused",
    ]);
  });
});
